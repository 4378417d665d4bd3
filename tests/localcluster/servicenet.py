"""Services in the test kubelet: what kube-proxy and the cluster's DNS give pods, on the host's loopback network.

There is no kube-proxy and no cluster DNS here. Instead, each Service with a cluster IP gets a loopback address of
its own (``<network>.250.<n>``; the real cluster IP, from 10.96.0.0/16, is not routable on this machine), and:

- **a forwarder** per Service port, in the kubelet process: a small asyncio TCP listener on that address and the
  Service's port that passes each connection to one ready pod the Service selects (round robin), at the port's
  ``targetPort`` (a number, or a container port's name). A selectorless Service forwards to the addresses its
  ``Endpoints`` object names.
- **names**: every pod's ``/etc/hosts`` (a file per pod, bound over the host's) maps the Services of the cluster to
  their addresses: ``name`` for those of the pod's namespace, ``name.ns``, ``name.ns.svc`` and
  ``name.ns.svc.cluster.local`` for all. It is rewritten in place when Services come and go, as DNS would answer.
- **environment**: the ``<NAME>_SERVICE_HOST``/``_PORT`` variables a kubelet sets (:mod:`.services`), with the
  Service's loopback address as its host.

``services.json`` in the kubelet's state folder lists ``namespace/name`` → address, for tests that reach a Service
from outside the cluster (as a LoadBalancer or a port-forward would).
"""

import asyncio
import copy
import itertools
import json
import logging
import threading
from pathlib import Path

from .rest import ApiError
from .services import service_env

log = logging.getLogger("test-kubelet.services")
DOMAIN = "svc.cluster.local"


def _selector(labels):
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _ready(pod):
    status = pod.get("status") or {}
    return bool(status.get("podIP")) and any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def target_port(pod, port):
    """The pod's port for a Service ``port``: its targetPort, a number or the name of a container port."""
    target = port.get("targetPort", port["port"])
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod["spec"]["containers"]:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


class ServiceNet:
    """The Services' addresses, forwarders, hosts files and environment, for every pod of the test kubelet."""

    def __init__(self, api, network, state, stop):
        self.api, self.stop = api, stop
        self.state = Path(state)
        self.free = [f"{network}.250.{i}" for i in range(2, 255)]
        self.services = {}  # (ns, name) -> Service object
        self.addresses = {}  # (ns, name) -> address
        self.listeners = {}  # (ns, name) -> {port: asyncio.Server}
        self.hosts = {}  # hosts file path -> (namespace, own lines)
        self.turn = itertools.count()
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.synced = threading.Event()

    # -- what pods see -----------------------------------------------------------------

    def env(self, namespace):
        """The Services' variables for a pod of ``namespace`` (enableServiceLinks)."""
        with self.lock:
            services = []
            for (ns, name), svc in self.services.items():
                if ns == namespace and (ns, name) in self.addresses:
                    svc = copy.deepcopy(svc)
                    svc["spec"]["clusterIP"] = self.addresses[ns, name]
                    services.append(svc)
        return service_env(services)

    def hosts_file(self, path, namespace, hostname, ip):
        """Writes a pod's /etc/hosts at ``path`` and keeps it up to date until :meth:`forget`."""
        own = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        if ip:
            own.append(f"{ip}\t{hostname}")
        with self.lock:
            self.hosts[str(path)] = (namespace, own)
        self._write_hosts(str(path))
        return path

    def forget(self, path):
        with self.lock:
            self.hosts.pop(str(path), None)

    def _write_hosts(self, path):
        with self.lock:
            if path not in self.hosts:
                return
            namespace, lines = self.hosts[path]
            lines = list(lines)
            for (ns, name), address in sorted(self.addresses.items()):
                names = [f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.{DOMAIN}"]
                lines.append("\t".join([address, *([name] if ns == namespace else []), *names]))
        try:
            with open(path, "r+" if Path(path).exists() else "w") as f:  # in place: the pod's bind mount stays
                f.seek(0)
                f.write("\n".join(lines) + "\n")
                f.truncate()
            Path(path).chmod(0o644)
        except OSError as exc:
            log.debug("hosts file %s: %s", path, exc)

    def _published(self):
        with self.lock:
            paths = list(self.hosts)
            table = {f"{ns}/{name}": a for (ns, name), a in self.addresses.items()}
        for path in paths:
            self._write_hosts(path)
        tmp = self.state / "services.json.tmp"
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        tmp.replace(self.state / "services.json")

    # -- forwarding ------------------------------------------------------------------------

    async def _endpoints(self, svc, port):
        """(address, port) of the pods or endpoints behind a Service port, ready ones only."""
        ns = svc["metadata"]["namespace"]
        selector = svc["spec"].get("selector")
        if selector:
            pods = await asyncio.to_thread(
                self.api.get, f"/api/v1/namespaces/{ns}/pods", labelSelector=_selector(selector)
            )
            out = []
            for pod in pods.get("items", []):
                target = target_port(pod, port)
                if _ready(pod) and not pod["metadata"].get("deletionTimestamp") and target:
                    out.append((pod["status"]["podIP"], target))
            return out
        try:
            eps = await asyncio.to_thread(self.api.get, f"/api/v1/namespaces/{ns}/endpoints/{svc['metadata']['name']}")
        except ApiError:
            return []
        out = []
        for subset in eps.get("subsets") or []:
            ports = [p["port"] for p in subset.get("ports") or [] if p.get("name") == port.get("name")]
            for a in subset.get("addresses") or []:
                out += [(a["ip"], p) for p in ports or [port.get("targetPort", port["port"])]]
        return out

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                writer.close()

    async def _connection(self, key, port, reader, writer):
        svc = self.services.get(key)
        upstream = None
        try:
            endpoints = await self._endpoints(svc, port) if svc else []
            if endpoints:
                host, target = endpoints[next(self.turn) % len(endpoints)]
                upstream = await asyncio.wait_for(asyncio.open_connection(host, target), 10)
        except (OSError, asyncio.TimeoutError, ApiError) as exc:
            log.info("service %s/%s port %s: %s", *key, port["port"], exc)
        if upstream is None:  # no ready endpoint: refused, as kube-proxy's REJECT rule does
            writer.close()
            return
        up_reader, up_writer = upstream
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    async def _listen(self, key, address, ports):
        servers = {}
        for port in ports:
            if port.get("protocol", "TCP") != "TCP":
                continue
            try:
                servers[port["port"]] = await asyncio.start_server(
                    lambda r, w, p=port: self._connection(key, p, r, w), address, port["port"]
                )
            except OSError as exc:
                log.warning("service %s/%s: cannot listen on %s:%s: %s", *key, address, port["port"], exc)
        return servers

    async def _apply(self, kind, svc):
        meta, spec = svc["metadata"], svc.get("spec") or {}
        key = (meta["namespace"], meta["name"])
        for server in self.listeners.pop(key, {}).values():
            server.close()
        if kind == "DELETED" or spec.get("clusterIP") in (None, "None") or spec.get("type") == "ExternalName":
            with self.lock:
                self.services.pop(key, None)
                address = self.addresses.pop(key, None)
            if address:
                self.free.append(address)
            return
        with self.lock:
            self.services[key] = svc
            if key not in self.addresses:
                self.addresses[key] = self.free.pop(0)
            address = self.addresses[key]
        self.listeners[key] = await self._listen(key, address, spec.get("ports") or [])

    async def _watch(self):
        queue = asyncio.Queue()

        def follow():
            try:
                for kind, svc in self.api.watch("/api/v1/services", self.stop):
                    self.loop.call_soon_threadsafe(queue.put_nowait, (kind, svc))
            finally:
                self.loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=follow, daemon=True, name="services-watch").start()
        while (item := await queue.get()) is not None:
            await self._apply(*item)
            await asyncio.to_thread(self._published)
            self.synced.set()

    def run(self):
        """The forwarders' loop (the kubelet runs it in a thread of its own)."""
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._watch())
