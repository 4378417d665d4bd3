"""GPU kinds an administrator defines, and how each sharing mode turns devices into what admission hands out.

A kind (``gpu_kinds`` entry) says how a course's sandbox gets its GPU:

- ``whole``: one physical GPU per holder (the device node and nothing else).
- ``mig``: one MIG instance of ``profile`` (``1g.10gb``), handed out by its UUID; memory and compute are
  partitioned by the hardware.
- ``timeslice``: one of ``replicas`` shares of a GPU; holders take turns on the whole GPU. **No memory or fault
  isolation**: one holder can fill the memory the others need, or read what they leave in it through a driver
  bug; so holders of different courses never share a GPU unless ``allow_cross_course`` is set.
- ``mps``: one of ``replicas`` MPS clients of a GPU, each capped to ``100 / replicas`` % of the SMs
  (``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``) and to ``memory`` (``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``); the caps
  are enforced by the MPS server, faults still reach every client of the GPU.

``weight`` is what an hour of the kind costs in GPU-hours (whole 1, a MIG ``Ng`` slice N/7, a share
1/replicas by default); the ledger's rate card records it.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..catalog.model import parse_memory
from ..ledger import units

MODES = ("whole", "mig", "timeslice", "mps")
SHARED = ("timeslice", "mps")
MAX_REPLICAS = 48  # the MPS server's client limit per GPU (Volta and later)
_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_PROFILE = re.compile(r"^([1-7])g\.([0-9]+)gb(\+me)?$")
_FIELDS = {"name", "sharing", "replicas", "memory", "profile", "weight", "devices", "allow_cross_course", "title"}


@dataclass(frozen=True)
class GpuKind:
    name: str
    sharing: str = "whole"
    replicas: int = 1
    memory: int | None = None  # bytes: MPS pins it, MIG profiles have it, time-slices only advertise it
    profile: str = ""  # MIG profile, e.g. 1g.10gb
    weight: float = 1.0  # GPU-hours per hour of a holder
    devices: tuple = ()  # physical device indexes this kind takes (whole, timeslice, mps); () = every full GPU
    allow_cross_course: bool = False
    title: str = ""

    @property
    def shared(self):
        return self.sharing in SHARED

    @property
    def weight_ppm(self):
        return units.weight_ppm(self.weight)

    def describe(self):
        """A learner-facing line: what one holder of this kind gets."""
        mem = f", {self.memory / 2**30:g} GB" if self.memory else ""
        return {
            "whole": f"a whole GPU{mem}",
            "mig": f"a MIG slice {self.profile} (own memory and compute)",
            "timeslice": f"a 1/{self.replicas} time-share of a GPU{mem} (memory not isolated)",
            "mps": f"an MPS share of a GPU: {100 // self.replicas}% of its SMs{mem}",
        }[self.sharing]

    def to_dict(self):
        return {
            "name": self.name,
            "sharing": self.sharing,
            "replicas": self.replicas,
            "memory": self.memory,
            "profile": self.profile,
            "weight": self.weight,
            "allow_cross_course": self.allow_cross_course,
            "title": self.title or self.describe(),
        }


def mig_fraction(profile):
    """``3g.40gb`` -> 3/7: a MIG profile's share of the GPU's compute (7 slices on A100/H100/H200/B200)."""
    m = _PROFILE.match(profile)
    return int(m.group(1)) / 7


def parse_kinds(entries):
    """Check ``gpu_kinds`` (a list of mappings); return ``{name: GpuKind}``. Raises ValueError saying what is wrong
    and what is expected."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ValueError(f"gpu_kinds must be a list of mappings (name, sharing, ...), got {type(entries).__name__}")
    kinds, taken = {}, {}
    for i, entry in enumerate(entries):
        where = f"gpu_kinds[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping with keys among {', '.join(sorted(_FIELDS))}")
        unknown = set(entry) - _FIELDS
        if unknown:
            raise ValueError(
                f"{where}: unknown field(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_FIELDS))})"
            )
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"{where}.name: a GPU kind is lowercase letters, digits, '.' and '-' (like h100-ts4), got {name!r}"
            )
        where = f"gpu_kinds[{name!r}]"
        if name in kinds:
            raise ValueError(f"{where}: defined twice")
        kind = _parse_one(where, name, entry)
        for d in kind.devices:
            if d in taken:
                raise ValueError(f"{where}.devices: GPU {d} is already given to kind '{taken[d]}'; a GPU has one mode")
            taken[d] = name
        kinds[name] = kind
    return kinds


def load_kinds(path):
    """``{name: GpuKind}`` from a YAML file holding a ``gpu_kinds:`` list; ValueError naming the file and the fault."""
    try:
        loaded = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(loaded, dict) or not isinstance(loaded.get("gpu_kinds"), list):
        raise ValueError(f"{path}: expected a mapping with a gpu_kinds: list")
    try:
        return parse_kinds(loaded["gpu_kinds"])
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _parse_one(where, name, entry):
    sharing = entry.get("sharing", "whole")
    if sharing not in MODES:
        raise ValueError(f"{where}.sharing: must be one of {', '.join(MODES)}, got {sharing!r}")
    replicas = entry.get("replicas", 1)
    if sharing in SHARED:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 2 <= replicas <= MAX_REPLICAS:
            raise ValueError(
                f"{where}.replicas: {sharing} needs a whole number of holders per GPU, 2 to {MAX_REPLICAS}, got {replicas!r}"
            )
    elif "replicas" in entry and replicas != 1:
        raise ValueError(
            f"{where}.replicas: only timeslice and mps kinds share a GPU between holders ({sharing} has 1)"
        )
    profile = entry.get("profile", "")
    if sharing == "mig":
        if not isinstance(profile, str) or not _PROFILE.match(profile):
            raise ValueError(
                f"{where}.profile: a mig kind names a MIG profile such as 1g.10gb or 3g.40gb, got {profile!r}"
            )
    elif profile:
        raise ValueError(f"{where}.profile: only mig kinds have a MIG profile")
    memory = entry.get("memory")
    if memory is not None:
        try:
            memory = parse_memory(str(memory))
        except ValueError as exc:
            raise ValueError(f"{where}.memory: {exc}") from None
    elif sharing == "mps":
        raise ValueError(f"{where}.memory: an mps kind pins each holder's GPU memory; give it, such as 20G")
    devices = entry.get("devices", [])
    if sharing == "mig" and devices:
        raise ValueError(f"{where}.devices: MIG instances are found by their profile; list no devices")
    if not isinstance(devices, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices
    ):
        raise ValueError(f"{where}.devices: a list of GPU indexes such as [0, 1], got {devices!r}")
    default_weight = {"whole": 1.0, "mig": mig_fraction(profile) if sharing == "mig" else 1.0}.get(sharing)
    weight = entry.get("weight", default_weight if default_weight is not None else 1 / replicas)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 8:
        raise ValueError(f"{where}.weight: GPU-hours per hour of one holder, a number in (0, 8], got {weight!r}")
    cross = entry.get("allow_cross_course", False)
    if not isinstance(cross, bool):
        raise ValueError(f"{where}.allow_cross_course: true or false, got {cross!r}")
    if cross and sharing not in SHARED:
        raise ValueError(f"{where}.allow_cross_course: only timeslice and mps kinds put several courses on one GPU")
    title = entry.get("title", "")
    if not isinstance(title, str):
        raise ValueError(f"{where}.title: a line of text, got {title!r}")
    return GpuKind(
        name=name,
        sharing=sharing,
        replicas=replicas if sharing in SHARED else 1,
        memory=memory,
        profile=profile,
        weight=float(weight),
        devices=tuple(devices),
        allow_cross_course=cross,
        title=title,
    )


@dataclass(frozen=True)
class Share:
    """What one holder of a device of a kind gets: the ids CUDA sees and the environment of its processes."""

    visible: str
    env: dict = field(default_factory=dict)


def share_env(kind, index):
    """Environment of a holder of a ``kind`` share of GPU ``index`` (MPS caps; nothing for other modes)."""
    if kind.sharing != "mps":
        return {}
    env = {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(max(1, 100 // kind.replicas))}
    if kind.memory:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"{index}={kind.memory // 2**20}M"
    return env
