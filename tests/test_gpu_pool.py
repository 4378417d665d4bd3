"""GPUs on one machine (--gpus 0,1 on a CPU machine): exclusive devices, and restarts of the hub."""

import os
import signal
import subprocess
import time

import pytest
from conftest import start_hub

CUDA = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['NVIDIA_VISIBLE_DEVICES'])"


@pytest.fixture(scope="module")
def hub(hub_dir):
    hub = start_hub(hub_dir, gpus="0,1", extra_args=("--log-level", "DEBUG"))
    yield hub
    hub.stop()


def busy_devices(hub):
    pool = hub.service("GET", "pool").json()
    return {d["id"] for d in pool["devices"] if d["busy"]}


def restart(hub):
    """Run `aifhub up` again on the same state and port."""
    return hub.start()


def sandbox_pid(hub, name):
    """The process of ``name``'s sandbox as its hub recorded it (the spawner's saved state), not found among the
    machine's processes by name: other hubs run sandboxes of learners with the same names, and end them."""
    model = hub.api("GET", f"users/{name}").json()["servers"].get("")
    state = (model or {}).get("state") or {}
    assert (state.get("aifhub") or {}).get("course", "gpu-fundamentals") == "gpu-fundamentals", state
    return state.get("pid") or None


def alive(pid):
    """Running (a zombie left for a reaper that never comes counts as gone)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_two_gpu_sandboxes_see_different_devices(hub):
    for name in ("learner1", "learner2"):
        r = hub.spawn(name, "gpu-fundamentals")
        assert r.status_code in (201, 202), r.text
    seen = {name: hub.run_in_kernel(name, CUDA).split() for name in ("learner1", "learner2")}
    assert {v[0] for v in seen.values()} == {"0", "1"}, seen
    assert all(v[0] == v[1] for v in seen.values()), seen  # NVIDIA_VISIBLE_DEVICES agrees
    assert busy_devices(hub) == {"0", "1"}

    third = hub.spawn("instructor", "gpu-fundamentals", wait=False)  # no device left: the instructor waits in line
    assert third.status_code == 202 and hub.server_model("instructor")["pending"] == "spawn"
    assert busy_devices(hub) == {"0", "1"}
    hub.stop_server("instructor")  # and leaves it

    # a CPU-only sandbox sees no GPU at all
    hub.spawn("cpu-learner", "dl-basics")
    assert hub.run_in_kernel("cpu-learner", CUDA).split() == ["void"]
    hub.stop_server("cpu-learner")

    hub.stop_server("learner2")
    assert len(busy_devices(hub)) == 1


def test_a_crashed_hub_comes_back_with_running_sandboxes_and_their_gpus(hub):
    before = hub.run_in_kernel("learner1", CUDA).split()[0]
    pid = sandbox_pid(hub, "learner1")
    assert pid, "learner1's sandbox process not found"
    jupyterhub = int(
        subprocess.run(["pgrep", "-P", str(hub.proc.pid)], capture_output=True, text=True).stdout.split()[0]
    )
    os.kill(jupyterhub, signal.SIGKILL)  # the hub dies; the proxy, the service and sandboxes live on
    hub.proc.wait(30)
    hub.log.close()
    assert alive(pid)

    restart(hub)
    assert hub.server_model("learner1")["ready"]
    assert hub.run_in_kernel("learner1", CUDA).split()[0] == before
    assert busy_devices(hub) == {before}
    other = "1" if before == "0" else "0"
    r = hub.spawn("learner2", "gpu-fundamentals")
    assert r.status_code in (201, 202), r.text
    assert hub.run_in_kernel("learner2", CUDA).split()[0] == other
    hub.stop_server("learner2")


def test_a_clean_stop_ends_every_sandbox_and_frees_the_pool_on_restart(hub):
    pid = sandbox_pid(hub, "learner1")
    assert pid and busy_devices(hub)
    assert hub.stop() == 0
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the sandbox outlived aifhub up"
    leftovers = subprocess.run(["pgrep", "-f", f"--state-dir={hub.state_dir}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "the service outlived aifhub up"

    restart(hub)
    deadline = time.monotonic() + 20
    while busy_devices(hub) and time.monotonic() < deadline:  # the service settles what the hub stopped
        time.sleep(0.5)
    assert busy_devices(hub) == set()
    r = hub.spawn("learner1", "gpu-fundamentals")
    assert r.status_code in (201, 202), r.text
    hub.stop_server("learner1")
    assert busy_devices(hub) == set()
