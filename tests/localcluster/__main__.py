"""`make cluster`: start the local cluster the tests use, print its kubeconfig, run until Ctrl-C."""

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import ClusterError, LocalCluster, build_info


def usage(kubeconfig, pods_dir):
    """What to do with the running cluster: its kubeconfig, where its pods' logs are, and the test commands."""
    return [
        f"Use it:  export KUBECONFIG={kubeconfig}",
        "  (kubectl is not provided: use your own. `kubectl logs` works; `kubectl exec`, attach and port-forward do",
        "  not, the test kubelet serves pod logs only. Each container's output is also in",
        f"  {pods_dir}/<pod uid>/<container>.log)",
        "Run every cluster test (they start a local cluster like this one of their own):",
        "  .venv/bin/python -m pytest -m cluster",
        "Check this cluster as an operator checks theirs (the tests of the simulated nodes' internals skip; -rs lists them):",
        f"  AIFHUB_TEST_KUBECONFIG={kubeconfig} .venv/bin/python -m pytest -m cluster",
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="make cluster", description=__doc__)
    parser.add_argument(
        "--state-dir",
        default=None,
        help="where the cluster keeps its certificates, etcd data, logs and volumes "
        "(default: a new folder under the system's temporary folder)",
    )
    parser.add_argument(
        "--gpu-nodes", type=int, default=1, help="simulated nodes with 2 full H100 GPUs each (default 1)"
    )
    parser.add_argument(
        "--mig-nodes", type=int, default=1, help="simulated nodes with one H100 in 7 MIG 1g.10gb slices (default 1)"
    )
    parser.add_argument("--cpu-nodes", type=int, default=1, help="simulated CPU-only nodes (default 1)")
    parser.add_argument(
        "--pull-seconds", type=float, default=0.0, help="modelled time a node takes to pull an image it lacks"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(
            "make cluster: the test kubelet runs pods as their own users (bubblewrap, setpriv): run it as root",
            file=sys.stderr,
        )
        return 1
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="aifhub-cluster-"))
    pools = [
        p
        for p in [
            {"name": "cpu", "preset": "cpu", "count": args.cpu_nodes, "cpu": 16, "memory": "64Gi"},
            {"name": "gpu", "preset": "h100", "count": args.gpu_nodes, "gpus": 2, "cpu": 32, "memory": "256Gi"},
            {"name": "mig", "preset": "mig-1g.10gb", "count": args.mig_nodes, "gpus": 1, "cpu": 32, "memory": "256Gi"},
        ]
        if p["count"]
    ]
    cluster = LocalCluster(state, pools=pools, pull_seconds=args.pull_seconds)
    try:
        cluster.start()
    except ClusterError as exc:
        print(f"make cluster: {exc}", file=sys.stderr)
        return 1
    info = build_info(cluster.control_plane.bin)
    print(f"Kubernetes {info.get('kubernetes', '?')} (etcd {info.get('etcd', '?')}) from {cluster.control_plane.bin}")
    print(f"up in {cluster.timings['ready_s']} s; nodes: {', '.join(cluster.nodes)}; logs in {state}")
    for line in usage(cluster.kubeconfig, state / "kubelet" / "pods"):
        print(line)
    print("Ctrl-C stops it.")
    print(cluster.kubeconfig, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1):
            dead = [name for name, alive in cluster.control_plane.alive().items() if not alive]
            if dead or cluster.kubelet.poll() is not None:
                print(
                    f"make cluster: {', '.join(dead) or 'the test kubelet'} exited; see the logs in {state}",
                    file=sys.stderr,
                )
                return 1
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
