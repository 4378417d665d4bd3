"""GPU kinds and their sharing modes on one machine, fed recorded NVML discovery: whole GPUs, MIG instances by
UUID, time-slice and MPS shares (N holders per GPU), the rate card, and the refusals."""

from pathlib import Path

import pytest
from ledgerkit import T0, course, fresh_database, grant

from aifhub.errors import Refusal
from aifhub.gpus.kinds import parse_kinds
from aifhub.gpus.nvml import Recorded, mig_profile
from aifhub.hubside.form import capacity, render_form
from aifhub.hubside.mixin import CourseSpawnerMixin
from aifhub.ledger import admission as ledger_admission
from aifhub.ledger import metering
from aifhub.ledger.balances import RateCard, record_rates
from aifhub.service.admission import offers, pool_status
from aifhub.service.gpu_pool import gpu_inventory

DATA = Path(__file__).parent / "data" / "nvml"
KINDS = [
    {"name": "h100", "sharing": "whole", "devices": [0]},
    {"name": "h100-ts4", "sharing": "timeslice", "replicas": 4, "devices": [1]},
    {"name": "h100-mps2", "sharing": "mps", "replicas": 2, "memory": "40Gi", "devices": [2]},
    {"name": "mig-1g.10gb", "sharing": "mig", "profile": "1g.10gb"},
]


def inventory(kinds=KINDS):
    return gpu_inventory(None, kinds=parse_kinds(kinds), reader=Recorded(DATA / "h100x4-mig.json"))


def test_each_mode_turns_the_recorded_gpus_into_what_admission_hands_out():
    inv = inventory()
    by_kind = {}
    for d in inv:
        by_kind.setdefault(d.kind, []).append(d)
    assert [d.id for d in by_kind["h100"]] == ["0"]
    assert [d.id for d in by_kind["h100-ts4"]] == ["1:1", "1:2", "1:3", "1:4"]
    assert {d.visible for d in by_kind["h100-ts4"]} == {"1"} and {d.node_minor for d in by_kind["h100-ts4"]} == {1}
    mps = by_kind["h100-mps2"]
    assert [d.id for d in mps] == ["2:1", "2:2"]
    assert mps[0].env == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "2=40960M"}
    mig = by_kind["mig-1g.10gb"]
    assert len(mig) == 7 and all(d.id.startswith("MIG-") and d.visible == d.id for d in mig)
    assert {d.node_minor for d in mig} == {3} and {d.gpu for d in mig} == {"3"}


def test_the_sandbox_environment_names_the_share_it_holds():
    inv = {d.id: d for d in inventory()}
    env = CourseSpawnerMixin.gpu_env(None, [inv["2:1"].to_dict()])
    assert env["CUDA_VISIBLE_DEVICES"] == "2" == env["NVIDIA_VISIBLE_DEVICES"]
    assert env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    mig = next(d for d in inv.values() if d.sharing == "mig")
    assert CourseSpawnerMixin.gpu_env(None, [mig.to_dict()])["CUDA_VISIBLE_DEVICES"] == mig.id
    assert CourseSpawnerMixin.gpu_env(None, [inv["0"].to_dict()]) == {
        "CUDA_VISIBLE_DEVICES": "0",
        "NVIDIA_VISIBLE_DEVICES": "0",
    }


def test_a_course_asking_for_any_gpu_never_gets_a_share():
    inv = inventory([{"name": "ts2", "sharing": "timeslice", "replicas": 2}])
    assert not any(d.matches("gpu") for d in inv if d.sharing != "whole")
    assert {d.id for d in inv if d.matches("gpu")} == set()  # GPU 3 is in MIG mode and no kind takes its slices


def test_mig_profiles_from_nvml_device_names():
    assert mig_profile("NVIDIA H100 80GB HBM3 MIG 1g.10gb") == "1g.10gb"
    assert mig_profile("NVIDIA A100-SXM4-40GB MIG 3g.20gb+me") == "3g.20gb+me"
    assert mig_profile("NVIDIA H100 80GB HBM3") == ""


@pytest.mark.parametrize(
    "entries, message",
    [
        ([{"name": "x", "sharing": "slices"}], "sharing: must be one of whole, mig, timeslice, mps"),
        (
            [{"name": "x", "sharing": "timeslice"}],
            "replicas: timeslice needs a whole number of holders per GPU, 2 to 48",
        ),
        ([{"name": "x", "sharing": "mps", "replicas": 4}], "memory: an mps kind pins each holder's GPU memory"),
        ([{"name": "x", "sharing": "mig", "profile": "big"}], "profile: a mig kind names a MIG profile"),
        ([{"name": "x", "sharing": "whole", "replicas": 3}], "only timeslice and mps kinds share a GPU"),
        ([{"name": "x", "allow_cross_course": True}], "only timeslice and mps kinds put several courses on one GPU"),
        (
            [{"name": "a", "devices": [0]}, {"name": "b", "sharing": "timeslice", "replicas": 2, "devices": [0]}],
            "GPU 0 is already given to kind 'a'",
        ),
        ([{"name": "Big GPU"}], "a GPU kind is lowercase letters"),
        ([{"name": "x", "colour": "red"}], "unknown field(s) colour"),
        ([{"name": "x", "weight": 0}], "weight: GPU-hours per hour of one holder"),
    ],
)
def test_bad_kinds_say_what_is_wrong(entries, message):
    with pytest.raises(ValueError) as err:
        parse_kinds(entries)
    assert message in str(err.value)


def test_default_weights_follow_the_mode():
    kinds = parse_kinds(KINDS)
    assert kinds["h100"].weight == 1 and kinds["h100-ts4"].weight == 0.25 and kinds["h100-mps2"].weight == 0.5
    assert kinds["mig-1g.10gb"].weight_ppm == 142_857


@pytest.fixture
def db(tmp_path):
    db = fresh_database("sqlite", tmp_path)
    grant(db, 1000)
    yield db
    db.close()


def admit(db, c, user, inv, now=T0):
    with db.session() as s:
        return ledger_admission.admit(s, c, user, "", inv, 20000, now=now)


def test_time_slice_shares_go_four_to_a_gpu_and_the_fifth_learner_is_told(db):
    inv = inventory()
    c = course("ts-course", gpu=("h100-ts4", 1))
    got = [admit(db, c, f"u{i}", inv).devices[0]["id"] for i in range(4)]
    assert sorted(got) == ["1:1", "1:2", "1:3", "1:4"]
    with pytest.raises(Refusal) as err:
        admit(db, c, "u5", inv)
    assert err.value.reason == "gpu-busy" and "all 4 GPU(s) of kind 'h100-ts4'" in err.value.message


def test_mig_instances_are_exclusive_by_uuid(db):
    inv = inventory()
    c = course("mig-course", gpu=("mig-1g.10gb", 1))
    got = {admit(db, c, f"u{i}", inv).devices[0]["id"] for i in range(7)}
    assert len(got) == 7 and all(g.startswith("MIG-") for g in got)
    with pytest.raises(Refusal):
        admit(db, c, "u8", inv)


def test_two_courses_never_time_slice_one_gpu_unless_the_admin_allows_it(db):
    inv = inventory()
    a, b = course("course-a", gpu=("h100-ts4", 1)), course("course-b", gpu=("h100-ts4", 1))
    admit(db, a, "alice", inv)
    with pytest.raises(Refusal) as err:
        admit(db, b, "bob", inv)
    assert err.value.reason == "gpu-shared"
    assert "does not isolate GPU memory between holders" in err.value.message
    assert "allow_cross_course: true" in err.value.message
    with db.session() as s:  # the form says so beforehand: nothing free for course b, three for course a
        catalog = type("C", (), {"courses": {"course-a": a, "course-b": b}})()
        found = {o["id"]: o for o in offers(s, catalog, "alice", True, inv)}
    assert found["course-a"]["gpu_free"] == 3 and found["course-b"]["gpu_free"] == 0
    allowed = inventory(
        [{"name": "h100-ts4", "sharing": "timeslice", "replicas": 4, "allow_cross_course": True, "devices": [1]}]
    )
    assert admit(db, b, "bob", allowed).devices[0]["gpu"] == "1"


def test_the_rate_card_takes_the_kinds_weights_and_charges_a_share_by_it(db):
    weights = {k.name: k.weight_ppm for k in parse_kinds(KINDS).values()}
    with db.session() as s:
        # h100 and mig-1g.10gb are in the rate card already at the same weights (the ledger's first migration)
        assert set(record_rates(s, weights, T0)) == {"h100-ts4", "h100-mps2"}
    with db.session() as s:
        assert record_rates(s, weights, T0) == []  # unchanged: nothing written
        assert RateCard(s).weight("h100-ts4", T0) == 250_000
    inv = inventory()
    c = course("ts-course", gpu=("h100-ts4", 1))
    adm = admit(db, c, "u1", inv)
    with db.session() as s:
        metering.release(s, "u1", "", "done", now=T0.replace(hour=T0.hour + 1))
    with db.session() as s:
        from aifhub.ledger.models import SandboxSession

        assert s.get(SandboxSession, adm.session_id).charged_gpu_ms == 900_000  # one hour of a quarter GPU


def test_the_form_shows_free_capacity_per_kind(db):
    inv = inventory()
    admit(db, course("ts-course", gpu=("h100-ts4", 1)), "u1", inv)
    with db.session() as s:
        pool = pool_status(s, inv)
    line = capacity(pool)
    assert "h100-ts4: 3 of 4 time-shares free on 1 GPU" in line
    assert "mig-1g.10gb: 7 of 7 MIG slices free on 1 GPU" in line and "h100: 1 of 1 GPUs free" in line
    c = course("ts-course", gpu=("h100-ts4", 1)).summary() | {
        "gpu_free": 3,
        "can_start": True,
        "why_not": "",
        "gpu_share": {"sharing": "timeslice", "title": "a 1/4 time-share of a GPU (memory not isolated)"},
    }
    html = render_form({"courses": [c], "pool": pool}, True)
    assert "a 1/4 time-share of a GPU (memory not isolated)" in html and "3 free" in html


def test_a_share_holder_sees_only_its_gpus_device_node(tmp_path):
    """The sandbox's /dev (bubblewrap) gets the node of the GPU its share lies on, as the spawner computes it."""
    from aifhub.isolation.namespace import Confinement

    for name in ("nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm"):
        (tmp_path / name).touch()
    inv = {d.id: d.to_dict() for d in inventory()}
    mig = next(d for d in inv.values() if d["sharing"] == "mig")
    for devices, node in (
        ([inv["1:3"]], "nvidia1"),
        ([inv["2:2"]], "nvidia2"),
        ([mig], "nvidia3"),
        ([inv["0"]], "nvidia0"),
    ):
        minors = tuple(int(d.get("minor", d["id"])) for d in devices)  # as hubside/hardlimits.py and the warm pool do
        nodes = [
            inside
            for _host, inside in Confinement(uid=1, gid=1, gpu_minors=minors, device_dir=str(tmp_path)).gpu_nodes()
        ]
        assert [n for n in nodes if n[len("/dev/nvidia") :].isdigit()] == [f"/dev/{node}"], nodes


def test_the_waitlist_offers_a_share_only_on_a_gpu_the_course_may_use(db):
    from aifhub.service import waitlist

    inv = inventory()
    a, b = course("course-a", gpu=("h100-ts4", 1)), course("course-b", gpu=("h100-ts4", 1))
    for i in range(4):
        admit(db, a, f"a{i}", inv)
    with db.session() as s:
        entry = waitlist.join(s, b, "bob", "").id
    with db.session() as s:
        metering.release(s, "a0", "", "stopped")
    with db.session() as s:  # the freed share lies on course-a's GPU: not offered to course-b's learner
        assert waitlist.promote(s, inv, 180) == []
    for i in range(1, 4):
        with db.session() as s:
            metering.release(s, f"a{i}", "", "stopped")
    with db.session() as s:  # the GPU is course-a's no more
        assert [o[0] for o in waitlist.promote(s, inv, 180)] == [entry]
