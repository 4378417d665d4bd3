"""GPU devices on one machine: NVML discovery and the ``--gpus`` override."""

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_KIND = "gpu"
CLUSTER = "kubernetes"  # --gpus value: the cluster's scheduler places GPUs, not aifhub

# NVML product names -> aifhub GPU kinds. Anything else is the generic kind.
_KIND_PATTERNS = [
    (r"\bH200\b", "h200"),
    (r"\bH100\b", "h100"),
    (r"\bA100\b", "a100"),
    (r"\bL40S\b", "l40s"),
    (r"\bGH200\b", "gh200"),
]


@dataclass(frozen=True)
class GpuDevice:
    """One schedulable device: a full GPU (``index`` as CUDA counts it) of a kind.

    ``minor`` numbers its device node, ``/dev/nvidia<minor>`` (NVML's minor number; the id when given
    with ``--gpus``).
    """

    id: str
    kind: str = DEFAULT_KIND
    name: str = ""
    uuid: str = ""
    minor: int | None = None

    @property
    def node_minor(self):
        return int(self.id) if self.minor is None else self.minor

    def matches(self, requested_kind):
        """A course asking for ``gpu`` takes any full GPU; otherwise kinds must match."""
        return requested_kind in (DEFAULT_KIND, self.kind)

    def to_dict(self):
        return {"id": self.id, "kind": self.kind, "name": self.name, "uuid": self.uuid, "minor": self.node_minor}


def kind_for_product(name):
    for pattern, kind in _KIND_PATTERNS:
        if re.search(pattern, name or ""):
            return kind
    return DEFAULT_KIND


def parse_gpus(spec, kind=DEFAULT_KIND):
    """Parse the ``--gpus`` value.

    ``None`` or ``""`` -> ``None`` (discover with NVML); ``"none"`` -> no GPUs;
    ``"0,1"`` -> two devices of ``kind``; ``"kubernetes"`` -> ``None`` too (see
    :func:`gpu_inventory`). Raises ValueError with what is expected.
    """
    if spec is None or str(spec).strip() == "":
        return None
    spec = str(spec).strip()
    if spec.lower() == "none":
        return []
    if spec.lower() == CLUSTER:
        return None
    ids = [part.strip() for part in spec.split(",")]
    if not all(re.fullmatch(r"[0-9]+", i) for i in ids):
        raise ValueError(f"--gpus {spec!r}: expected 'none', 'kubernetes' or a comma list of device ids such as '0,1'")
    if len(set(ids)) != len(ids):
        raise ValueError(f"--gpus {spec!r}: a device id is listed twice")
    return [GpuDevice(id=i, kind=kind) for i in ids]


def discover_nvml():
    """Devices that NVML reports; ``[]`` when there is no NVIDIA driver or no GPU."""
    try:
        import pynvml
    except ImportError:
        log.info("nvidia-ml-py is not installed: no GPU discovery")
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("No NVIDIA GPUs found (NVML: %s)", exc)
        return []
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = _text(pynvml.nvmlDeviceGetName(handle))
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            try:
                minor = pynvml.nvmlDeviceGetMinorNumber(handle)
            except pynvml.NVMLError:
                minor = None
            devices.append(GpuDevice(id=str(index), kind=kind_for_product(name), name=name, uuid=uuid, minor=minor))
        return devices
    finally:
        pynvml.nvmlShutdown()


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def gpu_inventory(spec=None, kind=DEFAULT_KIND):
    """The machine's GPUs: the ``--gpus`` override when given, else NVML.

    ``None`` for ``"kubernetes"``: the cluster's device plugin assigns GPUs to
    pods, so aifhub keeps no local pool.
    """
    if str(spec or "").strip().lower() == CLUSTER:
        return None
    override = parse_gpus(spec, kind)
    return discover_nvml() if override is None else override
