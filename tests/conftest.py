import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).parent))

from hubrunner import RunningHub, copy_courses  # noqa: E402
from ledgerkit import PG_URL  # noqa: E402

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def hub_dir(request):
    """A folder for one module's hub. Not under pytest's private tmp folder (mode 0700, reset by every
    pytest run): as root, learners' sandboxes run as other uids and must traverse to their work folders."""
    keep = os.environ.get("AIFHUB_TEST_KEEP")
    path = Path(tempfile.mkdtemp(prefix=f"aifhub-{request.module.__name__}-"))
    path.chmod(0o711)
    yield path
    if not keep:
        shutil.rmtree(path, ignore_errors=True)


def start_hub(hub_dir, gpus, prepare_courses=None, extra_args=(), **kw):
    courses = copy_courses(hub_dir / "courses")
    if prepare_courses:
        prepare_courses(courses)
    # the sandbox_images metadata sits next to the courses, as in the repository
    images = hub_dir / "sandbox_images"
    if not images.exists():
        images.symlink_to(Path(__file__).resolve().parent.parent / "sandbox_images")
    return RunningHub(
        hub_dir / "state", courses, gpus=gpus, extra_args=extra_args, log_path=hub_dir / "aifhub-up.log", **kw
    ).start()


@pytest.fixture(scope="module")
def pg_database():
    """A database of one module's own on the test PostgreSQL server (AIFHUB_TEST_PG_URL); the gradebook
    roles made in it are named after it, and are dropped with it afterwards."""
    name = f"aifhub_gb_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        for (role,) in conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname LIKE :p"), {"p": f"{name}%"}):
            conn.exec_driver_sql(f'DROP ROLE "{role}"')
    admin.dispose()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    """`make test` runs the suite on two pytest-xdist workers (``--dist loadgroup``): each module stays on one
    worker, so the hub its fixtures start is started once, and every cluster test runs on the same worker, so
    one local cluster serves them all. The cluster tests, the longest group, go first."""
    for item in items:
        group = "cluster" if item.get_closest_marker("cluster") else item.module.__name__
        if item.get_closest_marker("slurm"):
            group = "slurm"  # one local Slurm serves them all
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=lambda item: item.get_closest_marker("cluster") is None)  # stable: the order within is kept


@pytest.hookimpl(trylast=True)  # after pytest-xdist's hook
def pytest_collection_finish(session):
    """A module split over two workers would start its hub twice and find the other half's work missing: refuse."""
    if getattr(session.config.option, "loadgroup", False) and session.items and "@" not in session.items[0].nodeid:
        raise pytest.UsageError(
            "pytest-xdist did not group the tests (--dist loadgroup): this pytest and "
            "pytest-xdist do not work together; install the versions pyproject.toml pins"
        )


CLUSTER_SUMMARY = []


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # a pytest-xdist worker: the summary lines go to the controller
        session.config.workeroutput["aifhub_cluster_summary"] = CLUSTER_SUMMARY


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    CLUSTER_SUMMARY.extend(getattr(node, "workeroutput", {}).get("aifhub_cluster_summary", []))


def pytest_terminal_summary(terminalreporter):
    for line in CLUSTER_SUMMARY:
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory):
    """The Kubernetes cluster of the `cluster` tests, shared by the whole run.

    With AIFHUB_TEST_KUBECONFIG: that cluster (an operator checking theirs). Otherwise the local one:
    the control plane built from its Go modules (built once, then cached) and the test kubelet's
    simulated GPU nodes, which run pods for real (as root, in bubblewrap)."""
    from clusterkit import Kube

    if os.environ.get("AIFHUB_TEST_KUBECONFIG"):
        yield Kube(os.environ["AIFHUB_TEST_KUBECONFIG"])
        return
    from localcluster import ClusterError, LocalCluster, build_info

    if not AS_ROOT:
        pytest.skip(
            "the local cluster's kubelet runs pods as their own users: run the cluster tests as root "
            "(or point AIFHUB_TEST_KUBECONFIG at a cluster)"
        )
    if shutil.which("bwrap") is None:
        pytest.fail("the local cluster runs pods in bubblewrap: apt-get install bubblewrap (make test-tools does)")
    state = Path(tempfile.mkdtemp(prefix="aifhub-cluster-"))
    cluster = LocalCluster(state)
    try:
        cluster.start()
    except ClusterError as exc:
        pytest.fail(f"the local cluster did not start: {exc}")
    info = build_info(cluster.control_plane.bin)
    CLUSTER_SUMMARY.append(
        f"local cluster: Kubernetes {info.get('kubernetes')} and etcd {info.get('etcd')}, a cold build took "
        f"{info.get('seconds')} s on {info.get('cores')} cores (this run: {cluster.timings['build_s']} s to build or reuse); "
        f"up in {cluster.timings['ready_s']} s; state in {state}"
    )
    yield Kube(cluster.kubeconfig, local=cluster)
    cluster.stop()
    if not os.environ.get("AIFHUB_TEST_KEEP"):
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local Slurm of the `slurm` tests (tests/localslurm: munge, MariaDB, slurmdbd, slurmctld, two slurmd with
    two GPUs each as gres/gpu, slurmrestd), one per pytest worker, with site accounts for the uids this worker's
    hubs hand to learners. `make test` installs Debian's packages first (make slurm-tools)."""
    from localslurm import LocalSlurm, SlurmError
    from localslurm.slurm import PACKAGES, missing_tools
    from slurmkit import SiteAccounts, Traversable, code_paths, learner_first_uid

    if not AS_ROOT:
        pytest.skip("the local Slurm runs jobs as learners' own accounts: run the slurm tests as root")
    missing = missing_tools()
    if missing:
        pytest.fail(f"the local Slurm needs {', '.join(missing)}: apt-get install {PACKAGES} (make slurm-tools does)")
    state = Path(tempfile.mkdtemp(prefix="aifhub-slurm-"))
    state.chmod(0o755)
    slurm = LocalSlurm(state / "cluster")
    accounts = SiteAccounts(state / "homes", learner_first_uid())
    paths = Traversable([*code_paths(), state])
    try:
        paths.open()
        accounts.create()
        slurm.start()
    except (SlurmError, OSError, RuntimeError) as exc:
        slurm.stop()
        accounts.remove()
        paths.close()
        tails = "".join(
            f"\n--- {log.name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-8:])
            for log in sorted((slurm.state / "log").glob("*"))
        )
        if not os.environ.get("AIFHUB_TEST_KEEP"):
            shutil.rmtree(state, ignore_errors=True)
        pytest.fail(f"the local Slurm did not start: {exc}{tails}")
    CLUSTER_SUMMARY.append(f"local Slurm: 22.05 from Debian, up in {slurm.timings['ready_s']} s; state in {state}")
    slurm.accounts = accounts
    yield slurm
    slurm.stop()
    accounts.remove()
    paths.close()
    if not os.environ.get("AIFHUB_TEST_KEEP"):
        shutil.rmtree(state, ignore_errors=True)
