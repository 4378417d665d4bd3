"""Who may start a course's sandbox: a table of roles, enrolment modes and dates."""

from dataclasses import replace
from datetime import date

import pytest
from ledgerkit import course

from aifhub.catalog.access import decide_access
from aifhub.catalog.model import Schedule
from aifhub.service.gpu_pool import GpuDevice, discover_nvml, kind_for_product, parse_gpus

WORKSHOP = replace(
    course("ws"),
    enrollment="roster",
    roster=("ann",),
    instructors=("teach",),
    schedule=Schedule(start=date(2026, 12, 1), end=date(2026, 12, 5)),
)
CODED = replace(WORKSHOP, enrollment="code", enrollment_code="SECRET", roster=())
OPEN = replace(WORKSHOP, enrollment="open", roster=())

CASES = [
    # course, user, admin, enrolled, today, allowed, reason
    (WORKSHOP, "ann", False, False, date(2026, 12, 2), True, ""),
    (WORKSHOP, "bob", False, False, date(2026, 12, 2), False, "not-enrolled"),
    (WORKSHOP, "ann", False, False, date(2026, 11, 30), False, "not-started"),
    (WORKSHOP, "ann", False, False, date(2026, 12, 6), False, "ended"),
    (WORKSHOP, "teach", False, False, date(2027, 1, 1), True, ""),  # instructors are never shut out by dates
    (WORKSHOP, "root", True, False, date(2025, 1, 1), True, ""),  # nor admins
    (CODED, "bob", False, False, date(2026, 12, 2), False, "not-enrolled"),
    (CODED, "bob", False, True, date(2026, 12, 2), True, ""),
    (OPEN, "anyone", False, False, date(2026, 12, 3), True, ""),
    (OPEN, "anyone", False, False, date(2026, 12, 9), False, "ended"),
]


@pytest.mark.parametrize("c, user, admin, enrolled, today, allowed, reason", CASES)
def test_access_table(c, user, admin, enrolled, today, allowed, reason):
    decision = decide_access(c, user, admin=admin, enrolled=enrolled, today=today)
    assert (decision.allowed, decision.reason) == (allowed, reason)
    if not allowed:
        assert c.title in decision.message


def test_refusal_messages_tell_what_to_do():
    msg = decide_access(WORKSHOP, "bob", today=date(2026, 12, 2)).message
    assert "Ask an instructor of the course to add you to its roster" in msg
    assert "starts on 2026-12-01" in decide_access(WORKSHOP, "ann", today=date(2026, 11, 1)).message


@pytest.mark.parametrize(
    "spec, ids",
    [("none", []), ("0", ["0"]), ("0,1", ["0", "1"]), (" 2 , 3 ", ["2", "3"]), ("", None), ("kubernetes", None)],
)
def test_gpus_flag(spec, ids):
    parsed = parse_gpus(spec)
    assert (None if parsed is None else [d.id for d in parsed]) == ids


@pytest.mark.parametrize(
    "name, kind",
    [
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("Tesla T4", "gpu"),
    ],
)
def test_nvml_product_names_map_to_kinds(name, kind):
    assert kind_for_product(name) == kind


def test_generic_kind_takes_any_full_gpu_but_specific_kinds_match_exactly():
    h100 = GpuDevice("0", "h100")
    assert h100.matches("gpu") and h100.matches("h100") and not h100.matches("a100")


def test_nvml_discovery_without_a_driver_finds_nothing_instead_of_failing():
    devices = discover_nvml()
    assert isinstance(devices, list)
    assert all(d.uuid for d in devices)  # on a GPU machine every device has its UUID
