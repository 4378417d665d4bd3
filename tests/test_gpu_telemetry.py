"""GPU-use telemetry through the service's own parts, fed recorded NVML samples (a time-sliced GPU shared by two
learners: one computing, one holding memory) and recorded DCGM exporter text: readings on the learner's `GET me`
and page and on the instructor's course page, GPU-idle time in the ledger and the usage export, and the idle rule's
reading of a busy and an idle sandbox."""

import shutil
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from servicekit import InProcessService

from aifhub.gpus import dcgm
from aifhub.gpus.nvml import Recorded
from aifhub.gpus.telemetry import Reading, kube_reading
from aifhub.ledger.models import SandboxSession, utcnow
from aifhub.service import idle

pytestmark = pytest.mark.asyncio(loop_scope="module")
REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
GiB = 2**30
KINDS = [{"name": "h100-ts4", "sharing": "timeslice", "replicas": 4, "devices": [0]}]


def machine(samples=()):
    """One H100 (as in the recording of tests/data/nvml) and the given samples of GPU 0."""
    return {
        "devices": [
            {"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "minor": 0, "memory_total": 80 * GiB}
        ],
        "samples": list(samples),
    }


@pytest.fixture(scope="module")
async def svc(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpuuse")
    courses = folder / "courses"
    shutil.copytree(REPO / "courses" / "gpu-fundamentals", courses / "gpu-fundamentals")
    spec = yaml.safe_load((courses / "gpu-fundamentals" / "course.yaml").read_text())
    spec["sandbox"]["gpu"] = {"kind": "h100-ts4", "count": 1}
    spec["idle"] = {"after": "30m", "grace": "5m"}
    (courses / "gpu-fundamentals" / "course.yaml").write_text(yaml.safe_dump(spec))
    recording = folder / "nvml.json"
    recording.write_text(__import__("json").dumps(machine()))
    service = await InProcessService(
        folder,
        gpus="",
        courses=courses,
        images_dir=str(REPO / "sandbox_images"),
        gpu_kinds=KINDS,
        nvml_recording=str(recording),
    ).start()
    yield service
    await service.stop()


async def admit(svc, user):
    r = await svc.internal("POST", "admit", {"user": user, "server_name": "", "course": "gpu-fundamentals"})
    assert r.code == 201, r.body
    return r.json()


async def test_two_learners_on_one_time_sliced_gpu_read_their_own_use(svc):
    a, b = await admit(svc, "learner1"), await admit(svc, "learner2")
    assert a["devices"][0]["gpu"] == b["devices"][0]["gpu"] == "0" and a["devices"][0]["id"] != b["devices"][0]["id"]
    svc.hub.running = {("learner1", ""), ("learner2", "")}
    use = svc.core.metering.gpu_use
    busy = {"pid": 101, "uid": a["uid"], "sm": 83, "memory_used": 12 * GiB}
    holder = {"pid": 202, "uid": b["uid"], "sm": 0, "memory_used": 30 * GiB}
    stranger = {"pid": 303, "uid": 0, "sm": 10, "memory_used": GiB}  # not a sandbox: counts for nobody
    sample = {
        "0": {"util": 91, "memory_used": 43 * GiB, "memory_total": 80 * GiB, "processes": [busy, holder, stranger]}
    }
    use.reader = Recorded(machine([sample, sample]))  # the recording the driver would have given
    t0 = utcnow()
    await use.sample(now=t0)
    await use.sample(now=t0 + timedelta(seconds=60))
    mine = use.for_user("learner1")["gpu-fundamentals"]
    assert mine == {"util_percent": 83, "memory_used_bytes": 12 * GiB, "memory_total_bytes": 80 * GiB, "busy": True}
    theirs = use.for_user("learner2")["gpu-fundamentals"]
    assert theirs["util_percent"] == 0 and theirs["memory_used_bytes"] == 30 * GiB and theirs["busy"] is False
    # the ledger: the holder's GPU sat idle for the minute between the samples, the busy one's did not
    sessions = {s.user: s for s in await svc.db.run(lambda s: list(s.query(SandboxSession).filter_by(state="active")))}
    assert sessions["learner2"].gpu_idle_ms == 60_000 and sessions["learner1"].gpu_idle_ms == 0


async def test_the_learner_sees_their_gpu_on_get_me_and_their_page(svc):
    me = (await svc.api("GET", "me", svc.token("learner1"))).json()
    assert me["gpu"]["gpu-fundamentals"]["util_percent"] == 83
    page = (await svc.fetch("GET", "", svc.token("learner2"))).body.decode()
    assert "Your GPU now: 0% in use, 30.0 of 80 GiB of memory (idle)" in page
    other = (await svc.api("GET", "me", svc.token("learner2"))).json()
    assert set(other["gpu"]) == {"gpu-fundamentals"} and other["gpu"]["gpu-fundamentals"]["util_percent"] == 0


async def test_the_instructor_sees_each_learners_gpu_and_learners_do_not(svc):
    page = (await svc.fetch("GET", "courses/gpu-fundamentals", svc.token("instructor"))).body.decode()
    assert 'id="gpu-now"' in page
    assert "<td>learner1</td><td>83%</td>" in page and "<td>learner2</td><td>0% (idle)</td>" in page
    learner = (await svc.fetch("GET", "courses/gpu-fundamentals", svc.token("learner1"))).body.decode()
    assert 'id="gpu-now"' not in learner


async def test_the_usage_export_carries_gpu_idle_hours(svc):
    csv = (await svc.api("GET", "usage", svc.token("admin", admin=True), query={"format": "csv"})).body.decode()
    header, *rows = csv.strip().splitlines()
    assert "gpu_idle_hours" in header.split(",")
    col = header.split(",").index("gpu_idle_hours")
    idle_by_user = {r.split(",")[1]: float(r.split(",")[col]) for r in rows}
    assert idle_by_user["learner2"] == pytest.approx(60 / 3600, abs=1e-4) and idle_by_user["learner1"] == 0


async def test_the_idle_rule_keeps_the_busy_gpu_and_warns_the_idle_one(svc):
    now = utcnow() + timedelta(minutes=31)
    activity = {("learner1", ""): utcnow(), ("learner2", ""): utcnow()}  # no activity the hub knows of since
    warnings, stops = await svc.db.run(
        idle.idle_pass, svc.core.catalog, activity, now, svc.core.metering.gpu_use.gpu_busy
    )
    assert [w[0] for w in warnings] == ["learner2"] and not stops


async def test_a_failing_source_leaves_no_reading_and_metering_goes_on(svc):
    use = svc.core.metering.gpu_use

    class Broken:
        def sample(self):
            raise OSError("NVML: driver/library version mismatch")

    use.reader = Broken()
    use.kick()
    await use._task
    assert use.readings == {} and use.failures == 1
    assert (await svc.core.metering.meter()) is not None
    for user in ("learner1", "learner2"):
        await svc.internal("POST", "release", {"user": user, "server_name": "", "reason": "stopped"})


async def test_dcgm_exporter_text_gives_each_pod_its_reading():
    pods = dcgm.parse((DATA / "dcgm" / "pods.prom").read_text())
    assert set(pods) == {("aifhub", "jupyter-busy"), ("aifhub", "jupyter-holder"), ("aifhub", "jupyter-mig")}
    busy = kube_reading(pods, "aifhub/jupyter-busy")
    assert busy == Reading(util=87, memory_used=20 * GiB, memory_total=80 * GiB) and busy.busy is True
    holder = kube_reading(pods, "aifhub/jupyter-holder")
    assert holder.util == 0 and holder.memory_used == 40 * GiB and holder.busy is False
    assert kube_reading(pods, "aifhub/jupyter-mig").util == 42  # MIG: SM activity, no GPU_UTIL
    assert kube_reading(pods, "aifhub/jupyter-gone") is None and kube_reading(pods, None) is None


@pytest.fixture
def exporter():
    """A DCGM exporter's /metrics, serving the recorded text over HTTP."""
    text = (DATA / "dcgm" / "pods.prom").read_bytes()

    class Metrics(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    server.shutdown()


async def test_on_kubernetes_the_running_pod_names_the_sessions_dcgm_series(tmp_path, exporter):
    service = await InProcessService(tmp_path, gpus="kubernetes", dcgm_urls=[exporter]).start()
    try:
        r = await service.internal(
            "POST", "admit", {"user": "learner1", "server_name": "", "course": "gpu-fundamentals"}
        )
        assert r.code == 201, r.body
        await service.internal(
            "POST", "running", {"user": "learner1", "server_name": "", "pod": "aifhub/jupyter-holder"}
        )
        use = service.core.metering.gpu_use
        assert use.enabled
        t0 = utcnow()
        await use.sample(now=t0)
        await use.sample(now=t0 + timedelta(seconds=30))
        assert use.for_user("learner1")["gpu-fundamentals"]["busy"] is False
        session = await service.db.run(lambda s: s.query(SandboxSession).filter_by(user="learner1").one())
        assert session.pod == "aifhub/jupyter-holder" and session.gpu_idle_ms == 30_000
    finally:
        await service.stop()
