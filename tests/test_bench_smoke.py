"""Each benchmark of `make bench`, in a tiny run, so they do not rot.

These check that every benchmark runs and returns well-formed numbers, not that aifhub meets
its goals: timings on a shared machine are for `make bench` to report.
"""

import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report, suite  # noqa: E402
from bench.api import api_throughput  # noqa: E402
from bench.footprint import service_footprint  # noqa: E402
from bench.grading import grading_throughput  # noqa: E402
from bench.hubs import PlainHub, aifhub_hub, running  # noqa: E402
from bench.spawn import spawn_overhead, spawn_storm  # noqa: E402
from bench.startup import PHASES, sandbox_breakdown, server_start_probe  # noqa: E402


def seconds(x):
    return isinstance(x, float) and math.isfinite(x) and x >= 0


def well_formed(rows):
    for row in rows:
        cells = row.cells()
        assert len(cells) == len(report.HEADER) and all(isinstance(c, str) and c for c in cells), cells
        assert "could not be measured" not in row.figure, row


@pytest.fixture(scope="module")
def hubs(hub_dir):
    (hub_dir / "aifhub").mkdir()
    with running(aifhub_hub(hub_dir / "aifhub", gpus="0")) as aif, running(PlainHub(hub_dir / "plain")) as plain:
        yield aif, plain


def test_spawn_overhead(hubs):
    r = spawn_overhead(*hubs, runs=1, warmup=0)
    assert seconds(r["aifhub_s"]) and seconds(r["plain_s"]) and r["ratio"] > 0
    assert len(r["aifhub_all"]) == len(r["plain_all"]) == 1
    well_formed(suite.spawn_rows(r)[0])


def test_api_throughput(hubs):
    r = api_throughput(*hubs, seconds=1.0, rounds=1, concurrency=2)
    assert r["aifhub_rps"] > 0 and r["plain_rps"] > 0 and r["ratio"] > 0
    assert r["errors"] == {"aifhub": 0, "plain": 0}
    well_formed(suite.api_rows(r)[0])


def test_sandbox_breakdown(hubs):
    b = sandbox_breakdown(hubs[0], runs=1)
    assert set(b["phases"]) == {label for label, _a, _b in PHASES}
    assert all(seconds(v) for v in b["phases"].values())
    assert seconds(b["total_s"]) and b["total_s"] >= sum(b["phases"].values()) - 0.05
    well_formed(suite.breakdown_rows(b)[0])


def test_spawn_storm(hubs):
    results = [spawn_storm(hub, users=2, prefix="smoke") for hub in hubs]
    for r in results:
        assert r["started"] + r["waiting"] + r["failed"] == 2
        assert r["all_ready_s"] is None or seconds(r["all_ready_s"])
        assert r["progress_events_before_ready"] >= 1  # JupyterHub itself says "Server requested"
        assert r["stall"]["samples"] > 10 and seconds(r["stall"]["longest_s"]) and r["stall"]["errors"] == 0
    assert results[0]["failed"] == 0 and results[0]["watched_ready"]
    assert isinstance(results[0]["stall"]["hub_stalls_s"], list)  # aifhub's own watchdog, read from its log
    assert results[1]["stall"]["hub_stalls_s"] is None  # plain JupyterHub has none
    well_formed(suite.storm_rows(*results)[0])


@pytest.mark.skipif(os.geteuid() != 0, reason="warm sandboxes need the service to run as root")
def test_warm_vs_cold(hubs, hub_dir):
    from bench.warm import warm_vs_cold

    w = warm_vs_cold(hub_dir / "warm", *hubs, runs=1)
    assert all(seconds(v) and v > 0 for v in w["median_s"].values()) and w["ratio"] > 0
    assert [len(v) for v in w["all"].values()] == [1, 1, 1]
    well_formed(suite.warm_rows(w)[0])


def test_server_start_probe(tmp_path):
    r = server_start_probe(tmp_path, runs=1)
    assert set(r["median_s"]) == {"shipped", "learner extensions", "learner extensions, no rfc3987-syntax"}
    assert all(seconds(v) and v > 0 for v in r["median_s"].values())
    well_formed(suite.probe_rows(r)[0])


def test_service_footprint(hub_dir):
    (hub_dir / "footprint").mkdir()
    f = service_footprint(hub_dir / "footprint", sessions=3, intervals=1, meter_interval=1.0)
    for side in ("idle", "loaded"):
        assert f[side]["rss_mb"] > 10 and seconds(f[side]["cpu_pct"])
    assert f["rss_ratio"] > 0 and f["admit_ms_each"] > 0
    well_formed(suite.footprint_rows(f)[0])


def test_grading_throughput(hub_dir):
    g = grading_throughput(hub_dir / "grading", submissions=2, workers=2)
    assert g["submissions"] == 2 and g["workers"] == 2 and g["full_marks"] == 1
    assert seconds(g["queue_s"]) and seconds(g["serial_s"]) and g["ratio"] > 0
    well_formed(suite.grading_rows(g)[0])


def test_report_is_written_and_a_partial_run_keeps_the_other_figures(tmp_path):
    rows = [report.Row("a figure", "1.00 s", "1.00 s", 1.0, "<= 1.05", True), report.Row("a breakdown", "0.10 s")]
    out = tmp_path / "benchmarks.md"
    first = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    fresh = {"spawn": {"run": report.run_label(first), "rows": rows, "details": ["- spawn detail"]}}
    report.write_doc(out, report.merge(out, fresh, suite.FIGURES), {"runs": 1}, first, 60.0, "python -m bench --runs 1")
    text = out.read_text()
    assert "| figure | aifhub | baseline | ratio | goal | met? |" in text
    assert "| a figure | 1.00 s | 1.00 s | 1.00 | <= 1.05 | yes |" in text
    assert "- cores: " in text and "make bench" in text and "python -m bench --runs 1" in text
    assert "Kept from earlier runs" not in text

    later = report.now()
    ledger = {"ledger": {"run": report.run_label(later), "rows": [report.Row("a tick", "0.5 s")], "details": []}}
    report.write_doc(out, report.merge(out, ledger, suite.FIGURES), {}, later, 1.0, "python -m bench --only ledger")
    text = out.read_text()
    assert "| a figure | 1.00 s | 1.00 s | 1.00 | <= 1.05 | yes |" in text and "| a tick | 0.5 s |" in text
    assert text.index("a figure") < text.index("a tick")  # in the suite's order of figures
    assert "Kept from earlier runs (2026-01-02 03:04 UTC): spawn." in text and "- spawn detail" in text


def test_ledger_benchmarks(tmp_path):
    from bench.ledger import run_all

    results = run_all(tmp_path, admissions=10, tick_sessions=(50,), pg_url=None)
    a = results["SQLite"]["admission"]
    assert a["admissions"] == 10 and 0 < a["p50_ms"] <= a["p99_ms"] and a["base_p50_ms"] > 0
    [m] = results["SQLite"]["ticks"]
    assert m["sessions"] == 50 and seconds(m["tick_s"]) and seconds(m["base_tick_s"]) and seconds(m["stall_s"])
    well_formed(suite.ledger_rows(results)[0])


def test_credential_issuing(tmp_path):
    from bench.credentials import issue_timing

    r = issue_timing(5, folder=tmp_path)
    assert r["n"] == 5 and seconds(r["p50_s"]) and r["p50_s"] <= r["p95_s"] <= r["max_s"]
    assert seconds(r["canonical_p50_s"]) and r["canonical_p50_s"] > 0
    well_formed(suite.credentials_rows(r)[0])


def test_gpu_day():
    from bench.gpu_idle import gpu_day

    d = gpu_day(hours=1.0, step_s=300)
    a, b = d["aware"], d["activity"]
    assert a["billed_gpu_h"] > 0 and b["billed_gpu_h"] > 0
    assert a["busy_stopped"] == 0 and b["busy_stopped"] == 10  # no activity after 5 min, GPU busy all along
    well_formed(suite.gpu_idle_rows(d)[0])


def test_the_real_gpu_check_reports_every_step_without_a_gpu(tmp_path):
    """bench/gpu_real.py is for a GPU machine; here it must still run through and say why each step did not."""
    import json

    from aifhub.gpus.nvml import Nvml
    from bench import gpu_real

    if Nvml().available():
        pytest.skip("this machine has a GPU: run scripts/gpu-check instead")
    assert gpu_real.main(["--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["discovery"]["status"] == "failed" and "NVML found no GPU" in report["discovery"]["why"]
    assert {report[s]["status"] for s in ("sandbox", "isolation", "telemetry", "charging")} == {"skipped"}
    compile(gpu_real.WORKER % gpu_real.PTX, "worker.py", "exec")  # what each sandbox runs
