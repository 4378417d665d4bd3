"""The grading settings: one :class:`GradingSettings` with every option of autograding, the exchange and the
courses' gradebooks, checked when set, and what follows from them (the folders, the graded kernels' limits).

Users configure them as ``GradingManager.<name>`` (the facade, :mod:`.manager`, subclasses this class); the
queue, course set-up, instructors' steps and the exchange's store are handed the one instance and read it when
they act, so a changed value applies to the next job or hand-in.
"""

import os
import shutil
import subprocess
from pathlib import Path

from traitlets import Dict, Enum, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .. import idranges
from ..catalog.model import parse_memory
from . import gradebooks


def network_mode_default():
    """'unshare' when a graded kernel can get a network namespace of its own here, else 'none'.

    As root that takes util-linux's unshare; otherwise also user namespaces, which some kernels forbid.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return "none"
    if os.geteuid() == 0:
        return "unshare"
    try:
        probe = subprocess.run([unshare, "--map-current-user", "--net", "--", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "none"
    return "unshare" if probe.returncode == 0 else "none"


class GradingSettings(LoggingConfigurable):
    """Every grading option: workers, timeouts and limits, the backend, the folders, the gradebooks.

    Configured as ``GradingManager.<name>``: :class:`~.manager.GradingManager` is this class's subclass, so
    users' configurations keep their spelling; the parts of :mod:`aifhub.grading` are handed the settings."""

    workers = Integer(0, help="Parallel autograding workers. 0: one per CPU core.").tag(config=True)
    cell_timeout = Integer(60, help="Seconds one cell may run while autograding before it is interrupted.").tag(
        config=True
    )
    notebook_timeout = Integer(
        600,
        help="Seconds grading one submission may take in all (every notebook and kernel start); "
        "past it the job is stopped and fails with reason 'timeout'.",
    ).tag(config=True)
    cpu_seconds = Integer(0, help="CPU seconds a graded kernel may use (RLIMIT_CPU). 0: the notebook timeout.").tag(
        config=True
    )
    memory_limit = Unicode(
        "2G",
        help="Memory one grading job may use, e.g. 2G or 512Mi: as root, all its processes together (a memory "
        "cgroup without swap, what they write in the scratch tmpfs included); each process also gets it as "
        "RLIMIT_DATA.",
    ).tag(config=True)
    processes = Integer(
        256,
        help="Processes and threads one grading job may have at once: as root, all its processes together (a "
        "pids cgroup); also the kernel's uid's RLIMIT_NPROC.",
    ).tag(config=True)
    max_submission_size = Unicode("20M", help="Largest submission a learner may hand in (uncompressed), e.g. 20M.").tag(
        config=True
    )
    scratch_size = Unicode(
        "1G",
        help="What a graded kernel may write in all (its work folder, home, /tmp, /dev/shm: one tmpfs per job), "
        "e.g. 1G or 512M. As root only; past it writes fail with 'No space left on device'.",
    ).tag(config=True)
    max_submission_files = Integer(
        1000, help="Most files one submission may hold (a tar.gz of many tiny files is refused with 413)."
    ).tag(config=True)
    max_submissions = Integer(
        100,
        help="Hand-ins of one assignment the service keeps per learner; past it a learner's submit is refused "
        "(429) until an instructor raises it.",
    ).tag(config=True)
    submissions_per_minute = Integer(
        10, help="Hand-ins of one assignment a learner may make per minute; more are refused with 429."
    ).tag(config=True)
    course_submission_sizes = Dict(
        {},
        help="Per-course submission size limits that override max_submission_size: {course id: size}.",
    ).tag(config=True)
    first_uid = Integer(
        idranges.GRADING_FIRST,
        help="First uid of the range graded kernels run under when the service runs as root "
        "(distinct from the learners' range).",
    ).tag(config=True)
    uid_count = Integer(
        idranges.GRADING_COUNT, help="How many uids the grading range holds; job n runs as first_uid + n % uid_count."
    ).tag(config=True)
    network = Enum(
        ["unshare", "none"],
        help="How graded kernels lose the network: 'unshare' (a network namespace "
        "of their own, util-linux) or 'none' (not isolated; only for machines without unshare).",
    ).tag(config=True)
    gpu_wait = Integer(5, help="Seconds a GPU course's job waits before asking again when every GPU is busy.").tag(
        config=True
    )
    max_attempts = Integer(2, help="Times a job is tried when its worker dies under it (not for timeouts).").tag(
        config=True
    )
    gradebook = Enum(
        ["auto", "sqlite", "postgresql"],
        "auto",
        help="Where courses' nbgrader gradebooks live: 'sqlite' (gradebook.db in each course directory), "
        "'postgresql' (a schema and login role per course, see gradebook_admin_url), or 'auto': PostgreSQL when "
        "the service's database is PostgreSQL, else SQLite. A course keeps the kind its gradebook was made in; "
        "a SQLite gradebook of a course is copied into PostgreSQL once, when PostgreSQL is chosen.",
    ).tag(config=True)
    gradebook_admin_url = Unicode(
        help="SQLAlchemy URL of the PostgreSQL database that holds the courses' gradebooks, with a role that may "
        "create roles and schemas (CREATEROLE). Default: the service's own database (AifhubService.db_url).",
    ).tag(config=True)
    backend = Enum(
        ["local", "kubernetes"],
        "local",
        help="Where graded code runs: 'local' (a sandboxed kernel per submission on this machine) or 'kubernetes' "
        "(each notebook in a Job of its own, in the course's sandbox image and GPU pool, with no network; the "
        "trusted steps and the gradebook stay in the service).",
    ).tag(config=True)
    grading_dir = Unicode(
        help="Folder of the courses' nbgrader directories (<grading_dir>/<course>/). Default: <state>/grading. "
        "Course directories found in <state>/grading when it is elsewhere are moved there on start.",
    ).tag(config=True)
    scratch_dir = Unicode(
        help="Folder of the grading jobs' scratch space (a folder per job). Default: <state>/grading-scratch. "
        "With the kubernetes backend it must lie on the grading volume (kube_volume_root).",
    ).tag(config=True)
    kube_volume_root = Unicode(
        help="Where the service's pod mounts the grading volume (kube_claim); grading pods mount their job's folder "
        "of it by its path below this. Default: scratch_dir.",
    ).tag(config=True)
    # the old spellings of KubeSettings.namespace, kube_config, registry and gpu_pools (read from the config by
    # KubeSettings; declared here so that a configuration that sets them still loads without a warning)
    kube_namespace = Unicode(help="Old spelling of KubeSettings.namespace (removed in aifhub 0.4.0).").tag(config=True)
    kube_config = Unicode(help="Old spelling of KubeSettings.kube_config (removed in aifhub 0.4.0).").tag(config=True)
    kube_registry = Unicode(help="Old spelling of KubeSettings.registry (removed in aifhub 0.4.0).").tag(config=True)
    kube_gpu_pools = Dict(help="Old spelling of KubeSettings.gpu_pools (removed in aifhub 0.4.0).").tag(config=True)
    kube_claim = Unicode(
        "aifhub-grading",
        help="PersistentVolumeClaim (ReadWriteMany) mounted at kube_volume_root, "
        "of which each grading pod mounts its job's folder.",
    ).tag(config=True)
    kube_cpu = Unicode("1", help="CPU limit (and request) of a grading pod, a Kubernetes quantity.").tag(config=True)
    kube_start_timeout = Integer(
        600,
        help="Seconds a grading pod may wait for a node (a free GPU) and its image before its job fails.",
    ).tag(config=True)
    first_course_gid = Integer(
        idranges.COURSE_GID_FIRST,
        help="First group id handed to courses' grading directories (instructors' sandboxes join their "
        "course's group for formgrader); each course gets the next free one, kept for good.",
    ).tag(config=True)

    @default("network")
    def _network_default(self):
        return network_mode_default()

    @validate("memory_limit", "max_submission_size", "scratch_size")
    def _validate_size(self, proposal):
        parse_memory(proposal.value)  # raises ValueError naming the expected form
        return proposal.value

    @validate("course_submission_sizes")
    def _validate_sizes(self, proposal):
        for course, size in proposal.value.items():
            try:
                parse_memory(str(size))
            except ValueError as exc:
                raise ValueError(f"course_submission_sizes[{course!r}]: {exc}")
        return proposal.value

    @default("grading_dir")
    def _grading_dir_default(self):
        return str(self.state_dir / "grading")

    @default("scratch_dir")
    def _scratch_dir_default(self):
        return str(self.state_dir / "grading-scratch")

    @default("kube_volume_root")
    def _kube_volume_root_default(self):
        return self.scratch_dir

    @default("gradebook_admin_url")
    def _gradebook_admin_url_default(self):
        return self.service_db_url if gradebooks.is_postgres(self.service_db_url) else ""

    @validate("gradebook_admin_url")
    def _validate_gradebook_admin_url(self, proposal):
        if proposal.value and not gradebooks.is_postgres(proposal.value):
            raise ValueError(
                f"gradebook_admin_url must be a postgresql:// URL, got {proposal.value.split(':')[0]}://..."
            )
        return proposal.value

    @validate(
        "cell_timeout",
        "notebook_timeout",
        "processes",
        "uid_count",
        "max_submission_files",
        "max_submissions",
        "submissions_per_minute",
    )
    def _validate_positive(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"{proposal.trait.name} must be positive, got {proposal.value}")
        return proposal.value

    def __init__(self, state_dir, service_db_url="", isolated=None, **kw):
        """``state_dir``: the service's state folder (the folders' defaults lie below it); ``service_db_url``: the
        service's database (the PostgreSQL gradebooks' default home); ``isolated``: graded kernels run under
        their own uids (default: when running as root)."""
        self.state_dir = Path(state_dir).resolve()
        self.service_db_url = service_db_url or ""
        super().__init__(**kw)
        self.root = Path(self.grading_dir).resolve()
        self.scratch = Path(self.scratch_dir).resolve()
        self.kube_volume = Path(self.kube_volume_root).resolve()
        if self.backend == "kubernetes" and not self.scratch.is_relative_to(self.kube_volume):
            raise ValueError(
                f"GradingManager.scratch_dir ({self.scratch}) must lie on the grading volume that grading "
                f"pods mount, kube_volume_root ({self.kube_volume})"
            )
        self.isolated = (os.geteuid() == 0) if isolated is None else isolated

    @property
    def worker_count(self):
        return self.workers or os.cpu_count() or 1

    @property
    def gradebook_kind(self):
        if self.gradebook == "auto":
            return "postgresql" if self.gradebook_admin_url else "sqlite"
        return self.gradebook

    def size_limit(self, course_id):
        """The largest hand-in of ``course_id``, in bytes (its own limit, else max_submission_size)."""
        return parse_memory(str(self.course_submission_sizes.get(course_id, self.max_submission_size)))

    def limits(self):
        """A graded kernel's resource limits (local backend)."""
        return {
            "cpu_seconds": self.cpu_seconds or self.notebook_timeout,
            "memory_bytes": parse_memory(self.memory_limit),
            "file_bytes": 1024**3,
            "processes": self.processes,
        }
