"""The real-GPU check: what the recorded samples stand in for, on a machine with an NVIDIA GPU (an H100/H200).

NOT RUN YET: written and tested against recordings on a machine without a GPU; run it on a GPU machine, as root,
in under ten minutes::

    sudo .venv/bin/python -m bench.gpu_real --out /tmp/gpu-check     # or scripts/gpu-check --out DIR

It needs aifhub importable with ``nvidia-ml-py``, SQLAlchemy, alembic and PyYAML (no JupyterHub, no torch: the
matmul is a PTX kernel loaded through the CUDA driver, ``libcuda.so``), and ``bwrap`` (else ``unshare`` with
mounts) for the sandboxes. It leaves the GPU's settings (MIG mode included) as they are. Steps, each reported
``ok``, ``failed`` (with why) or ``skipped`` (with why) in ``<out>/gpu-check.json``:

1. **discovery**: NVML's count, models, memory and MIG mode (:class:`aifhub.gpus.nvml.Nvml`), written as a
   recording (``<out>/nvml-recording.json``) that tests can replay.
2. **sandbox**: a confined process (aifhub's bubblewrap confinement, its own ``/dev`` with only GPU 0's node
   and the driver's control nodes, a learner uid) lists ``/dev`` and runs an N×N float32 matmul on the GPU,
   checked against the CPU.
3. **isolation**: a second sandbox (GPU 1's node when there are two GPUs, none otherwise) cannot open GPU 0's
   device node, and the CUDA driver finds no device for ``CUDA_VISIBLE_DEVICES`` pointing at it.
4. **telemetry**: two sandboxes on GPU 0 as two learner uids, one computing, one holding 2 GiB idle; NVML samples
   read through :func:`aifhub.gpus.telemetry.local_reading` for a time-slice share each: the busy one ``busy``,
   the holder not; and the idle rule (:func:`aifhub.service.idle.gpu_in_use`) reads them the same way.
5. **charging**: a ledger session for a whole GPU (weight 1) and one for a share (weight 1/2) around a sandbox
   that runs W seconds: GPU-seconds charged against the wall time measured here.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

PTX = r"""
.version 7.0
.target sm_70
.address_size 64

.visible .entry matmul(.param .u64 pa, .param .u64 pb, .param .u64 pc, .param .u32 pn)
{
    .reg .pred %p<3>;
    .reg .b32 %r<16>;
    .reg .f32 %f<6>;
    .reg .b64 %rd<16>;

    ld.param.u64 %rd1, [pa];
    ld.param.u64 %rd2, [pb];
    ld.param.u64 %rd3, [pc];
    ld.param.u32 %r1, [pn];
    cvta.to.global.u64 %rd1, %rd1;
    cvta.to.global.u64 %rd2, %rd2;
    cvta.to.global.u64 %rd3, %rd3;
    mov.u32 %r2, %ctaid.x;
    mov.u32 %r3, %ntid.x;
    mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    mov.u32 %r6, %ctaid.y;
    mov.u32 %r7, %ntid.y;
    mov.u32 %r8, %tid.y;
    mad.lo.s32 %r9, %r6, %r7, %r8;
    setp.ge.s32 %p1, %r5, %r1;
    setp.ge.s32 %p2, %r9, %r1;
    or.pred %p1, %p1, %p2;
    @%p1 bra DONE;
    mov.f32 %f1, 0f00000000;
    mov.u32 %r10, 0;
LOOP:
    mad.lo.s32 %r11, %r9, %r1, %r10;
    mul.wide.s32 %rd4, %r11, 4;
    add.s64 %rd5, %rd1, %rd4;
    ld.global.f32 %f2, [%rd5];
    mad.lo.s32 %r12, %r10, %r1, %r5;
    mul.wide.s32 %rd6, %r12, 4;
    add.s64 %rd7, %rd2, %rd6;
    ld.global.f32 %f3, [%rd7];
    fma.rn.f32 %f1, %f2, %f3, %f1;
    add.s32 %r10, %r10, 1;
    setp.lt.s32 %p2, %r10, %r1;
    @%p2 bra LOOP;
    mad.lo.s32 %r13, %r9, %r1, %r5;
    mul.wide.s32 %rd8, %r13, 4;
    add.s64 %rd9, %rd3, %rd8;
    st.global.f32 [%rd9], %f1;
DONE:
    ret;
}
"""

# what runs inside a sandbox: ``matmul N SECONDS`` (repeat matmuls for SECONDS), ``hold BYTES SECONDS``
# (allocate and sit idle), ``probe PATH`` (try to open a device node); prints one JSON line
WORKER = r"""
import ctypes, json, os, random, sys, time
PTX = %r
def cu():
    lib = ctypes.CDLL("libcuda.so.1")
    def call(name, *args):
        rc = getattr(lib, name)(*args)
        if rc != 0:
            raise RuntimeError(f"{name} -> CUDA error {rc}")
    call("cuInit", 0)
    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    call("cuDeviceGet", ctypes.byref(dev), 0)
    call("cuCtxCreate_v2", ctypes.byref(ctx), 0, dev)
    return lib, call
mode = sys.argv[1]
out = {"mode": mode, "pid": os.getpid(), "uid": os.getuid(), "dev": sorted(os.listdir("/dev")),
       "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
try:
    if mode == "probe":
        try:
            os.close(os.open(sys.argv[2], os.O_RDWR)); out["opened"] = True
        except OSError as exc:
            out["opened"], out["error"] = False, str(exc)
        try:
            cu(); out["cuda"] = "a device"
        except Exception as exc:
            out["cuda"] = f"no device: {exc}"
    elif mode == "hold":
        lib, call = cu()
        ptr = ctypes.c_uint64()
        call("cuMemAlloc_v2", ctypes.byref(ptr), ctypes.c_size_t(int(sys.argv[2])))
        print(json.dumps(out | {"holding": int(sys.argv[2])}), flush=True)
        time.sleep(float(sys.argv[3]))
    else:
        n, seconds = int(sys.argv[2]), float(sys.argv[3])
        lib, call = cu()
        mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
        call("cuModuleLoadData", ctypes.byref(mod), ctypes.c_char_p(PTX.encode()))
        call("cuModuleGetFunction", ctypes.byref(fn), mod, b"matmul")
        size = n * n * 4
        a = (ctypes.c_float * (n * n))(*[random.random() for _ in range(n * n)])
        b = (ctypes.c_float * (n * n))(*[random.random() for _ in range(n * n)])
        c = (ctypes.c_float * (n * n))()
        da, db, dc = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_uint64()
        for d in (da, db, dc):
            call("cuMemAlloc_v2", ctypes.byref(d), ctypes.c_size_t(size))
        call("cuMemcpyHtoD_v2", da, a, ctypes.c_size_t(size))
        call("cuMemcpyHtoD_v2", db, b, ctypes.c_size_t(size))
        nn = ctypes.c_uint32(n)
        params = (ctypes.c_void_p * 4)(*[ctypes.cast(ctypes.byref(x), ctypes.c_void_p) for x in (da, db, dc, nn)])
        grid = (n + 15) // 16
        start, runs = time.monotonic(), 0
        while True:
            call("cuLaunchKernel", fn, grid, grid, 1, 16, 16, 1, 0, None, params, None)
            call("cuCtxSynchronize")
            runs += 1
            if time.monotonic() - start >= seconds:
                break
        elapsed = time.monotonic() - start
        call("cuMemcpyDtoH_v2", c, dc, ctypes.c_size_t(size))
        worst = 0.0
        for _ in range(20):
            i, j = random.randrange(n), random.randrange(n)
            want = sum(a[i * n + k] * b[k * n + j] for k in range(n))
            worst = max(worst, abs(c[i * n + j] - want) / max(abs(want), 1e-6))
        out |= {"n": n, "runs": runs, "seconds": elapsed, "gflops": 2 * n ** 3 * runs / elapsed / 1e9,
                "max_rel_error": worst, "correct": worst < 1e-3}
except Exception as exc:
    out["error"] = repr(exc)
print(json.dumps(out), flush=True)
"""


def step(report, name, fn):
    started = time.monotonic()
    try:
        result = fn()
        status = result.pop("status", "ok") if isinstance(result, dict) else "ok"
    except Exception as exc:  # one failed step must not hide the others
        result, status = {"error": repr(exc)}, "failed"
    report[name] = {"status": status, "seconds": round(time.monotonic() - started, 2), **(result or {})}
    print(f"{name}: {status} {json.dumps(report[name], default=str)[:400]}", flush=True)
    return report[name]


def sandbox_argv(script, args, minors, uid, device_dir="/dev"):
    """``python script args`` confined as aifhub confines a sandbox (bwrap), or with unshare when bwrap is absent."""
    from aifhub.isolation.namespace import CONTROL_NODES, Confinement, bwrap_path, setpriv_path, software_folders

    # the worker needs the standard library only: the system's Python, which a learner uid can read
    command = [shutil.which("python3") or sys.executable, script, *args]
    if bwrap_path() and setpriv_path():
        keep = (str(Path(script).parent), *software_folders())
        c = Confinement(uid=uid, gid=uid, gpu_minors=tuple(minors), device_dir=device_dir, keep=keep)
        return c.argv(command)
    nodes = [f"nvidia{m}" for m in minors] + (list(CONTROL_NODES) if minors else [])
    binds = " ".join(
        f"[ -e /tmp/aifhub-devhost/{n} ] && {{ touch /dev/{n} 2>/dev/null || mkdir -p /dev/{n}; "
        f"mount --bind /tmp/aifhub-devhost/{n} /dev/{n}; }};"
        for n in nodes
    )
    shell = (
        "mkdir -p /tmp/aifhub-devhost && mount --rbind /dev /tmp/aifhub-devhost && mount -t tmpfs none /dev && "
        "for n in null zero urandom random; do touch /dev/$n; mount --bind /tmp/aifhub-devhost/$n /dev/$n; done; "
        f"{binds} umount -l /tmp/aifhub-devhost; exec setpriv --reuid={uid} --regid={uid} --clear-groups -- "
        + " ".join(f"'{a}'" for a in command)
    )
    return ["unshare", "--mount", "--pid", "--fork", "sh", "-c", shell]


def run_sandbox(script, args, minors, uid, visible, timeout=300, wait=True):
    env = {"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible}
    proc = subprocess.Popen(
        sandbox_argv(script, args, minors, uid), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True
    )
    if not wait:
        return proc
    out, err = proc.communicate(timeout=timeout)
    lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    if not lines:
        raise RuntimeError(f"sandbox printed nothing (rc {proc.returncode}): {err[-800:]}")
    return lines[-1]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.gpu_real", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="gpu-check", help="folder for gpu-check.json and nvml-recording.json")
    p.add_argument("--n", type=int, default=1024, help="matrix size of the sandbox's matmul (default: 1024)")
    p.add_argument("--busy-seconds", type=float, default=20.0, help="how long the busy sandbox computes (default: 20)")
    p.add_argument("--uid", type=int, default=64000, help="first learner uid for the sandboxes (default: 64000)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from aifhub.gpus.nvml import Nvml, record

    report = {"note": "real GPU check of aifhub's GPU support (bench/gpu_real.py)", "started": time.time()}
    nvml = Nvml()
    work = Path(tempfile.mkdtemp(prefix="aifhub-gpu-check-"))
    os.chmod(work, 0o755)
    script = work / "worker.py"
    script.write_text(WORKER % PTX)
    os.chmod(script, 0o644)
    physical = []

    def discovery():
        nonlocal physical
        physical = nvml.discover()
        if not physical:
            return {"status": "failed", "why": "NVML found no GPU (driver, nvidia-ml-py?)"}
        (out / "nvml-recording.json").write_text(json.dumps(record(nvml, samples=2), indent=1))
        return {
            "count": len(physical),
            "gpus": [
                {"index": g.index, "name": g.name, "memory_gib": round(g.memory_total / 2**30, 1), "mig_mode": g.mig_mode,
                 "mig_instances": [asdict(m) for m in g.mig], "minor": g.minor}
                for g in physical
            ],
        }  # fmt: skip

    step(report, "discovery", discovery)
    root = os.geteuid() == 0
    minor0 = physical[0].minor if physical else 0
    # a GPU in MIG mode computes only through its instances: name the first one (the GPU's settings stay as they are)
    visible0 = physical[0].mig[0].uuid if physical and physical[0].mig_mode and physical[0].mig else "0"

    def sandbox():
        if not physical or not root:
            return {"status": "skipped", "why": "no GPU" if not physical else "not root: sandboxes need root"}
        r = run_sandbox(str(script), ["matmul", str(args.n), "3"], [minor0], args.uid, visible0)
        gpu_nodes = [n for n in r["dev"] if n.startswith("nvidia") and n[6:].isdigit()]
        ok = r.get("correct") is True and gpu_nodes == [f"nvidia{minor0}"] and r["uid"] == args.uid
        return {"status": "ok" if ok else "failed", "gpu_nodes_seen": gpu_nodes, **r}

    step(report, "sandbox", sandbox)

    def isolation():
        if not physical or not root:
            return {"status": "skipped", "why": "no GPU or not root"}
        other = [physical[1].minor] if len(physical) > 1 else []
        r = run_sandbox(str(script), ["probe", f"/dev/nvidia{minor0}"], other, args.uid + 1, visible0)
        ok = r["opened"] is False and f"nvidia{minor0}" not in r["dev"] and r["cuda"].startswith("no device")
        return {"status": "ok" if ok else "failed", "second_sandbox_gpu_minors": other, **r}

    step(report, "isolation", isolation)

    def telemetry():
        if not physical or not root:
            return {"status": "skipped", "why": "no GPU or not root"}
        from aifhub.gpus.kinds import parse_kinds
        from aifhub.gpus.telemetry import local_reading
        from aifhub.service.gpu_pool import expand
        from aifhub.service.idle import gpu_in_use

        shares = expand(
            physical[:1],
            parse_kinds([{"name": "check-ts2", "sharing": "timeslice", "replicas": 2, "devices": [physical[0].index]}]),
        )
        busy_uid, idle_uid = args.uid + 2, args.uid + 3
        busy = run_sandbox(
            str(script), ["matmul", str(args.n), str(args.busy_seconds)], [minor0], busy_uid, visible0, wait=False
        )
        holder = run_sandbox(
            str(script), ["hold", str(2 * 2**30), str(args.busy_seconds)], [minor0], idle_uid, visible0, wait=False
        )
        time.sleep(min(8.0, args.busy_seconds / 2))  # both have their context and memory by now
        samples = []
        for _ in range(3):
            samples.append(nvml.sample())
            time.sleep(1.0)
        busy.communicate(timeout=args.busy_seconds + 120)
        holder.communicate(timeout=args.busy_seconds + 120)
        last = samples[-1]
        mine = local_reading(last, [shares[0].to_dict()], busy_uid)
        theirs = local_reading(last, [shares[1].to_dict()], idle_uid)

        class S:  # what the idle rule reads of a session
            def __init__(self, user):
                self.user, self.server_name, self.devices = user, "", []

        readings = {("busy", ""): mine, ("idle", ""): theirs}
        rule = {u: gpu_in_use(S(u), lambda s: readings[(s.user, "")].busy) for u in ("busy", "idle")}
        ok = (
            mine is not None
            and theirs is not None
            and mine.busy is True
            and theirs.busy is False
            and rule == {"busy": True, "idle": False}
        )
        procs = (
            [asdict(p) for p in last.devices.get(str(physical[0].index)).processes]
            if last.devices.get(str(physical[0].index))
            else []
        )
        return {"status": "ok" if ok else "failed", "busy": mine and mine.to_dict(), "idle": theirs and theirs.to_dict(),
                "idle_rule_in_use": rule, "processes": procs}  # fmt: skip

    step(report, "telemetry", telemetry)

    def charging():
        if not physical or not root:
            return {"status": "skipped", "why": "no GPU or not root"}
        from bench.gpu_idle import Catalog, course
        from aifhub.catalog.model import GpuRequest, SandboxRequest
        from aifhub.gpus.kinds import parse_kinds
        from aifhub.ledger import admission, allocations, metering
        from aifhub.ledger.balances import record_rates
        from aifhub.ledger.models import SandboxSession, utcnow
        from aifhub.service.gpu_pool import expand
        from aifhub.state.db import Database, sqlite_url
        import dataclasses

        kinds = parse_kinds([{"name": "check-whole", "devices": [physical[0].index]}])
        shared = parse_kinds([{"name": "check-ts2", "sharing": "timeslice", "replicas": 2}])
        db = Database(sqlite_url(work / "ledger.sqlite"))
        try:
            with db.session() as s:
                allocations.create(s, "DAY", 100, title="gpu check")
                record_rates(s, {k.name: k.weight_ppm for k in (kinds | shared).values()}, utcnow() - timedelta(days=1))
            out_rows = {}
            for name, ks in (("whole", kinds), ("timeslice", shared)):
                c = course()
                c = dataclasses.replace(
                    c,
                    id=f"check-{name}",
                    sandbox=SandboxRequest(image="x", gpu=GpuRequest(next(iter(ks)), 1), cpu=1, memory="1G"),
                )
                inv = expand(physical[:1], ks)
                with db.session() as s:
                    adm = admission.admit(s, c, f"learner-{name}", "", inv, args.uid + 10)
                t0 = time.monotonic()
                r = run_sandbox(str(script), ["matmul", str(args.n), "10"], [minor0], args.uid + 10, visible0)
                wall = time.monotonic() - t0
                with db.session() as s:
                    metering.tick(s, {(f"learner-{name}", "")}, utcnow(), Catalog(c))
                with db.session() as s:
                    metering.release(s, f"learner-{name}", "", "done")
                with db.session() as s:
                    charged = s.get(SandboxSession, adm.session_id).charged_gpu_ms / 1000
                weight = next(iter(ks.values())).weight
                out_rows[name] = {"wall_s": round(wall, 2), "gpu_s_charged": charged, "weight": weight,
                                  "ratio": charged / (wall * weight), "matmul_gflops": r.get("gflops")}  # fmt: skip
            ok = all(0.9 <= v["ratio"] <= 1.25 for v in out_rows.values())  # admission to release includes spawn time
            return {"status": "ok" if ok else "failed", **out_rows}
        finally:
            db.close()

    step(report, "charging", charging)
    report["finished"] = time.time()
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    shutil.rmtree(work, ignore_errors=True)
    failed = [k for k, v in report.items() if isinstance(v, dict) and v.get("status") == "failed"]
    print(
        f"gpu-check: {'FAILED ' + ', '.join(failed) if failed else 'no step failed'}; report in {out / 'gpu-check.json'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
