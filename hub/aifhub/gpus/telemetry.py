"""What a sandbox's GPU is doing, from the cluster's source: pure functions from samples to readings.

Locally (NVML): a whole GPU reads as its device; a MIG instance as its instance (memory; NVML has no utilisation
for MIG instances, so it reads as unknown); a time-slice or MPS share as the learner's own processes on the shared
GPU (sandboxes run under their learner's uid: the processes of that uid, their SM share and memory). On
Kubernetes (DCGM exporter): the pod's series. ``busy`` is utilisation above :data:`BUSY_PERCENT`; memory held
without compute is idle.
"""

from dataclasses import dataclass

BUSY_PERCENT = 5  # utilisation above which a GPU counts as in use


@dataclass(frozen=True)
class Reading:
    util: int | None  # percent of the sandbox's GPU(s) in use; None: the source cannot tell
    memory_used: int = 0  # bytes
    memory_total: int = 0

    @property
    def busy(self):
        """True or False; None when the source cannot tell (the idle rule then goes by activity alone)."""
        return None if self.util is None else self.util > BUSY_PERCENT

    def to_dict(self):
        return {
            "util_percent": self.util,
            "memory_used_bytes": self.memory_used,
            "memory_total_bytes": self.memory_total,
            "busy": self.busy,
        }


def local_reading(sample, devices, uid):
    """A session's reading from an NVML sample: ``devices`` its claimed device dicts (``GpuDevice.to_dict``),
    ``uid`` its learner's uid. None when the sample has none of its devices."""
    utils, used, total, seen = [], 0, 0, False
    for d in devices:
        sharing = d.get("sharing", "whole")
        if sharing in ("timeslice", "mps"):
            use = sample.devices.get(d.get("gpu") or d["id"])
            if use is None:
                continue
            mine = [p for p in use.processes if p.uid == uid]
            utils.append(min(100, sum(p.sm for p in mine)))
            used += sum(p.memory_used for p in mine)
            total += use.memory_total
        else:
            use = sample.devices.get(d["id"])
            if use is None:
                continue
            utils.append(use.util)
            used += use.memory_used
            total += use.memory_total
        seen = True
    if not seen:
        return None
    known = [u for u in utils if u is not None]
    return Reading(util=max(known) if known else None, memory_used=used, memory_total=total)


def kube_reading(pods, pod):
    """A session's reading from the DCGM exporter's ``{(namespace, pod): DeviceUse}``; ``pod`` is
    ``namespace/name``. None when the exporter has no series for it."""
    if not pod or "/" not in pod:
        return None
    use = pods.get(tuple(pod.split("/", 1)))
    if use is None:
        return None
    return Reading(util=use.util, memory_used=use.memory_used, memory_total=use.memory_total)


def idle_increments(readings, since, now, cap_s):
    """``{session id: ms}`` of GPU-idle time to add for the stretch ``since`` .. ``now`` (capped at ``cap_s``,
    so a stalled source never books hours at once): sessions whose reading says not busy."""
    if since is None:
        return {}
    ms = int(min(max((now - since).total_seconds(), 0), cap_s) * 1000)
    return {sid: ms for sid, r in readings.items() if r is not None and r.busy is False and ms}
