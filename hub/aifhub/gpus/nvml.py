"""The one door to NVML: discovery (devices, MIG mode and instances) and samples of their use.

Everything above reads plain records (:class:`Physical`, :class:`MigInstance`, :class:`Sample`) from a
*reader*: :class:`Nvml` asks the driver through ``nvidia-ml-py``; :class:`Recorded` replays a JSON file of the
same records (tests and the benchmark feed it; ``record()`` writes one from a real machine). Calls are blocking:
the service runs them on a thread.
"""

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
_MIG_NAME = re.compile(r"MIG\s+([1-7]g\.[0-9]+gb(?:\+me)?)")


@dataclass(frozen=True)
class MigInstance:
    uuid: str
    profile: str  # 1g.10gb
    gi: int = 0
    ci: int = 0
    memory_total: int = 0


@dataclass(frozen=True)
class Physical:
    index: int
    uuid: str = ""
    name: str = ""
    minor: int | None = None
    memory_total: int = 0
    mig_mode: bool = False
    mig: tuple = ()  # MigInstance, ...


@dataclass(frozen=True)
class ProcessUse:
    pid: int
    uid: int | None  # the process's owner: locally, a sandbox's learner uid
    sm: int = 0  # percent of the device's SMs over the last sample period
    memory_used: int = 0


@dataclass(frozen=True)
class DeviceUse:
    """One device (a GPU index as a string, or a MIG instance's UUID) at one moment."""

    util: int | None  # percent; None where NVML cannot tell (a MIG instance)
    memory_used: int = 0
    memory_total: int = 0
    processes: tuple = ()  # ProcessUse, ...


@dataclass(frozen=True)
class Sample:
    devices: dict = field(default_factory=dict)  # id -> DeviceUse


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def mig_profile(name):
    """``NVIDIA H100 80GB HBM3 MIG 1g.10gb`` -> ``1g.10gb`` ('' when the name has none)."""
    m = _MIG_NAME.search(name or "")
    return m.group(1) if m else ""


class Nvml:
    """The driver, through ``nvidia-ml-py``. ``available()`` is False without the library or a GPU."""

    def __init__(self):
        try:
            import pynvml
        except ImportError:
            pynvml = None
        self.nv = pynvml
        self._last_seen = {}

    def available(self):
        if self.nv is None:
            return False
        try:
            self.nv.nvmlInit()
        except self.nv.NVMLError as exc:
            log.info("No NVIDIA GPUs found (NVML: %s)", exc)
            return False
        self.nv.nvmlShutdown()
        return True

    def _call(self, fn, *args, default=None):
        try:
            return fn(*args)
        except self.nv.NVMLError:
            return default

    def discover(self):
        if not self.available():
            return []
        nv = self.nv
        nv.nvmlInit()
        try:
            out = []
            for index in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(index)
                mode = self._call(nv.nvmlDeviceGetMigMode, h, default=(0, 0))
                mig = []
                if mode and mode[0] == nv.NVML_DEVICE_MIG_ENABLE:
                    for i in range(self._call(nv.nvmlDeviceGetMaxMigDeviceCount, h, default=0)):
                        m = self._call(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, i)
                        if m is None:
                            continue
                        mem = self._call(nv.nvmlDeviceGetMemoryInfo, m)
                        mig.append(
                            MigInstance(
                                uuid=_text(nv.nvmlDeviceGetUUID(m)),
                                profile=mig_profile(_text(nv.nvmlDeviceGetName(m))),
                                gi=self._call(nv.nvmlDeviceGetGpuInstanceId, m, default=0),
                                ci=self._call(nv.nvmlDeviceGetComputeInstanceId, m, default=0),
                                memory_total=int(mem.total) if mem else 0,
                            )
                        )
                mem = self._call(nv.nvmlDeviceGetMemoryInfo, h)
                out.append(
                    Physical(
                        index=index,
                        uuid=_text(nv.nvmlDeviceGetUUID(h)),
                        name=_text(nv.nvmlDeviceGetName(h)),
                        minor=self._call(nv.nvmlDeviceGetMinorNumber, h),
                        memory_total=int(mem.total) if mem else 0,
                        mig_mode=bool(mode and mode[0] == nv.NVML_DEVICE_MIG_ENABLE),
                        mig=tuple(mig),
                    )
                )
            return out
        finally:
            nv.nvmlShutdown()

    def sample(self):
        if self.nv is None:
            return Sample()
        nv = self.nv
        try:
            nv.nvmlInit()
        except nv.NVMLError:
            return Sample()
        try:
            devices = {}
            for index in range(nv.nvmlDeviceGetCount()):
                h = nv.nvmlDeviceGetHandleByIndex(index)
                rates = self._call(nv.nvmlDeviceGetUtilizationRates, h)
                mem = self._call(nv.nvmlDeviceGetMemoryInfo, h)
                sm = {}
                for p in self._call(nv.nvmlDeviceGetProcessUtilization, h, self._last_seen.get(index, 0), default=[]):
                    sm[p.pid] = max(sm.get(p.pid, 0), int(p.smUtil))
                    self._last_seen[index] = max(self._last_seen.get(index, 0), int(p.timeStamp))
                procs = []
                for p in self._call(nv.nvmlDeviceGetComputeRunningProcesses, h, default=[]):
                    procs.append(ProcessUse(p.pid, _owner(p.pid), sm.get(p.pid, 0), int(p.usedGpuMemory or 0)))
                devices[str(index)] = DeviceUse(
                    util=int(rates.gpu) if rates else None,
                    memory_used=int(mem.used) if mem else 0,
                    memory_total=int(mem.total) if mem else 0,
                    processes=tuple(procs),
                )
                for i in range(self._call(nv.nvmlDeviceGetMaxMigDeviceCount, h, default=0) or 0):
                    m = self._call(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, i)
                    if m is None:
                        continue
                    mem = self._call(nv.nvmlDeviceGetMemoryInfo, m)
                    procs = [
                        ProcessUse(p.pid, _owner(p.pid), 0, int(p.usedGpuMemory or 0))
                        for p in self._call(nv.nvmlDeviceGetComputeRunningProcesses, m, default=[])
                    ]
                    devices[_text(nv.nvmlDeviceGetUUID(m))] = DeviceUse(
                        util=None,
                        memory_used=int(mem.used) if mem else 0,
                        memory_total=int(mem.total) if mem else 0,
                        processes=tuple(procs),
                    )
            return Sample(devices)
        finally:
            nv.nvmlShutdown()


def _owner(pid):
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


class Recorded:
    """NVML replayed from a JSON file: ``{"devices": [Physical...], "samples": [{"<id>": DeviceUse...}, ...]}``.

    Each :meth:`sample` returns the next recorded sample and stays on the last one; ``devices`` alone (no
    samples) makes a machine that is discovered but never used.
    """

    def __init__(self, data):
        if isinstance(data, (str, Path)):
            data = json.loads(Path(data).read_text())
        self.physical = [
            Physical(
                **{k: v for k, v in d.items() if k != "mig"}, mig=tuple(MigInstance(**m) for m in d.get("mig", ()))
            )
            for d in data.get("devices", [])
        ]
        self.samples = [
            Sample(
                {
                    dev: DeviceUse(
                        **{k: v for k, v in use.items() if k != "processes"},
                        processes=tuple(ProcessUse(**p) for p in use.get("processes", ())),
                    )
                    for dev, use in s.items()
                }
            )
            for s in data.get("samples", [])
        ]
        self.position = 0

    def available(self):
        return bool(self.physical)

    def discover(self):
        return list(self.physical)

    def sample(self):
        if not self.samples:
            return Sample()
        s = self.samples[min(self.position, len(self.samples) - 1)]
        self.position += 1
        return s


def record(reader, samples=1):
    """A reader's discovery and ``samples`` samples as the JSON :class:`Recorded` replays."""
    return {
        "devices": [asdict(p) for p in reader.discover()],
        "samples": [{k: asdict(v) for k, v in reader.sample().devices.items()} for _ in range(samples)],
    }


def reader_from(source):
    """``None`` or ``""``: the driver; a path: a recording (``AifhubService.nvml_recording``)."""
    return Recorded(source) if source else Nvml()
