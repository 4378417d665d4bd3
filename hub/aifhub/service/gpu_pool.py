"""GPU devices on one machine: NVML discovery and the ``--gpus`` override, turned into what admission hands out
by the admin's GPU kinds (:mod:`aifhub.gpus.kinds`): whole GPUs, MIG instances by UUID, and time-slice or MPS
shares (N holders per GPU, each share one claimable id such as ``0:2``)."""

import logging
import re
from dataclasses import dataclass, field

from ..gpus.kinds import share_env
from ..gpus.nvml import Nvml, Physical

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
    sharing: str = "whole"  # whole | mig | timeslice | mps
    parent: str = ""  # the physical GPU's index (MIG instances and shares); the id itself for whole GPUs
    visible: str = ""  # what CUDA_VISIBLE_DEVICES names: the index, a MIG UUID, or the shared GPU's index
    env: dict = field(default_factory=dict, hash=False, compare=False)  # MPS caps of a share
    one_course: bool = False  # a share whose GPU holds one course's sandboxes at a time (no memory isolation)

    @property
    def node_minor(self):
        if self.minor is not None:
            return self.minor
        return int(self.parent or self.id)

    @property
    def gpu(self):
        """The physical GPU this id lies on."""
        return self.parent or self.id

    def matches(self, requested_kind):
        """A course asking for ``gpu`` takes any whole GPU; otherwise kinds must match."""
        return requested_kind == self.kind or (requested_kind == DEFAULT_KIND and self.sharing == "whole")

    def to_dict(self):
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "uuid": self.uuid,
            "minor": self.node_minor,
            "sharing": self.sharing,
            "gpu": self.gpu,
            "visible": self.visible or self.id,
            "env": dict(self.env),
        }


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


def discover_nvml(reader=None):
    """Whole GPUs that NVML reports (MIG-mode GPUs left out); ``[]`` when there is no NVIDIA driver or no GPU."""
    return [
        GpuDevice(id=str(p.index), kind=kind_for_product(p.name), name=p.name, uuid=p.uuid, minor=p.minor)
        for p in (reader or Nvml()).discover()
        if not p.mig_mode
    ]


def expand(physical, kinds):
    """What admission hands out on these GPUs (:class:`~aifhub.gpus.nvml.Physical`) under ``kinds``
    (``{name: GpuKind}``): a kind listing ``devices`` takes those GPUs; the first non-MIG kind without a list takes
    every other full GPU; MIG kinds take the instances of their profile. A GPU no kind takes stays a whole GPU of
    its product's kind."""
    claimed = {d: k for k in kinds.values() for d in k.devices}
    default = next((k for k in kinds.values() if k.sharing != "mig" and not k.devices), None)
    out = []
    for p in physical:
        base = {"name": p.name, "minor": p.minor, "parent": str(p.index)}
        if p.mig_mode:
            for m in p.mig:
                kind = next((k for k in kinds.values() if k.sharing == "mig" and k.profile == m.profile), None)
                if kind is not None:
                    out.append(GpuDevice(id=m.uuid, kind=kind.name, uuid=m.uuid, sharing="mig", visible=m.uuid, **base))
            continue
        kind = claimed.get(p.index) or default
        if kind is None:
            out.append(
                GpuDevice(id=str(p.index), kind=kind_for_product(p.name), name=p.name, uuid=p.uuid, minor=p.minor)
            )
        elif kind.shared:
            for r in range(1, kind.replicas + 1):
                out.append(
                    GpuDevice(
                        id=f"{p.index}:{r}",
                        kind=kind.name,
                        uuid=p.uuid,
                        sharing=kind.sharing,
                        visible=str(p.index),
                        env=share_env(kind, p.index),
                        one_course=not kind.allow_cross_course,
                        **base,
                    )
                )
        else:
            out.append(GpuDevice(id=str(p.index), kind=kind.name, name=p.name, uuid=p.uuid, minor=p.minor))
    return out


def gpu_inventory(spec=None, kind=DEFAULT_KIND, kinds=None, reader=None):
    """The machine's GPUs: the ``--gpus`` override when given, else NVML (``reader``: the NVML adapter, a
    recording in tests); with GPU ``kinds``, shared out by their modes (:func:`expand`).

    ``None`` for ``"kubernetes"``: the cluster's device plugin assigns GPUs to
    pods, so aifhub keeps no local pool.
    """
    if str(spec or "").strip().lower() == CLUSTER:
        return None
    override = parse_gpus(spec, kind)
    if not kinds:
        return discover_nvml(reader) if override is None else override
    if override is None:
        physical = (reader or Nvml()).discover()
    else:
        physical = [Physical(index=int(d.id), minor=int(d.id)) for d in override]
    return expand(physical, kinds)
