"""The test kubelet: simulated nodes, real pods.

One process stands for the kubelets of every simulated node: it registers the nodes (capacity,
GPU operator labels, taints), keeps their leases and status alive, and runs each pod the
scheduler binds to one of them, for real, in bubblewrap (:mod:`.runner`): image "pull" (instant,
or a modelled delay per image and node, reported in the node's image list as a kubelet does),
volumes (PersistentVolumeClaims through their PersistentVolumes, emptyDir, configMap, secret,
projected service-account tokens, downward API), environment (values, field and resource
references, config maps, secrets), init containers, restart policy, activeDeadlineSeconds,
graceful deletion (SIGTERM, the grace period, SIGKILL), the device plugin's allocation of GPUs
and MIG slices (NVIDIA_VISIBLE_DEVICES), pod status and IP, Services (addresses, forwarders, /etc/hosts and
variables: :mod:`.servicenet`) and stand-ins for the zero-to-jupyterhub chart's images (:mod:`.images`). It also
provisions volumes for PersistentVolumeClaims of its StorageClass (as a local-path provisioner does). Of the kubelet
API it serves pod logs (``kubectl logs``: ``/containerLogs/<namespace>/<pod>/<container>``, over TLS on each node's
address, port 10250, to clients with a certificate of the cluster's CA, the API server's); not exec, attach or
port-forward.

Run as ``python -m localcluster.kubelet CONFIG.json``; :mod:`.cluster` starts it.
"""

import base64
import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from . import images, runner
from .nodes import PROVISIONER, Devices, node_object, node_status, pool_nodes
from .rest import MERGE, Api, ApiError
from .servicenet import ServiceNet

log = logging.getLogger("test-kubelet")

LEASE_SECONDS = 40
RENEW_SECONDS = 10
STATUS_SECONDS = 60


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text):
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels, matchExpressions) against a pod's labels."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def quantity(text):
    """A Kubernetes quantity as a number (cpu cores, bytes)."""
    text = str(text)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


class ImagePullError(RuntimeError):
    pass


class Images:
    """The images on one node: pulled once (with the modelled delay), then present."""

    def __init__(self, pull_seconds, preloaded=()):
        self.pull_seconds = pull_seconds
        self.present = {ref: 1 for ref in preloaded}
        self.pulling = {}
        self.lock = threading.Lock()

    def pull(self, ref):
        """Returns the seconds spent pulling (0 when present). Raises ImagePullError."""
        host = ref.split("/", 1)[0] if "/" in ref else ""
        if host.endswith(".invalid") or host == "invalid":
            raise ImagePullError(
                f'failed to pull and unpack image "{ref}": failed to resolve reference "{ref}": '
                f"dial tcp: lookup {host}: no such host"
            )
        with self.lock:
            if ref in self.present:
                return 0.0
            event = self.pulling.get(ref)
            first = event is None
            if first:
                event = self.pulling[ref] = threading.Event()
        started = time.monotonic()
        if first:
            time.sleep(self.pull_seconds)
            with self.lock:
                self.present[ref] = int(self.pull_seconds * 2e8) or 10**8  # size reported to the scheduler
                del self.pulling[ref]
            event.set()
        else:
            event.wait()
        return time.monotonic() - started

    def listing(self):
        with self.lock:
            return sorted(self.present.items())


class Node:
    def __init__(self, spec, address, pull_seconds, preloaded):
        self.spec = spec
        self.name = spec["name"]
        self.address = address
        self.devices = Devices(spec["capacity"])
        self.images = Images(pull_seconds, preloaded)
        prefix = address.rsplit(".", 1)[0]
        self.free_ips = [f"{prefix}.{i}" for i in range(2, 255)]
        self.ip_lock = threading.Lock()
        self.images_reported = None

    def take_ip(self):
        with self.ip_lock:
            return self.free_ips.pop(0)

    def give_ip(self, ip):
        with self.ip_lock:
            if ip and ip not in self.free_ips:
                self.free_ips.append(ip)


class Container:
    """One running container: its bwrap process and the pid of its pid 1."""

    def __init__(self, name, argv, log_path):
        self.name = name
        r, w = os.pipe()
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen(
                argv[:1] + ["--info-fd", str(w)] + argv[1:],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(w,),
            )
        os.close(w)
        with os.fdopen(r) as info:
            text = info.read()
        try:
            self.child = json.loads(text)["child-pid"]
        except (ValueError, KeyError):
            self.child = None
        self.started = now()

    def signal(self, sig):
        """To the container's pid 1 (SIGKILL ends its whole PID namespace), and SIGKILL to bwrap too."""
        targets = [self.child] if self.child else []
        if sig == signal.SIGKILL or not self.child:
            targets.append(self.proc.pid)
        for pid in targets:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def poll(self):
        return self.proc.poll()


class PodWorker(threading.Thread):
    """Runs one pod from its binding to its end (or deletion), reporting its status."""

    def __init__(self, kubelet, node, pod):
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.kubelet, self.api, self.node = kubelet, kubelet.api, node
        self.pod = pod
        meta = pod["metadata"]
        self.ns, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}"
        self.dir = kubelet.state / "pods" / self.uid
        self.deleting = threading.Event()
        self.gone = threading.Event()  # the pod object is gone (force-deleted)
        self.grace = 30
        self.ip = None
        self.containers = {}
        self.statuses = {}
        self.restarts = {}
        self.devices = []
        self.start_time = None

    # -- API -----------------------------------------------------------------------

    def event(self, reason, message, kind="Normal", container=None):
        self.kubelet.event(self.pod, reason, message, kind, container)

    def patch_status(self, status):
        if self.gone.is_set():
            return
        try:
            self.api.patch(f"{self.path}/status", {"metadata": {"uid": self.uid}, "status": status})
        except ApiError as exc:
            if exc.status == 404:
                self.gone.set()
            elif exc.status != 409:
                log.warning("status of %s/%s: %s", self.ns, self.name, exc)

    def conditions(self, ready, initialized=True):
        t = now()
        return [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True" if initialized else "False", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": t},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": t},
        ]

    def container_status(self, container, state, ready=False, init=False):
        status = {
            "name": container["name"],
            "image": container["image"],
            "imageID": f"aifhub-test://{container['image']}",
            "ready": ready,
            "started": "running" in state,
            "restartCount": self.restarts.get(container["name"], 0),
            "state": state,
        }
        if "running" in state or "terminated" in state:
            status["containerID"] = f"bwrap://{self.uid}/{container['name']}"
        last = self.statuses.get(container["name"], {}).get("state", {})
        if "terminated" in last and "terminated" not in state:
            status["lastState"] = {"terminated": last["terminated"]}
        self.statuses[container["name"]] = status
        return status

    def report(self, phase, ready=False, initialized=True, reason=None, message=None, init_statuses=None):
        spec = self.pod["spec"]
        status = {
            "phase": phase,
            "hostIP": self.node.address,
            "hostIPs": [{"ip": self.node.address}],
            "conditions": self.conditions(ready, initialized),
            "containerStatuses": [self.statuses[c["name"]] for c in spec["containers"] if c["name"] in self.statuses],
        }
        if self.start_time:
            status["startTime"] = self.start_time
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        if init_statuses is not None:
            status["initContainerStatuses"] = init_statuses
        if reason:
            status["reason"], status["message"] = reason, message or ""
        self.patch_status(status)

    def waiting_all(self, reason, message=""):
        for c in self.pod["spec"]["containers"]:
            self.container_status(c, {"waiting": {"reason": reason, "message": message}})

    # -- the pod's life --------------------------------------------------------------

    def run(self):
        try:
            self.live()
        except Exception as exc:  # a bug here must not leave the pod unreported
            log.exception("pod %s/%s", self.ns, self.name)
            self.waiting_all("RunContainerError", str(exc))
            self.report("Failed", reason="RunContainerError", message=str(exc))
        finally:
            self.cleanup()

    def live(self):
        spec = self.pod["spec"]
        self.start_time = now()
        self.waiting_all("ContainerCreating")
        self.report("Pending", initialized=not spec.get("initContainers"))
        limits = {}
        for c in spec["containers"]:
            for k, v in ((c.get("resources") or {}).get("limits") or {}).items():
                if k.startswith("nvidia.com/"):
                    limits[k] = limits.get(k, 0) + int(v)
        try:
            self.devices = self.node.devices.allocate(self.uid, limits)
        except RuntimeError as exc:
            self.event("UnexpectedAdmissionError", str(exc), "Warning")
            self.report("Failed", reason="UnexpectedAdmissionError", message=str(exc))
            return
        if not self.pull_images():
            return
        mounts = self.prepare_volumes()
        if mounts is None:
            return
        self.isolated = self.kubelet.isolated(self.pod)
        self.ip = self.node.take_ip()  # reported even for an isolated pod, though nothing can reach it
        if not self.run_init_containers(mounts):
            return
        self.run_containers(mounts)

    def pull_images(self):
        spec = self.pod["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            ref = c["image"]
            backoff = 5
            while True:
                if self.deleting.is_set() or self.gone.is_set():
                    return False
                try:
                    if ref in dict(self.node.images.listing()):
                        self.event("Pulled", f'Container image "{ref}" already present on machine', container=c["name"])
                        break
                    self.event("Pulling", f'Pulling image "{ref}"', container=c["name"])
                    seconds = self.node.images.pull(ref)
                    self.kubelet.images_changed.set()
                    self.event("Pulled", f'Successfully pulled image "{ref}" in {seconds:.3f}s', container=c["name"])
                    break
                except ImagePullError as exc:
                    self.event("Failed", f'Failed to pull image "{ref}": {exc}', "Warning", container=c["name"])
                    self.container_status(c, {"waiting": {"reason": "ErrImagePull", "message": str(exc)}})
                    self.report("Pending")
                    if self.deleting.wait(1):
                        return False
                    self.container_status(
                        c,
                        {
                            "waiting": {
                                "reason": "ImagePullBackOff",
                                "message": f'Back-off pulling image "{ref}": ErrImagePull: {exc}',
                            }
                        },
                    )
                    self.report("Pending")
                    self.event("BackOff", f'Back-off pulling image "{ref}"', "Normal", container=c["name"])
                    if self.deleting.wait(backoff):
                        return False
                    backoff = min(backoff * 2, 300)
        return True

    def prepare_volumes(self):
        """Host folders for each volume; None when the pod was deleted while waiting for them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o711)
        while True:
            try:
                self.volumes = self.kubelet.volumes_for(self)
                return True
            except VolumeError as exc:
                self.event("FailedMount", str(exc), "Warning")
                if self.deleting.wait(2) or self.gone.is_set():
                    return None

    def mounts_for(self, container):
        mounts = []
        for m in container.get("volumeMounts", []):
            source, ro = self.volumes[m["name"]]
            if m.get("subPath"):
                sub = os.path.normpath(m["subPath"])
                if sub.startswith("..") or os.path.isabs(sub):
                    raise runner.ContainerConfigError(
                        f"subPath {m['subPath']!r} must be a relative path inside the volume"
                    )
                target = Path(source) / sub
                if not os.path.lexists(target):
                    target.mkdir(parents=True, mode=0o777, exist_ok=True)
                    target.chmod(0o777)
                real = os.path.realpath(target)
                if not (real == os.path.realpath(source) or real.startswith(os.path.realpath(source) + "/")):
                    raise runner.ContainerConfigError(f"subPath {m['subPath']!r} leaves its volume")
                source = real
            mounts.append((source, m["mountPath"], ro or m.get("readOnly", False)))
        return mounts

    def termination_log(self, c):
        return self.dir / f"{c['name']}.termination-log"

    def terminated(self, c, container, code, reason=None):
        """A container's terminated state, with its termination message as the kubelet reads it."""
        state = {
            "exitCode": code,
            "reason": reason or ("Completed" if code == 0 else "Error"),
            "startedAt": container.started if container else None,
            "finishedAt": now(),
        }
        try:
            message = self.termination_log(c).read_bytes()[:4096].decode(errors="replace")
        except OSError:
            message = ""
        if not message and code and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                message = "\n".join((self.dir / f"{c['name']}.log").read_text(errors="replace").splitlines()[-80:])[
                    -2048:
                ]
            except OSError:
                message = ""
        if message:
            state["message"] = message
        return {"terminated": {k: v for k, v in state.items() if v is not None}}

    def stand_in(self, c):
        """The container as the runner gets it: its image's stand-in (:mod:`.images`), the pod's /etc/hosts."""
        extra = images.mounts(c["image"])
        if not self.isolated:
            hosts = self.kubelet.services.hosts_file(
                self.dir / "hosts", self.ns, self.pod["spec"].get("hostname") or self.name, self.ip
            )
            extra.append((str(hosts), "/etc/hosts", True))
        return images.container_for(c), extra

    def start_container(self, c, mounts):
        env = self.kubelet.environment(self, c)
        env["PATH"] = images.path(c["image"], env["PATH"])
        c, extra = self.stand_in(c)
        log_file = self.termination_log(c)
        log_file.write_bytes(b"")
        log_file.chmod(0o666)
        argv = runner.bwrap_command(
            self.pod,
            c,
            self.mounts_for(c)
            + extra
            + [(str(log_file), c.get("terminationMessagePath") or "/dev/termination-log", False)],
            env,
            isolated_network=self.isolated,
            read_only_root=(c.get("securityContext") or {}).get("readOnlyRootFilesystem", False),
        )
        # the pod's own network: what listens on the wildcard address listens on the pod's address
        argv = [a.replace("0.0.0.0", self.ip) if not self.isolated else a for a in argv]
        container = Container(c["name"], argv, self.dir / f"{c['name']}.log")
        self.event("Created", f"Created container: {c['name']}", container=c["name"])
        self.event("Started", f"Started container {c['name']}", container=c["name"])
        return container

    def run_init_containers(self, mounts):
        spec = self.pod["spec"]
        inits = spec.get("initContainers", [])
        init_statuses = []
        for c in inits:
            while True:
                try:
                    container = self.start_container(c, mounts)
                except runner.ContainerConfigError as exc:
                    return self.config_error(c, exc)
                st = {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": f"aifhub-test://{c['image']}",
                    "ready": False,
                    "restartCount": self.restarts.get(c["name"], 0),
                    "started": True,
                    "state": {"running": {"startedAt": container.started}},
                }
                self.report("Pending", initialized=False, init_statuses=init_statuses + [st])
                code = self.wait_one(container)
                if code is None:  # deleted
                    return False
                st["state"] = self.terminated(c, container, code)
                st["started"] = False
                if code == 0:
                    st["ready"] = True
                    init_statuses.append(st)
                    break
                self.restarts[c["name"]] = self.restarts.get(c["name"], 0) + 1
                if spec.get("restartPolicy", "Always") == "Never":
                    init_statuses.append(st)
                    self.waiting_all("PodInitializing")
                    self.report("Failed", initialized=False, init_statuses=init_statuses)
                    return False
                self.report("Pending", initialized=False, init_statuses=init_statuses + [st])
                if self.deleting.wait(min(10 * 2 ** (self.restarts[c["name"]] - 1), 300)):
                    return False
        self.init_statuses = init_statuses if inits else None
        return True

    def wait_one(self, container):
        while True:
            code = container.poll()
            if code is not None:
                return code
            if self.deleting.is_set() or self.gone.is_set():
                self.stop_containers({container.name: container})
                return None
            if self.deadline_passed():
                self.stop_containers({container.name: container}, grace=0)
                self.fail_deadline()
                return None
            time.sleep(0.1)

    def config_error(self, c, exc):
        self.event("Failed", f"Error: {exc}", "Warning", container=c["name"])
        self.container_status(c, {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}})
        self.report("Pending")
        self.deleting.wait()
        return False

    def deadline_passed(self):
        deadline = self.pod["spec"].get("activeDeadlineSeconds")
        return deadline is not None and self.start_time and time.time() - parse_time(self.start_time) > int(deadline)

    def fail_deadline(self):
        message = "Pod was active on the node longer than the specified deadline"
        self.event("DeadlineExceeded", message, "Normal")
        for c in self.pod["spec"]["containers"]:
            st = self.statuses.get(c["name"], {}).get("state", {})
            if "terminated" not in st:
                self.container_status(c, self.terminated(c, None, 137))
        self.report(
            "Failed", reason="DeadlineExceeded", message=message, init_statuses=getattr(self, "init_statuses", None)
        )

    def run_containers(self, mounts):
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        inits = getattr(self, "init_statuses", None)
        backoff_until = {}
        for c in spec["containers"]:
            try:
                self.containers[c["name"]] = self.start_container(c, mounts)
            except runner.ContainerConfigError as exc:
                self.stop_containers(self.containers)
                self.config_error(c, exc)
                return
            self.container_status(c, {"running": {"startedAt": self.containers[c["name"]].started}}, ready=True)
        self.report("Running", ready=True, init_statuses=inits)
        by_name = {c["name"]: c for c in spec["containers"]}
        while True:
            if self.deleting.is_set() or self.gone.is_set():
                self.stop_containers(self.containers, grace=self.grace)
                return
            if self.deadline_passed():
                self.stop_containers(self.containers, grace=0)
                self.fail_deadline()
                return
            changed = False
            for name, container in list(self.containers.items()):
                code = container.poll()
                if code is None:
                    continue
                changed = True
                del self.containers[name]
                self.container_status(by_name[name], self.terminated(by_name[name], container, code))
                if policy == "Always" or (policy == "OnFailure" and code != 0):
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    delay = min(10 * 2 ** (self.restarts[name] - 1), 300)
                    backoff_until[name] = time.monotonic() + delay
                    self.event("BackOff", f"Back-off restarting failed container {name}", "Warning", container=name)
                    self.container_status(
                        by_name[name],
                        {
                            "waiting": {
                                "reason": "CrashLoopBackOff",
                                "message": f"back-off {delay}s restarting failed container={name}",
                            }
                        },
                    )
            for name, until in list(backoff_until.items()):
                if time.monotonic() >= until:
                    del backoff_until[name]
                    self.containers[name] = self.start_container(by_name[name], mounts)
                    self.container_status(
                        by_name[name], {"running": {"startedAt": self.containers[name].started}}, ready=True
                    )
                    changed = True
            if not self.containers and not backoff_until:
                codes = [self.statuses[n]["state"]["terminated"]["exitCode"] for n in by_name]
                self.report("Succeeded" if all(c == 0 for c in codes) else "Failed", init_statuses=inits)
                return
            if changed:
                ready = bool(self.containers) and not backoff_until
                self.report("Running", ready=ready, init_statuses=inits)
            self.deleting.wait(0.1)

    def stop_containers(self, containers, grace=None):
        grace = self.grace if grace is None else grace
        running = {n: c for n, c in containers.items() if c.poll() is None}
        for name, c in running.items():
            self.event("Killing", f"Stopping container {name}", container=name)
            c.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline and any(c.poll() is None for c in running.values()):
            time.sleep(0.1)
        for c in running.values():
            if c.poll() is None:
                c.signal(signal.SIGKILL)
            c.proc.wait()
        by_name = {c["name"]: c for c in self.pod["spec"]["containers"]}
        for name, c in running.items():
            if name in by_name:
                code = c.proc.returncode if c.proc.returncode >= 0 else 128 - c.proc.returncode
                self.container_status(by_name[name], self.terminated(by_name[name], c, code))

    def cleanup(self):
        for c in self.containers.values():
            if c.poll() is None:
                c.signal(signal.SIGKILL)
                c.proc.wait()
        self.node.devices.release(self.uid)
        if self.deleting.is_set() and not self.gone.is_set():
            # what the kubelet does last: report the containers ended, then remove the pod for good
            failed = any(s["state"].get("terminated", {}).get("exitCode") for s in self.statuses.values())
            self.report("Failed" if failed else "Succeeded", init_statuses=getattr(self, "init_statuses", None))
            try:
                self.api.delete(
                    self.path,
                    {
                        "kind": "DeleteOptions",
                        "apiVersion": "v1",
                        "gracePeriodSeconds": 0,
                        "preconditions": {"uid": self.uid},
                    },
                )
            except ApiError as exc:
                if exc.status not in (404, 409):
                    log.warning("deleting %s/%s: %s", self.ns, self.name, exc)
        self.node.give_ip(self.ip)
        self.kubelet.services.forget(self.dir / "hosts")
        self.kubelet.forget(self)
        shutil.rmtree(self.dir / "volumes", ignore_errors=True)


class VolumeError(RuntimeError):
    pass


KUBELET_PORT = 10250  # what the nodes advertise (status.daemonEndpoints)


class _KubeletApi(BaseHTTPRequestHandler):
    """The kubelet API's pod logs: ``GET /containerLogs/<namespace>/<pod>/<container>[?tailLines=N]``."""

    kubelet = None  # the TestKubelet, set on a subclass per server

    def do_GET(self):
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.strip("/").split("/")]
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self.send_error(404, "the test kubelet serves containerLogs only (no exec, attach, port-forward)")
        ns, name, container = parts[1:]
        path = self.kubelet.log_path(ns, name, container)
        if path is None or not path.is_file():
            log.info("kubelet API: no log of %s/%s/%s (%s)", ns, name, container, path)
            return self.send_error(404, f"no log of container {container!r} of pod {ns}/{name} on this node")
        data = path.read_bytes()
        tail = parse_qs(url.query).get("tailLines", [""])[0]
        if tail.isdigit():
            data = b"".join(data.splitlines(keepends=True)[-int(tail) :]) if int(tail) else b""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        log.debug("kubelet API %s: " + format, self.client_address[0], *args)


class TestKubelet:
    def __init__(self, config):
        self.config = config
        self.state = Path(config["state_dir"])
        (self.state / "pods").mkdir(parents=True, exist_ok=True)
        (self.state / "volumes").mkdir(parents=True, exist_ok=True)
        for path in (self.state, self.state / "pods", self.state / "volumes"):
            path.chmod(0o711)
        self.api = Api(config["server"], config["ca"], config["cert"], config["key"])
        self.stop = threading.Event()
        self.images_changed = threading.Event()
        self.workers = {}
        self.lock = threading.Lock()
        self.nodes = {}
        net = config.get("network", "127.200")
        index = 0
        for pool in config["pools"]:
            for spec in pool_nodes(pool):
                index += 1
                self.nodes[spec["name"]] = Node(
                    spec,
                    f"{net}.{index}.1",
                    float(pool.get("pull_seconds", config.get("pull_seconds", 0))),
                    pool.get("preloaded_images", []),
                )
        self.api_port = config["server"].rsplit(":", 1)[1]
        self.api_servers = []
        self.services = ServiceNet(self.api, net, self.state, self.stop)

    # -- nodes -------------------------------------------------------------------

    def register(self):
        for node in self.nodes.values():
            obj = node_object(node.spec)
            try:
                self.api.post("/api/v1/nodes", obj)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                self.api.patch(
                    f"/api/v1/nodes/{node.name}",
                    {
                        "metadata": {"labels": obj["metadata"]["labels"]},
                        "spec": {"taints": node.spec["taints"] or None},
                    },
                    MERGE,
                )
            self.post_status(node)
            self.renew(node, create=True)

    def post_status(self, node):
        images = node.images.listing()
        self.api.patch(f"/api/v1/nodes/{node.name}/status", node_status(node.spec, node.address, now(), images), MERGE)
        node.images_reported = images

    def renew(self, node, create=False):
        path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": node.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node.name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": micro_now()},
        }
        try:
            self.api.patch(f"{path}/{node.name}", {"spec": lease["spec"]}, MERGE)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.api.post(path, lease)

    def heartbeat_loop(self):
        last_status = time.monotonic()
        while not self.stop.wait(0 if self.images_changed.is_set() else RENEW_SECONDS):
            try:
                changed = self.images_changed.is_set()
                self.images_changed.clear()
                for node in self.nodes.values():
                    if not changed:
                        self.renew(node)
                    if time.monotonic() - last_status > STATUS_SECONDS or node.images.listing() != node.images_reported:
                        self.post_status(node)
                if time.monotonic() - last_status > STATUS_SECONDS:
                    last_status = time.monotonic()
            except Exception as exc:
                log.warning("heartbeat: %s", exc)
            if changed:
                time.sleep(1)  # at most one status update per second for image lists

    # -- pods ------------------------------------------------------------------------

    def pod_loop(self):
        for kind, pod in self.api.watch("/api/v1/pods", self.stop):
            node = self.nodes.get(pod["spec"].get("nodeName"))
            if node is None:
                continue
            uid = pod["metadata"]["uid"]
            with self.lock:
                worker = self.workers.get(uid)
            if kind == "DELETED":  # removed at once (no grace period, or force): kill, and its devices are free now
                if worker:
                    worker.grace = 0
                    worker.gone.set()
                    node.devices.release(uid)
                    worker.deleting.set()
                continue
            if worker is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if pod["metadata"].get("deletionTimestamp"):
                        self.finalize(pod)
                    continue
                if pod["metadata"].get("deletionTimestamp"):
                    self.finalize(pod)
                    continue
                worker = PodWorker(self, node, pod)
                with self.lock:
                    self.workers[uid] = worker
                worker.start()
            else:
                worker.pod["metadata"] = pod["metadata"]
                if pod["metadata"].get("deletionTimestamp") and not worker.deleting.is_set():
                    worker.grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
                    worker.deleting.set()

    def finalize(self, pod):
        """A terminated pod (or one never started) being deleted: nothing runs, remove it for good."""
        meta = pod["metadata"]
        try:
            self.api.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "gracePeriodSeconds": 0,
                    "preconditions": {"uid": meta["uid"]},
                },
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("deleting %s/%s: %s", meta["namespace"], meta["name"], exc)

    def forget(self, worker):
        with self.lock:
            self.workers.pop(worker.uid, None)

    def event(self, pod, reason, message, kind="Normal", container=None):
        meta = pod["metadata"]
        involved = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
        }
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        t = now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
            "firstTimestamp": t,
            "lastTimestamp": t,
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": pod["spec"].get("nodeName", ""),
        }
        try:
            self.api.post(f"/api/v1/namespaces/{meta['namespace']}/events", body)
        except Exception as exc:
            log.debug("event %s: %s", reason, exc)

    def isolated(self, pod):
        """True when NetworkPolicies leave the pod no peer at all (no ingress and no egress rule)."""
        try:
            policies = self.api.get(
                f"/apis/networking.k8s.io/v1/namespaces/{pod['metadata']['namespace']}/networkpolicies"
            )
        except ApiError:
            return False
        labels = pod["metadata"].get("labels") or {}
        selecting = [
            p for p in policies.get("items", []) if selector_matches(p["spec"].get("podSelector") or {}, labels)
        ]
        egress = [p for p in selecting if "Egress" in (p["spec"].get("policyTypes") or [])]
        ingress = [p for p in selecting if "Ingress" in (p["spec"].get("policyTypes") or ["Ingress"])]
        return (
            bool(egress and ingress)
            and not any(p["spec"].get("egress") for p in egress)
            and not any(p["spec"].get("ingress") for p in ingress)
        )

    # -- volumes ---------------------------------------------------------------------

    def volumes_for(self, worker):
        pod, ns = worker.pod, worker.ns
        spec = pod["spec"]
        fs_group = (spec.get("securityContext") or {}).get("fsGroup")
        root = worker.dir / "volumes"
        root.mkdir(exist_ok=True)
        result = {}
        for vol in spec.get("volumes", []):
            name = vol["name"]
            local = root / name
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                try:
                    pvc = self.api.get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
                except ApiError as exc:
                    raise VolumeError(f'persistentvolumeclaim "{claim}" not found') from exc
                pv_name = pvc["spec"].get("volumeName")
                if not pv_name or pvc.get("status", {}).get("phase") != "Bound":
                    raise VolumeError(f'persistentvolumeclaim "{claim}" is not bound')
                pv = self.api.get(f"/api/v1/persistentvolumes/{pv_name}")
                source = (pv["spec"].get("hostPath") or pv["spec"].get("local") or {}).get("path")
                if not source:
                    raise VolumeError(
                        f"volume {pv_name}: only hostPath and local volumes are mounted by the test kubelet"
                    )
                Path(source).mkdir(parents=True, exist_ok=True)
                result[name] = (source, vol["persistentVolumeClaim"].get("readOnly", False))
            elif "emptyDir" in vol:
                local.mkdir(exist_ok=True)
                local.chmod(0o777)
                result[name] = (str(local), False)
            elif "hostPath" in vol:
                result[name] = (vol["hostPath"]["path"], False)
            elif "configMap" in vol or "secret" in vol or "projected" in vol or "downwardAPI" in vol:
                local.mkdir(exist_ok=True)
                self.write_files(worker, vol, local, fs_group)
                result[name] = (str(local), True)
            else:
                raise VolumeError(
                    f"volume {name}: kind {sorted(set(vol) - {'name'})} is not supported by the test kubelet"
                )
        return result

    def write_files(self, worker, vol, folder, fs_group):
        ns = worker.ns
        files = {}  # relative path -> (bytes, mode)

        def from_object(kind, ref, items, mode):
            try:
                obj = self.api.get(f"/api/v1/namespaces/{ns}/{kind}s/{ref['name']}")
            except ApiError as exc:
                if ref.get("optional"):
                    return
                raise VolumeError(f'{kind} "{ref["name"]}" not found') from exc
            data = (
                {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                if kind == "configmap"
                else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
            )
            if kind == "configmap":
                data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
            for item in items or [{"key": k, "path": k} for k in data]:
                if item["key"] in data:
                    files[item["path"]] = (data[item["key"]], item.get("mode", mode))

        def token(source, mode):
            sa = worker.pod["spec"].get("serviceAccountName", "default")
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": [source["audience"]] if source.get("audience") else [],
                    "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                    "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": worker.name, "uid": worker.uid},
                },
            }
            answer = self.api.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body)
            files[source["path"]] = (answer["status"]["token"].encode(), mode)

        def downward(items, mode):
            for item in items:
                files[item["path"]] = (
                    self.field(worker, item["fieldRef"]["fieldPath"]).encode()
                    if "fieldRef" in item
                    else str(self.resource(worker, item["resourceFieldRef"])).encode(),
                    item.get("mode", mode),
                )

        if "configMap" in vol:
            src = vol["configMap"]
            from_object("configmap", src, src.get("items"), src.get("defaultMode", 0o644))
        elif "secret" in vol:
            src = vol["secret"]
            from_object(
                "secret",
                {"name": src["secretName"], "optional": src.get("optional")},
                src.get("items"),
                src.get("defaultMode", 0o644),
            )
        elif "downwardAPI" in vol:
            downward(vol["downwardAPI"].get("items", []), vol["downwardAPI"].get("defaultMode", 0o644))
        else:
            mode = vol["projected"].get("defaultMode", 0o644)
            for source in vol["projected"].get("sources", []):
                if "serviceAccountToken" in source:
                    token(source["serviceAccountToken"], mode)
                elif "configMap" in source:
                    from_object("configmap", source["configMap"], source["configMap"].get("items"), mode)
                elif "secret" in source:
                    from_object("secret", source["secret"], source["secret"].get("items"), mode)
                elif "downwardAPI" in source:
                    downward(source["downwardAPI"].get("items", []), mode)
        for rel, (data, mode) in files.items():
            path = folder / os.path.normpath(rel)
            if not str(path).startswith(str(folder) + "/"):
                raise VolumeError(f"path {rel!r} leaves its volume")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(mode)
            if fs_group is not None:
                os.chown(path, 0, fs_group)
        folder.chmod(0o755)

    def provision_loop(self):
        """PersistentVolumes for the claims of our StorageClass: a folder each, bound to its claim."""
        for kind, pvc in self.api.watch("/api/v1/persistentvolumeclaims", self.stop):
            if kind == "DELETED":
                continue
            meta, spec = pvc["metadata"], pvc["spec"]
            annotations = meta.get("annotations") or {}
            ours = (
                annotations.get("volume.kubernetes.io/storage-provisioner") == PROVISIONER
                or annotations.get("volume.beta.kubernetes.io/storage-provisioner") == PROVISIONER
            )
            if not ours or spec.get("volumeName") or pvc.get("status", {}).get("phase") != "Pending":
                continue
            name = f"pvc-{meta['uid']}"
            folder = self.state / "volumes" / name
            folder.mkdir(exist_ok=True)
            folder.chmod(0o777)  # as local-path provisioners do: any pod user may write
            pv = {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
                "spec": {
                    "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                    "accessModes": spec["accessModes"],
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.get("storageClassName"),
                    "hostPath": {"path": str(folder), "type": "Directory"},
                    "claimRef": {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "namespace": meta["namespace"],
                        "name": meta["name"],
                        "uid": meta["uid"],
                    },
                },
            }
            try:
                self.api.post("/api/v1/persistentvolumes", pv)
            except ApiError as exc:
                if exc.status != 409:
                    log.warning("provisioning %s: %s", name, exc)

    def reclaim_loop(self):
        """Released volumes of ours (their claim was deleted) are deleted with their folder."""
        while not self.stop.wait(3):
            try:
                for pv in self.api.get("/api/v1/persistentvolumes").get("items", []):
                    by = (pv["metadata"].get("annotations") or {}).get("pv.kubernetes.io/provisioned-by")
                    if (
                        by == PROVISIONER
                        and pv.get("status", {}).get("phase") == "Released"
                        and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete"
                    ):
                        self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                        shutil.rmtree(self.state / "volumes" / pv["metadata"]["name"], ignore_errors=True)
            except Exception as exc:
                log.warning("reclaim: %s", exc)

    # -- environment -----------------------------------------------------------------

    def field(self, worker, path):
        pod = worker.pod
        meta = pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": meta["namespace"],
            "metadata.uid": meta["uid"],
            "spec.nodeName": pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.hostIP": worker.node.address,
            "status.hostIPs": worker.node.address,
            "status.podIP": worker.ip or "",
            "status.podIPs": worker.ip or "",
        }
        if path in simple:
            return simple[path]
        m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]$", path)
        if m:
            return (meta.get(m.group(1)) or {}).get(m.group(2), "")
        raise runner.ContainerConfigError(f"unsupported fieldRef {path!r}")

    def resource(self, worker, ref):
        container = next(
            (c for c in worker.pod["spec"]["containers"] if c["name"] == ref.get("containerName")),
            worker.pod["spec"]["containers"][0],
        )
        kind, res = ref["resource"].split(".", 1)
        value = ((container.get("resources") or {}).get(kind) or {}).get(res)
        if value is None:
            node = worker.node.spec["capacity"]
            value = node.get(res, "0")
        number = quantity(value) / quantity(ref.get("divisor", "1"))
        return int(-(-number // 1))  # rounded up, as the kubelet does

    def environment(self, worker, container):
        env = dict(runner.IMAGE_CONFIG["env"])
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
        env["HOSTNAME"] = worker.pod["spec"].get("hostname") or worker.name
        env["KUBERNETES_SERVICE_HOST"] = "127.0.0.1"
        env["KUBERNETES_SERVICE_PORT"] = self.api_port
        env["KUBERNETES_SERVICE_PORT_HTTPS"] = self.api_port
        if worker.devices:
            env["NVIDIA_VISIBLE_DEVICES"] = ",".join(worker.devices)
        ns = worker.ns
        if worker.pod["spec"].get("enableServiceLinks", True):
            env.update(self.services.env(ns))
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = (
                    self.api.get(f"/api/v1/namespaces/{ns}/configmaps/{source['configMapRef']['name']}").get("data")
                    or {}
                )
            else:
                raw = self.api.get(f"/api/v1/namespaces/{ns}/secrets/{source['secretRef']['name']}").get("data") or {}
                data = {k: base64.b64decode(v).decode() for k, v in raw.items()}
            env.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env", []):
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = runner.expand(item.get("value", ""), env)
                continue
            src = item["valueFrom"]
            if "fieldRef" in src:
                env[item["name"]] = self.field(worker, src["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in src:
                env[item["name"]] = str(self.resource(worker, src["resourceFieldRef"]))
            else:
                kind, ref = (
                    ("configmap", src["configMapKeyRef"])
                    if "configMapKeyRef" in src
                    else ("secret", src["secretKeyRef"])
                )
                try:
                    data = self.api.get(f"/api/v1/namespaces/{ns}/{kind}s/{ref['name']}").get("data") or {}
                except ApiError as exc:
                    if ref.get("optional"):
                        continue
                    raise runner.ContainerConfigError(f'{kind} "{ref["name"]}" not found') from exc
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise runner.ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {ns}/{ref['name']}")
                value = data[ref["key"]]
                env[item["name"]] = value if kind == "configmap" else base64.b64decode(value).decode()
        return env

    # -- the kubelet API (pod logs) ----------------------------------------------------

    def log_path(self, ns, name, container):
        """Where the output of ``container`` of pod ``ns/name`` is (its folder is kept until the pod is deleted)."""
        if not all(re.fullmatch(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?", x) for x in (ns, name, container)):
            return None  # not names Kubernetes gives: nothing to look up, no path to build
        try:
            uid = self.api.get(f"/api/v1/namespaces/{ns}/pods/{name}")["metadata"]["uid"]
        except (ApiError, KeyError, TypeError):
            return None
        return self.state / "pods" / uid / f"{container}.log" if re.fullmatch(r"[0-9a-f-]{36}", uid) else None

    def serve_api(self):
        """The kubelet API on each node's address; a node whose port is taken goes without (logged)."""
        if not self.config.get("serving_cert"):
            return
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.config["serving_cert"], self.config["serving_key"])
        context.load_verify_locations(self.config["ca"])
        context.verify_mode = ssl.CERT_REQUIRED  # the API server's client certificate, or nobody
        handler = type("KubeletApi", (_KubeletApi,), {"kubelet": self})
        for node in self.nodes.values():
            try:
                server = ThreadingHTTPServer((node.address, KUBELET_PORT), handler)
            except OSError as exc:
                log.warning("kubelet API of %s not served (kubectl logs will fail there): %s", node.name, exc)
                continue
            server.daemon_threads = True
            server.socket = context.wrap_socket(server.socket, server_side=True)
            threading.Thread(target=server.serve_forever, daemon=True, name=f"api-{node.name}").start()
            self.api_servers.append(server)

    # -- main ------------------------------------------------------------------------

    def run(self):
        self.serve_api()
        self.register()
        threads = [
            threading.Thread(target=f, daemon=True, name=f.__name__)
            for f in (self.heartbeat_loop, self.pod_loop, self.provision_loop, self.reclaim_loop, self.services.run)
        ]
        for t in threads:
            t.start()
        (self.state / "ready").write_text(json.dumps(sorted(self.nodes)))
        self.stop.wait()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            for c in w.containers.values():
                c.signal(signal.SIGKILL)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    config = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(threadName)s %(message)s")
    kubelet = TestKubelet(config)
    signal.signal(signal.SIGTERM, lambda *_: kubelet.stop.set())
    signal.signal(signal.SIGINT, lambda *_: kubelet.stop.set())
    kubelet.run()


if __name__ == "__main__":
    main()
