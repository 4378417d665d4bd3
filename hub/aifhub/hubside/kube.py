"""The Kubernetes spawner: one pod per learner and course (``aifhub-kube``).

A KubeSpawner whose pod comes from the course, not from a profile list: the
same admission as the local spawner, then the course's image, resources, GPU
pool, priority and per-course volume. Every spawn starts from the configured
baseline, so nothing of a previous course (GPU limits, node selector) leaks
into the next one (KubeSpawner #546, #691).
"""

import asyncio
import copy
import json
import os
from pathlib import Path

from jupyterhub.spawner import SpawnException
from kubespawner import KubeSpawner
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default, validate

from ..catalog.images import load_images
from ..kube import podspec
from ..sandboxside.nbgrader_config import IMAGE_LEARNER_CONFIG
from .loopwatch import ensure_watching
from .mixin import CourseSpawnerMixin

# Traits a course, a pool or a group override may change: restored before every spawn.
CLEAN_TRAITS = (
    "image",
    "cpu_limit",
    "cpu_guarantee",
    "mem_limit",
    "mem_guarantee",
    "extra_resource_limits",
    "extra_resource_guarantees",
    "node_selector",
    "tolerations",
    "node_affinity_required",
    "node_affinity_preferred",
    "priority_class_name",
    "environment",
    "extra_labels",
    "extra_annotations",
    "volumes",
    "volume_mounts",
    "uid",
    "gid",
    "fs_gid",
    "privileged",
    "allow_privilege_escalation",
    "automount_service_account_token",
    "pod_security_context",
    "container_security_context",
    "working_dir",
    "storage_pvc_ensure",
    "storage_capacity",
    "storage_class",
    "extra_pod_config",
    "extra_container_config",
    "init_containers",
    "extra_containers",
    "lifecycle_hooks",
    "cmd",
    "default_url",
)
MERGED = ("node_selector", "environment", "extra_labels", "extra_pod_config")  # course values merge over the baseline
APPENDED = ("tolerations", "volumes", "volume_mounts")  # course values are added to the baseline's


def api_error_detail(exc):
    """The API server's message in a Kubernetes client error ('' when there is none)."""
    try:
        return json.loads(exc.body or "{}").get("message", "")
    except (AttributeError, TypeError, ValueError):
        return ""


def quota_refusal(exc):
    """The message for a pod or claim the namespace's ResourceQuota refused, or None for another error."""
    detail = api_error_detail(exc)
    if getattr(exc, "status", None) != 403 or "exceeded quota" not in detail:
        return None
    return (
        f"Your course has used up its share of the cluster right now: {detail.split(': ', 1)[-1]}. "
        "Try again when another sandbox of this course stops, or ask your instructor."
    )


def pod_event_message(event):
    """A pod's Kubernetes event as the learner reads it on the progress page."""
    message = event.get("message") or event.get("reason") or ""
    if event.get("reason") == "Preempting" or "preempt" in message.lower():
        return f"Making room on the cluster: {message}"
    source = (event.get("source") or {}).get("component") or event.get("reportingComponent") or "cluster"
    return f"[{event.get('type', 'Normal')}] {source}: {message}"


def describe_api_error(exc):
    """One line for an error from the Kubernetes client."""
    status = getattr(exc, "status", None)
    if status:
        try:
            detail = json.loads(exc.body or "{}").get("message", "")
        except (TypeError, ValueError):
            detail = ""
        return f"the API server answered {status} {getattr(exc, 'reason', '')}: {detail}".rstrip(": ")
    return f"the API server cannot be reached ({type(exc).__name__}: {exc})"


class KubeSandboxSpawner(CourseSpawnerMixin, KubeSpawner):
    """Start a course sandbox as a Kubernetes pod (``aifhub-kube``)."""

    isolated = True  # each sandbox is its own pod, under the restricted security context

    images_dir = Unicode(
        help="Directory of sandbox images (sandbox_images/), each with an image.yaml naming its repository and tag. "
        "Default: $AIFHUB_IMAGES, else sandbox_images/ in the working directory.",
    ).tag(config=True)
    registry = Unicode(
        "",
        help="Container registry prefixed to every sandbox image's repository (e.g. registry.example.org). "
        "Empty: the repository as written in image.yaml.",
    ).tag(config=True)
    gpu_pools = Dict(
        help="GPU pools keyed by GPU kind (the kind courses ask for, e.g. h100 or mig-1g.10gb; 'cpu' is the pool of "
        "CPU-only courses). Each pool may set: resource (default nvidia.com/gpu, or nvidia.com/<kind> for mig-* kinds), "
        "node_selector, tolerations, priority_class, environment, images (to pre-pull), cpu_guarantee_fraction, "
        "mem_guarantee_fraction.",
    ).tag(config=True)
    cpu_guarantee_fraction = Float(
        0.25,
        help="CPU guaranteed to a sandbox, as a fraction of the course's cpu (its limit). A pool may override it.",
    ).tag(config=True)
    mem_guarantee_fraction = Float(
        0.5,
        help="Memory guaranteed to a sandbox, as a fraction of the course's memory (its limit). A pool may override it.",
    ).tag(config=True)
    shm_fraction = Float(
        0.25,
        help="Size of the memory-backed /dev/shm (PyTorch data loaders), as a fraction of the memory limit it counts against.",
    ).tag(config=True)
    home_dir = Unicode(
        podspec.HOME,
        help="Where the learner's per-course volume is mounted in the sandbox (its home and working directory).",
    ).tag(config=True)
    course_pvc_name_template = Unicode(
        "aifhub-{username}--{course}",
        help="Name of each learner's per-course PersistentVolumeClaim. KubeSpawner's fields ({username}, {userid}, ...) "
        "and {course} are expanded.",
    ).tag(config=True)
    session_deadline_grace = Integer(
        900,
        help="Seconds past the course's max_session before Kubernetes ends the pod itself (activeDeadlineSeconds); "
        "the aifhub service stops sessions gracefully before that.",
    ).tag(config=True)
    grading_claim = Unicode(
        "aifhub-grading",
        help="PersistentVolumeClaim (ReadWriteMany) holding the courses' nbgrader directories (the aifhub service's "
        "GradingManager.grading_dir). An instructor's sandbox of their course mounts that course's directory, for "
        "formgrader. Empty: instructors' sandboxes get none.",
    ).tag(config=True)
    grading_sub_path = Unicode(
        "courses/{course}",
        help="Where a course's nbgrader directory lies on grading_claim ({course}: the course id).",
    ).tag(config=True)
    grading_mount_path = Unicode(
        help="Where an instructor's sandbox sees its course's nbgrader directory (inside the home, where formgrader "
        "looks). Default: <home_dir>/course-grading.",
    ).tag(config=True)
    course_materials = Bool(
        True,
        help="Give each pod an init container (course-materials, the course's own image, the learner's user) that "
        "fetches the course's materials from the aifhub service and unpacks them into the learner's per-course volume "
        "without replacing the learner's files (see aifhub.kube.materials). Pods reach the service at "
        "$AIFHUB_EXCHANGE_URL.",
    ).tag(config=True)
    clean_traits = List(
        Unicode(),
        default_value=list(CLEAN_TRAITS),
        help="Spawner traits restored to their configured values before each spawn, so a previous course's "
        "settings never leak into the next one.",
    ).tag(config=True)

    @default("images_dir")
    def _images_dir_default(self):
        return os.environ.get("AIFHUB_IMAGES", str(Path("sandbox_images").resolve()))

    @default("gpu_pools")
    def _gpu_pools_default(self):
        return podspec.validate_pools(copy.deepcopy(podspec.DEFAULT_POOLS))

    @default("grading_mount_path")
    def _grading_mount_path_default(self):
        return f"{self.home_dir.rstrip('/')}/course-grading"

    @default("storage_capacity")
    def _storage_capacity_default(self):
        return "10Gi"

    @validate("gpu_pools")
    def _validate_gpu_pools(self, proposal):
        return podspec.validate_pools(proposal.value)  # PodSpecError (a ValueError) says what is wrong

    @validate("cpu_guarantee_fraction", "mem_guarantee_fraction", "shm_fraction")
    def _validate_fraction(self, proposal):
        if not 0 < proposal.value <= 1:
            raise ValueError(f"{proposal.trait.name} must be in (0, 1], got {proposal.value}")
        return proposal.value

    @validate("course_pvc_name_template")
    def _validate_pvc_template(self, proposal):
        if "{course}" not in proposal.value:
            raise ValueError(
                f"course_pvc_name_template must contain {{course}} (one volume per course), got {proposal.value!r}"
            )
        return proposal.value

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._baseline = {name: copy.deepcopy(getattr(self, name)) for name in self.clean_traits}

    # -- clean settings per spawn ----------------------------------------------

    def restore_baseline(self):
        """Put every course-managed trait back to its configured value."""
        for name, value in self._baseline.items():
            setattr(self, name, copy.deepcopy(value))

    async def apply_group_overrides(self):
        """Deferred: :meth:`configure_for_course` applies them onto the clean baseline."""

    def course_image(self, name):
        return load_images(self.images_dir).get(name)

    def course_pvc_name(self, course_id):
        return self._expand_user_properties(self.course_pvc_name_template.replace("{course}", course_id))

    async def configure_for_course(self, course, role="learner"):
        """Baseline, then group overrides, then the course (a course summary dict); an instructor's sandbox
        (``role`` instructor or admin) also gets the course's nbgrader directory."""
        self.restore_baseline()
        self._course = course
        await super().apply_group_overrides()
        self.pvc_name = self.course_pvc_name(course["id"])
        self._pvc_exists = False  # creating an existing claim answers 409, which KubeSpawner accepts
        settings = podspec.pod_settings(
            course,
            self.course_image(course["sandbox"]["image"]),
            self.gpu_pools,
            pvc_name=self.pvc_name,
            registry=self.registry,
            cpu_fraction=self.cpu_guarantee_fraction,
            mem_fraction=self.mem_guarantee_fraction,
            shm_fraction=self.shm_fraction,
            home=self.home_dir,
            deadline_grace=self.session_deadline_grace,
        )
        if not settings["priority_class_name"]:
            settings["priority_class_name"] = self.priority_class_name
        if role in ("instructor", "admin") and self.grading_claim:
            grading = podspec.grading_settings(
                course, self.grading_claim, self.grading_sub_path, self.grading_mount_path
            )
            for name in ("volumes", "volume_mounts"):
                settings[name] = settings[name] + grading[name]
            for name in ("environment", "extra_labels"):
                settings[name] = {**settings[name], **grading[name]}
        elif role not in ("instructor", "admin"):  # a learner: nbgrader's instructor tools off (the image's folder)
            settings["environment"] = {**settings["environment"], "JUPYTER_CONFIG_PATH": IMAGE_LEARNER_CONFIG}
        for name, value in settings.items():
            current = getattr(self, name)
            if name in MERGED and isinstance(current, dict):
                value = {**current, **value}
            elif name in APPENDED:
                value = self._append(current, value)
            setattr(self, name, value)
        return settings

    @staticmethod
    def _append(current, extra):
        if isinstance(current, dict):  # KubeSpawner also takes {key: item} forms
            return {**current, **{f"zz-aifhub-{i}": item for i, item in enumerate(extra)}}
        return list(current) + list(extra)

    async def get_pod_manifest(self):
        """KubeSpawner's pod, with the course-materials init container in front of JupyterLab."""
        pod = await super().get_pod_manifest()
        if self.course_materials and getattr(self, "_course", None):
            pod.spec.init_containers = list(pod.spec.init_containers or []) + [self._materials_container(pod)]
        return pod

    def _materials_container(self, pod):
        from kubernetes_asyncio.client.models import V1Container, V1EnvVar, V1ResourceRequirements

        main = pod.spec.containers[0]
        wanted = ("JUPYTERHUB_API_TOKEN", "AIFHUB_EXCHANGE_URL", "AIFHUB_COURSE")
        env = [e for e in main.env or [] if e.name in wanted] + [V1EnvVar(name="HOME", value=self.home_dir)]
        small = {"cpu": "500m", "memory": "256Mi"}
        return V1Container(
            name="course-materials",
            image=main.image,
            image_pull_policy=main.image_pull_policy,
            command=["python", "-m", "aifhub.kube.materials", self.home_dir],
            working_dir=self.home_dir,
            env=env,
            security_context=main.security_context,
            resources=V1ResourceRequirements(limits=small, requests=small),
            volume_mounts=[m for m in main.volume_mounts or [] if m.mount_path == self.home_dir],
        )

    async def load_user_options(self):
        """Courses replace profiles: the only user option is the course, already applied."""
        if self.profile_list:
            self.log.warning("KubeSpawner.profile_list is ignored by aifhub-kube: courses define sandboxes.")

    # -- state ---------------------------------------------------------------------

    def get_state(self):
        state = super().get_state()
        if getattr(self, "admission", None):
            state["aifhub"] = {"session_id": self.admission.get("session_id"), "course": self.admission["course"]["id"]}
        return state

    def load_state(self, state):
        super().load_state(state)
        if "aifhub" in state:
            saved = state["aifhub"]
            self.admission = {"session_id": saved["session_id"], "devices": [], "course": {"id": saved["course"]}}

    def clear_state(self):
        super().clear_state()
        self.admission = None

    # -- lifecycle -------------------------------------------------------------------

    # -- progress ---------------------------------------------------------------------

    async def progress(self):
        """aifhub's own steps (admission, the pod asked for), then the pod's progress as it comes: why it waits for a
        node (the scheduler's current reason: no free GPU), image pulls, preemption, the containers starting."""
        if not hasattr(self, "_events"):
            self._progress_reset()
        if self.events_enabled:
            await self._start_watching_events()
        sent, seen, percent, said = 0, 0, 0, ""
        while True:
            while sent < len(self._events):
                event = self._events[sent]
                sent += 1
                percent = max(percent, event["progress"])
                yield event
            reason = self.scheduler_reason()
            if reason and reason != said:
                said = reason
                percent = max(percent, 40)
                yield {
                    "progress": percent,
                    "message": f"Waiting for room on the cluster (the scheduler says: {reason})",
                }
            pod_events = self.events if self.events_enabled else []
            for event in pod_events[seen:]:
                if event.get("reason") == "FailedScheduling":
                    continue  # the scheduler keeps one event per pod with its first message: the pod's condition is current
                percent = min(89, max(percent, 40) + (90 - max(percent, 40)) // 4)
                yield {"progress": percent, "message": pod_event_message(event), "raw_event": event}
            seen = len(pod_events)
            self._events_changed.clear()
            try:
                await asyncio.wait_for(self._events_changed.wait(), timeout=1)
            except asyncio.TimeoutError:
                pass

    def scheduler_reason(self):
        """Why the scheduler has not placed this spawn's pod (its PodScheduled condition), or ''.

        Not the FailedScheduling events: the scheduler's event recorder folds every later attempt of a pod into a
        series of its first event, whose message stays the first reason (say, a volume not bound yet)."""
        reflector = self.pod_reflector
        pod = reflector.pods.get(f"{self.namespace}/{self.pod_name}") if reflector else None
        for cond in ((pod or {}).get("status") or {}).get("conditions") or []:
            if (
                cond.get("type") == "PodScheduled"
                and cond.get("status") == "False"
                and cond.get("reason") == "Unschedulable"
            ):
                return cond.get("message") or ""
        return ""

    async def _mark_running(self):
        """Tell the service the pod runs: the session's charge starts now (not at admission, while it was pending)."""
        for attempt in range(5):
            try:
                await self.service.running(self.user.name, self.name, pod=f"{self.namespace}/{self.pod_name}")
                return
            except SpawnException as exc:
                self.log.warning(
                    "Telling the service that %s runs failed (%s); retrying", self.pod_name, exc.log_message
                )
                await asyncio.sleep(2**attempt)
        self.log.error("The service never heard that %s runs: its session stays uncharged", self.pod_name)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self):
        ensure_watching(logger=self.log)  # the hub's event loop, watched from the first spawn on (/hub/metrics)
        admission = await self.admit(pending=True)  # charged once the pod runs, not while it waits for a node
        try:
            try:
                await self.configure_for_course(admission["course"], admission.get("role", "learner"))
            except podspec.PodSpecError as exc:
                raise SpawnException(str(exc), reason="sandbox-spec", status_code=409) from exc
            pod = await self.get_pod_manifest()  # built again by KubeSpawner; here to tell what is asked for
            limits = pod.spec.containers[0].resources.limits
            self.log.info(
                "Pod %s for %s (course %s): image %s, limits %s, node selector %s, priority class %s",
                self.pod_name,
                self.user.name,
                admission["course"]["id"],
                self.image,
                limits,
                self.node_selector,
                self.priority_class_name,
            )
            gpus = {k: v for k, v in limits.items() if k not in ("cpu", "memory")}
            where = ", ".join(f"{v} × {k}" for k, v in gpus.items()) or "CPU only"
            self.emit(40, f"Requesting a pod ({where}, image {self.image})")
            url = await self._create_pod()
        except BaseException:
            await self.release("start failed")
            raise
        await self._mark_running()
        self.emit(90, "Pod running; waiting for JupyterLab to be ready")
        return url

    async def _create_pod(self):
        try:
            return await self._start()
        except SpawnException:
            raise
        except (asyncio.TimeoutError, TimeoutError) as exc:
            reason = self.scheduler_reason()
            why = (
                f"the cluster had no room for it: {reason}"
                if reason
                else "the cluster may have no free node for this course's GPU right now"
            )
            raise SpawnException(
                f"Your sandbox pod did not start within {self.start_timeout} s: {why}. Nothing was charged for the "
                "wait. Try again later or tell an administrator.",
                reason="pod-timeout",
                status_code=503,
                log_message=f"{self.pod_name} did not start: {exc} {reason}",
            ) from exc
        except Exception as exc:
            refusal = quota_refusal(exc)
            if refusal:
                raise SpawnException(
                    refusal,
                    reason="cluster-quota",
                    status_code=409,
                    log_message=f"ResourceQuota refused {self.pod_name}: {api_error_detail(exc)}",
                ) from exc
            self._drop_failed_reflectors()
            raise SpawnException(
                f"The sandbox pod could not be created: {describe_api_error(exc)}. "
                "This is a cluster problem, not yours; an administrator can find details in the hub log.",
                reason="kubernetes-api",
                status_code=503,
                log_message=f"Creating {self.pod_name} in {self.namespace} failed: {exc!r}",
            ) from exc

    def _drop_failed_reflectors(self):
        """Forget pod/event watchers that never loaded, so the next call starts fresh ones.

        When the API server cannot be reached, a watcher's first load fails or is
        cancelled; KubeSpawner would keep it and wait for it forever in stop().
        """
        for key, reflector in list(type(self).reflectors.items()):
            loaded = reflector.first_load_future
            if not loaded.done() or loaded.cancelled() or loaded.exception() is not None:
                type(self).reflectors.pop(key, None)
                self.log.warning("Dropped the %s watcher of namespace %s: it never loaded", key[0], reflector.namespace)

    async def stop(self, now=False):
        await super().stop(now=now)
        await self.release("stopped")
        self.admission = None
