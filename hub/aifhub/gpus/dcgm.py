"""GPU use on Kubernetes from the DCGM exporter: its Prometheus text, per pod.

The exporter (part of the GPU operator) labels each GPU's series with the pod and namespace the kubelet handed
the GPU to. Read here: ``DCGM_FI_DEV_GPU_UTIL`` (percent; absent for MIG instances), ``DCGM_FI_PROF_SM_ACTIVE``
(a ratio, 0 to 1; MIG instances have it), ``DCGM_FI_DEV_FB_USED`` and ``DCGM_FI_DEV_FB_FREE`` (MiB). A time-sliced
GPU is reported once per pod that holds a share of it, with the whole GPU's figures: DCGM cannot tell the pods of
one GPU apart, so each of them reads as busy when any is (the idle rule then errs on the side of keeping a sandbox).
"""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from .nvml import DeviceUse

UTIL, SM_ACTIVE, FB_USED, FB_FREE = (
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_PROF_SM_ACTIVE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
)
MIB = 2**20


def parse(text):
    """``{(namespace, pod): DeviceUse}`` from the exporter's text (a pod with several GPUs: summed memory, the
    highest utilisation). Series without a pod (GPUs nobody holds) are left out."""
    per = {}  # (namespace, pod, gpu id) -> {metric: value}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name not in (UTIL, SM_ACTIVE, FB_USED, FB_FREE):
                continue
            labels = sample.labels
            pod = labels.get("pod") or labels.get("exported_pod")
            if not pod:
                continue
            namespace = labels.get("namespace") or labels.get("exported_namespace") or ""
            gpu = labels.get("UUID", "") + "/" + labels.get("GPU_I_ID", "")
            per.setdefault((namespace, pod, gpu), {})[sample.name] = float(sample.value)
    out = {}
    for (namespace, pod, _gpu), m in per.items():
        if UTIL in m:
            util = int(round(m[UTIL]))
        elif SM_ACTIVE in m:
            util = int(round(m[SM_ACTIVE] * 100))
        else:
            util = None
        used = int(m.get(FB_USED, 0) * MIB)
        total = used + int(m.get(FB_FREE, 0) * MIB)
        before = out.get((namespace, pod))
        if before is not None:
            util = max(u for u in (util, before.util) if u is not None) if (util, before.util) != (None, None) else None
            used, total = used + before.memory_used, total + before.memory_total
        out[(namespace, pod)] = DeviceUse(util=util, memory_used=used, memory_total=total)
    return out


class Exporter:
    """The DCGM exporters' ``/metrics`` endpoints (one per GPU node), read on a thread; or a recorded text."""

    def __init__(self, urls=(), recorded=None, timeout=5):
        self.urls = list(urls)
        self.recorded = recorded  # a list of texts, replayed one per sample (tests, the benchmark)
        self.position = 0
        self.timeout = timeout

    def read(self):
        if self.recorded is not None:
            text = self.recorded[min(self.position, len(self.recorded) - 1)] if self.recorded else ""
            self.position += 1
            return parse(text)
        out = {}
        for url in self.urls:
            with urllib.request.urlopen(url, timeout=self.timeout) as r:  # noqa: S310 (an admin-configured URL)
                out.update(parse(r.read().decode()))
        return out
