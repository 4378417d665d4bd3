"""Autograding with the Kubernetes backend, on a real hub and a real cluster: each notebook runs as a Job.

The service and its workers are real; so is the cluster (tests/localcluster: the API server,
scheduler and Job controller built from Kubernetes' Go modules, the test kubelet running pods in
bubblewrap). The service creates its Jobs with the hub's service-account token and the RBAC that
`aifhub k8s render` and the chart give it; the grading volume is the rendered claim, bound to a
volume the kubelet provisioned; the rendered NetworkPolicy cuts grading pods off the network.
"""

import json
import threading
import time
from pathlib import Path

import nbformat
import pytest
from clusterkit import CHART_HUB_ROLE_RULES
from conftest import start_hub
from gradingkit import (
    ASSIGNMENT,
    COURSE,
    PROBE_PRELUDE,
    REPO,
    blank_notebook,
    solution_notebook,
    submit,
    wait_jobs,
    with_cell,
    with_extra_cells,
)
from kubernetes import watch

from aifhub.kube import manifests

pytestmark = pytest.mark.cluster

GPU_COURSE, GPU_ASSIGNMENT = "gpu-fundamentals", "ps1-matmul"


class JobRecorder:
    """Every Job created in a namespace, as the API server stored it (a watch, from the start)."""

    def __init__(self, kube, namespace):
        self.kube, self.ns = kube, namespace
        self.created, self.stop = [], threading.Event()
        version = kube.batch.list_namespaced_job(namespace).metadata.resource_version
        self.thread = threading.Thread(target=self.run, args=(version,), daemon=True)
        self.thread.start()

    def run(self, version):
        while not self.stop.is_set():
            w = watch.Watch()
            for event in w.stream(
                self.kube.batch.list_namespaced_job, self.ns, resource_version=version, timeout_seconds=5
            ):
                version = event["object"].metadata.resource_version
                if event["type"] == "ADDED":
                    self.created.append(self.kube.dict(event["object"]))

    def live(self):
        return [j.metadata.name for j in self.kube.batch.list_namespaced_job(self.ns).items]


@pytest.fixture(scope="module")
def cluster(kube_cluster, hub_dir):
    """The namespace aifhub is deployed in: rendered priority classes, grading volume, network policies and RBAC,
    and the chart's hub service account and Role."""
    kube = kube_cluster
    ns = kube.namespace("aifhub-grading")
    kube.apply(manifests.priority_classes())
    kube.apply(
        manifests.storage(namespace=ns)
        + [manifests.grading_network_policy(ns), manifests.gradebook_network_policy(ns)]
        + manifests.grading_rbac(namespace=ns),
        ns,
    )
    kube.service_account(ns, "hub", rules=CHART_HUB_ROLE_RULES)
    kubeconfig = kube.token_kubeconfig(hub_dir / "hub-sa.kubeconfig", ns, "hub")
    deadline = time.monotonic() + 60
    while (claim := kube.core.read_namespaced_persistent_volume_claim("aifhub-grading", ns)).status.phase != "Bound":
        assert time.monotonic() < deadline, "the grading volume's claim was not bound"
        time.sleep(0.3)
    volume = kube.core.read_persistent_volume(claim.spec.volume_name).spec.host_path.path  # where the hub pod mounts it
    recorder = JobRecorder(kube, ns)
    yield {"kube": kube, "ns": ns, "kubeconfig": kubeconfig, "volume": volume, "jobs": recorder}
    recorder.stop.set()
    kube.delete_namespace(ns)


@pytest.fixture(scope="module")
def hub(hub_dir, cluster):
    args = " ".join(
        [
            "--GradingManager.backend=kubernetes",
            f"--GradingManager.kube_config={cluster['kubeconfig']}",
            f"--GradingManager.kube_namespace={cluster['ns']}",
            f"--GradingManager.scratch_dir={cluster['volume']}/jobs",
            f"--GradingManager.kube_volume_root={cluster['volume']}",
            "--GradingManager.workers=2",
            "--GradingManager.cell_timeout=5",
            "--GradingManager.notebook_timeout=25",
            "--GradingManager.kube_start_timeout=60",
            "--GradingManager.kube_registry=registry.example.org",
        ]
    )
    hub = start_hub(hub_dir, gpus="none", env={"AIFHUB_SERVICE_ARGS": args})
    yield hub
    hub.stop()


def probe(hub, volume):
    """Part A's solution after attempts at what a submission must never reach."""
    state = hub.state_dir
    return (
        PROBE_PRELUDE
        + f"""
attempt("gradebook", lambda: open({str(state / "grading" / COURSE / "gradebook.db")!r}, "rb").read(16))
attempt("other submissions", lambda: os.listdir({str(state / "grading" / COURSE / "submitted")!r}))
attempt("the grading volume", lambda: os.listdir({str(volume)!r}))
attempt("hub secrets", lambda: open({str(state / "secrets" / "internal_token")!r}).read())
attempt("service account token", lambda: open("/var/run/secrets/kubernetes.io/serviceaccount/token").read())
attempt("environment secrets", env_secret)
attempt("network to the hub", lambda: socket.create_connection(("127.0.0.1", {hub.port}), timeout=3))
print("MOUNTS", sorted(l.split()[4] for l in open("/proc/self/mountinfo") if "grading" in l.split()[4].split("/")))
"""
        + next(
            c.source for c in solution_notebook().cells if c.metadata.get("nbgrader", {}).get("grade_id") == "softmax"
        )
    )


def test_submissions_are_graded_in_jobs_that_reach_nothing_else(hub, cluster):
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/release").status_code == 200
    nb = solution_notebook()
    submissions = {
        "alice": nb,
        "bob": blank_notebook(),
        "mallory": with_cell(nb, "softmax", probe(hub, cluster["volume"])),
        "loopy": with_cell(nb, "accuracy", "while True:\n    pass\n"),  # interrupted at the per-cell limit
        "sleepy": with_extra_cells(nb, ["import time\ntime.sleep(4)"] * 8),  # every cell in time, all too slow
        "crasher": with_cell(nb, "accuracy", "import os\nos.kill(os.getpid(), 9)\n"),
        "forker": with_extra_cells(
            nb,
            [
                "import subprocess\nsubprocess.Popen(['sh', '-c', "
                "'sleep 1; echo tampered > /grading/output.ipynb; sleep 60'], start_new_session=True)"
            ],
        ),
    }
    for name, notebook in submissions.items():
        hub.service("POST", f"courses/{COURSE}/enrol", token=hub.token_for(name))
        assert submit(hub, name, notebook).status_code == 201
    assert hub.service("POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/collect").status_code == 200
    r = hub.service(
        "POST", f"courses/{COURSE}/assignments/{ASSIGNMENT}/autograde", json={"students": sorted(submissions)}
    )
    assert r.status_code == 202, r.text
    jobs = wait_jobs(hub, [j["id"] for j in r.json()["jobs"]], timeout=240)

    assert jobs["alice"]["state"] == "done" and jobs["alice"]["score"] == jobs["alice"]["max_score"] == 10, jobs[
        "alice"
    ]
    assert jobs["bob"]["state"] == "done" and jobs["bob"]["score"] == 0, jobs["bob"]
    mallory = jobs["mallory"]
    assert mallory["state"] == "done" and mallory["score"] == 10, mallory
    graded = hub.state_dir / "grading" / COURSE / "autograded" / "mallory" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    text = "".join(
        o.get("text", "") for c in nbformat.read(str(graded), as_version=4).cells for o in c.get("outputs", [])
    )
    attempts = [line for line in text.splitlines() if line.startswith("ATTEMPT")]
    assert len(attempts) == 7 and all(" failed " in line for line in attempts), "\n".join(attempts)
    assert "MOUNTS ['/grading']" in text, text  # its own job folder, nothing else of the volume
    loopy = jobs["loopy"]
    assert loopy["state"] == "done" and loopy["reason"] == "cell-timeout" and loopy["score"] == 5, loopy
    sleepy = jobs["sleepy"]
    assert sleepy["state"] == "failed" and sleepy["reason"] == "timeout", sleepy
    assert "25 s limit for a whole submission" in sleepy["detail"], sleepy
    crasher = jobs["crasher"]
    assert crasher["state"] == "failed" and crasher["reason"] == "kernel-died", crasher
    assert "DeadKernelError" in crasher["detail"] and "raise JobFailed" not in crasher["detail"], crasher
    forker = jobs["forker"]  # what its leftover process wrote later did not replace the graded notebook
    assert forker["state"] == "done" and forker["score"] == 10, forker

    # what the service sent and the API server accepted: one Job per notebook, with the course's image
    sent = cluster["jobs"].created
    assert len(sent) >= len(submissions)
    pod = sent[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("registry.example.org/") and "sandbox-cpu" in container["image"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/grading", "/tmp"]
    assert pod["volumes"][0] == {"name": "job", "persistentVolumeClaim": {"claimName": "aifhub-grading"}}
    assert pod["automountServiceAccountToken"] is False and pod["enableServiceLinks"] is False
    assert sent[0]["spec"]["template"]["metadata"]["labels"]["aifhub.io/component"] == "grader"  # no network
    assert not [k for k in container["resources"]["limits"] if k.startswith("nvidia.com/")]

    deadline = time.monotonic() + 30  # every Job is deleted once its notebook is back
    while cluster["jobs"].live() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not cluster["jobs"].live()
    assert not list((Path(cluster["volume"]) / "jobs").iterdir())  # job folders removed


def test_a_gpu_course_asks_the_cluster_for_its_gpu_and_pays_for_it(hub, cluster):
    assert hub.service("POST", f"courses/{GPU_COURSE}/assignments/{GPU_ASSIGNMENT}/release").status_code == 200
    source = nbformat.read(
        str(REPO / "courses" / GPU_COURSE / "source" / GPU_ASSIGNMENT / f"{GPU_ASSIGNMENT}.ipynb"), as_version=4
    )
    hub.ensure_user("learner1")
    assert submit(hub, "learner1", source, course=GPU_COURSE, assignment=GPU_ASSIGNMENT).status_code == 201
    assert hub.service("POST", f"courses/{GPU_COURSE}/assignments/{GPU_ASSIGNMENT}/collect").status_code == 200
    before = len(cluster["jobs"].created)
    r = hub.service("POST", f"courses/{GPU_COURSE}/assignments/{GPU_ASSIGNMENT}/autograde")
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 180
    while True:
        [job] = hub.service("GET", f"courses/{GPU_COURSE}/jobs").json()["jobs"]
        if job["state"] in ("done", "failed"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["state"] == "done" and job["score"] == job["max_score"] > 0, job
    [sent] = cluster["jobs"].created[before:]
    pod = sent["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["tolerations"]
    assert "pytorch" in pod["containers"][0]["image"]
    sessions = json.loads(
        hub.cli(
            "usage",
            "report",
            "--format",
            "json",
            "--course",
            GPU_COURSE,
            "--user",
            "aifhub-grader",
            "--state-dir",
            str(hub.state_dir),
        ).stdout
    )["sessions"]
    assert len(sessions) == 1 and sessions[0]["gpus"] == 1 and sessions[0]["gpu_ms"] > 0, sessions
    assert sessions[0]["state"] == "ended"
