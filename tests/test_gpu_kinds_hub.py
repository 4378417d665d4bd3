"""GPU kinds on a real hub (`aifhub up --gpus 0,1 --gpu-kinds FILE` on a CPU machine): two learners of one course
share GPU 0 as time-slice shares, the spawn form shows the free capacity per kind, and a learner of another
course is refused a share of that GPU with the reason."""

import pytest
import requests
import yaml
from conftest import start_hub
from hubrunner import PASSWORD

CUDA = "import os; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['NVIDIA_VISIBLE_DEVICES'])"


def prepare(courses):
    spec = yaml.safe_load((courses / "gpu-fundamentals" / "course.yaml").read_text())
    spec["sandbox"]["gpu"] = {"kind": "h100-ts2", "count": 1}
    (courses / "gpu-fundamentals" / "course.yaml").write_text(yaml.safe_dump(spec))
    other = dict(spec, id="gpu-other", title="Other GPU Course", roster=["learner3"], assignments=[])
    (courses / "gpu-other").mkdir()
    (courses / "gpu-other" / "course.yaml").write_text(yaml.safe_dump(other))


@pytest.fixture(scope="module")
def hub(hub_dir):
    kinds = hub_dir / "gpu-kinds.yaml"
    kinds.write_text(
        yaml.safe_dump({"gpu_kinds": [{"name": "h100-ts2", "sharing": "timeslice", "replicas": 2, "devices": [0]}]})
    )
    hub = start_hub(hub_dir, gpus="0,1", prepare_courses=prepare, extra_args=("--gpu-kinds", str(kinds)))
    yield hub
    hub.stop()


def test_two_learners_share_one_gpu_and_the_form_shows_what_is_left(hub):
    for name in ("learner1", "learner2"):
        r = hub.spawn(name, "gpu-fundamentals")
        assert r.status_code in (201, 202), r.text
    for name in ("learner1", "learner2"):
        assert hub.run_in_kernel(name, CUDA).split() == ["0", "0"]
    pool = hub.service("GET", "pool").json()
    assert {d["id"] for d in pool["devices"] if d["busy"]} == {"0:1", "0:2"}
    kinds = {k["kind"]: k for k in pool["kinds"]}
    assert kinds["h100-ts2"]["free"] == 0 and kinds["h100-ts2"]["gpus"] == 1 and kinds["gpu"]["free"] == 1
    session = requests.Session()  # what learner3's browser does: log in, open the spawn form
    session.get(f"{hub.url}/hub/login", timeout=30)
    r = session.post(
        f"{hub.url}/hub/login",
        data={"username": "learner3", "password": PASSWORD, "_xsrf": session.cookies.get("_xsrf")},
        timeout=30,
    )
    assert r.status_code == 200, r.text[:500]
    r = session.get(f"{hub.url}/hub/spawn", timeout=60)
    form = r.content.decode()
    assert r.status_code == 200 and 'value="gpu-other"' in form, form[:2000]
    assert "h100-ts2: 0 of 2 time-shares free on 1 GPU" in form and "gpu: 1 of 1 GPUs free" in form
    card = form[form.index('value="gpu-other"') :][:600]
    assert "GPU h100-ts2 × 1 (a 1/2 time-share of a GPU (memory not isolated)) · 0 free" in card, card


def test_a_learner_of_another_course_gets_no_share_of_that_gpu(hub):
    hub.stop_server("learner2")  # a share is free now, on the GPU learner1 of gpu-fundamentals holds
    r = hub.spawn("learner3", "gpu-other", wait=False)
    assert r.status_code == 409, r.text
    message = r.json()["message"]
    assert "does not isolate GPU memory between holders" in message and "allow_cross_course: true" in message
    assert hub.server_model("learner3") is None
    hub.stop_server("learner1")
    r = hub.spawn("learner3", "gpu-other")  # the GPU is free of the other course now
    assert r.status_code in (201, 202), r.text
    assert hub.run_in_kernel("learner3", CUDA).split() == ["0", "0"]
    hub.stop_server("learner3")
