"""`make cluster` for an operator: what it prints is what works. The kubeconfig reaches the cluster, a pod's
output comes from the API server as `kubectl logs` asks for it and is in the folder it names, and the command
it gives for the tests runs every one of them (not the operator's-cluster mode, where some skip)."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from clusterkit import Kube, restricted_pod

pytestmark = pytest.mark.cluster
TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def make_cluster():
    """`make cluster` (python -m localcluster, as the Makefile runs it) with one CPU node; its printed lines."""
    if os.geteuid() != 0:
        pytest.skip("make cluster runs pods as their own users: run it as root")
    state = Path(tempfile.mkdtemp(prefix="aifhub-make-cluster-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcluster", "--state-dir", str(state), "--gpu-nodes", "0", "--mig-nodes", "0"],
        cwd=TESTS.parent,
        env=dict(os.environ, PYTHONPATH=str(TESTS)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, deadline = [], time.monotonic() + 600  # a cold control plane build is not this test's to wait for
    threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
    try:
        while not any("Ctrl-C stops it" in line for line in list(lines)):
            assert proc.poll() is None, "make cluster exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, "make cluster did not come up:\n" + "".join(lines)
            time.sleep(0.5)
        yield state, "".join(lines)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not os.environ.get("AIFHUB_TEST_KEEP"):
            shutil.rmtree(state, ignore_errors=True)


def test_what_make_cluster_prints_works(make_cluster):
    state, printed = make_cluster
    kubeconfig = re.search(r"export KUBECONFIG=(\S+)", printed).group(1)
    logs = re.search(r"^\s+(\S+)/<pod uid>/<container>\.log", printed, re.M).group(1)
    assert "kubectl is not provided" in printed and "`kubectl logs` works" in printed, printed

    kube = Kube(kubeconfig)
    ns = kube.namespace("aifhub-operator")
    try:
        kube.core.create_namespaced_pod(
            ns, restricted_pod("hello", ["python3", "-c", "print('hello from the pod', flush=True)"])
        )
        pod = kube.wait_pod(ns, "hello", lambda p: p and p["status"].get("phase") in ("Succeeded", "Failed"), 120)
        assert pod["status"]["phase"] == "Succeeded", pod["status"]
        log = Path(logs) / pod["metadata"]["uid"] / "main.log"
        assert "hello from the pod" in log.read_text(), log
        # what `kubectl logs hello` asks: the API server, which asks the node's kubelet API
        assert "hello from the pod" in kube.core.read_namespaced_pod_log("hello", ns)
        assert kube.core.read_namespaced_pod_log("hello", ns, tail_lines=1).strip() == "hello from the pod"
    finally:
        kube.delete_namespace(ns)

    # the command for every test starts its own local cluster; the operator's mode is named as such
    every = re.search(r"Run every cluster test.*\n\s+(.+)", printed).group(1).strip()
    assert every == ".venv/bin/python -m pytest -m cluster", printed
    assert f"AIFHUB_TEST_KUBECONFIG={kubeconfig} .venv/bin/python -m pytest -m cluster" in printed
    assert re.search(r"operator.*skip", printed), printed
