"""Simulated nodes: what a GPU node looks like to the API server once the NVIDIA GPU operator runs.

A node pool is a dict: ``{"name": "gpu", "count": 2, "preset": "h100", "gpus": 2}`` (a sharing pool adds
``"sharing": "timeslice" | "mps", "replicas": 4, "config": "aifhub-<kind>"``, as the device plugin's configuration
of that name advertises it); presets give
the capacity, the labels that GPU feature discovery and the MIG manager set, and the taint that GPU
node pools carry. The device plugin's part (handing out devices) is :class:`Devices`.
"""

import threading
import uuid

KUBELET_VERSION = "v1.37.2"
PROVISIONER = "aifhub.io/test-local-path"  # the StorageClass whose claims the test kubelet provisions
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}

PRODUCTS = {
    "h100": ("NVIDIA-H100-80GB-HBM3", "hopper", 81559),
    "a100": ("NVIDIA-A100-SXM4-80GB", "ampere", 81920),
}
# MIG profiles of an 80 GB GPU: slices per GPU and memory per slice (MiB)
MIG_PROFILES = {"1g.10gb": (7, 9856), "2g.20gb": (3, 19968), "3g.40gb": (2, 40192), "7g.80gb": (1, 80896)}


def _gpu_labels(product, family, memory, count):
    return {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.family": family,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.memory": str(memory),
        "nvidia.com/gpu.machine": "aifhub-test",
        "nvidia.com/cuda.driver.major": "580",
        "nvidia.com/cuda.driver.minor": "95",
        "nvidia.com/cuda.runtime.major": "13",
        "nvidia.com/gpu.deploy.device-plugin": "true",
        "nvidia.com/gpu.deploy.gpu-feature-discovery": "true",
        "nvidia.com/gpu.deploy.dcgm-exporter": "true",
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "mixed",
    }


def pool_nodes(pool, index_base=0):
    """The node objects (name, capacity, labels, taints) of one pool."""
    preset = pool.get("preset", "cpu")
    cpu, memory, pods = str(pool.get("cpu", 32)), pool.get("memory", "128Gi"), str(pool.get("pods", 110))
    nodes = []
    for i in range(int(pool.get("count", 1))):
        name = f"{pool['name']}-{i + index_base}"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": pool.get("instance_type", f"aifhub-test-{preset}"),
            "aifhub.io/test-pool": pool["name"],
        }
        capacity = {"cpu": cpu, "memory": memory, "pods": pods, "ephemeral-storage": "200Gi"}
        taints = []
        if preset in PRODUCTS or preset.startswith("mig-"):
            product, family, gpu_memory = PRODUCTS[pool.get("product", "h100") if preset.startswith("mig-") else preset]
            gpus = int(pool.get("gpus", 8))
            labels.update(_gpu_labels(product, family, gpu_memory, gpus))
            if preset.startswith("mig-"):
                profile = preset[len("mig-") :]
                per_gpu, slice_memory = MIG_PROFILES[profile]
                labels.update(
                    {
                        "nvidia.com/mig.config": f"all-{profile}",
                        "nvidia.com/mig.config.state": "success",
                        f"nvidia.com/mig-{profile}.count": str(per_gpu * gpus),
                        f"nvidia.com/mig-{profile}.memory": str(slice_memory),
                        f"nvidia.com/mig-{profile}.product": f"{product}-MIG-{profile}",
                    }
                )
                capacity[f"nvidia.com/mig-{profile}"] = str(per_gpu * gpus)
                capacity["nvidia.com/gpu"] = "0"
            elif pool.get("sharing") in ("timeslice", "mps"):
                # the device plugin's sharing config (renameByDefault): N shares per GPU as nvidia.com/gpu.shared
                replicas = int(pool["replicas"])
                labels.update(
                    {
                        "nvidia.com/mig.config": "all-disabled",
                        "nvidia.com/mig.config.state": "success",
                        "nvidia.com/device-plugin.config": pool["config"],
                        "nvidia.com/gpu.replicas": str(replicas),
                        "nvidia.com/gpu.sharing-strategy": "time-slicing" if pool["sharing"] == "timeslice" else "mps",
                        "nvidia.com/gpu.product": f"{product}-SHARED",
                    }
                )
                capacity["nvidia.com/gpu.shared"] = str(gpus * replicas)
                capacity["nvidia.com/gpu"] = "0"
            else:
                labels.update({"nvidia.com/mig.config": "all-disabled", "nvidia.com/mig.config.state": "success"})
                labels["nvidia.com/gpu.sharing-strategy"] = "none"
                capacity["nvidia.com/gpu"] = str(gpus)
            taints.append(dict(GPU_TAINT))
        labels.update(pool.get("labels", {}))
        taints += pool.get("taints", [])
        nodes.append({"name": name, "capacity": capacity, "labels": labels, "taints": taints})
    return nodes


class Devices:
    """The device plugin's allocation: each extended resource of a node is a set of devices with ids;
    a pod gets distinct ones, returned when it ends."""

    def __init__(self, capacity):
        self.lock = threading.Lock()
        self.free = {}
        for resource, count in capacity.items():
            if resource.startswith("nvidia.com/") and int(count):
                kind = resource.split("/", 1)[1]
                prefix = "MIG" if kind.startswith("mig-") else "GPU"
                if kind == "gpu.shared":  # replicas of one GPU's id, as the device plugin names them
                    self.free[resource] = [f"GPU-{uuid.uuid4()}::{r}" for r in range(int(count))]
                else:
                    self.free[resource] = [f"{prefix}-{uuid.uuid4()}" for _ in range(int(count))]
        self.held = {}

    def allocate(self, pod_uid, limits):
        """Device ids for a pod's extended-resource limits, or raise RuntimeError (the scheduler over-placed)."""
        with self.lock:
            if pod_uid in self.held:
                return [d for _, ids in self.held[pod_uid] for d in ids]
            taken = []
            for resource, count in limits.items():
                if resource not in self.free and not resource.startswith("nvidia.com/"):
                    continue
                count = int(count)
                pool = self.free.get(resource, [])
                if len(pool) < count:
                    for res, ids in taken:
                        self.free[res].extend(ids)
                    raise RuntimeError(f"UnexpectedAdmissionError: {resource}: requested {count}, {len(pool)} free")
                ids, self.free[resource] = pool[:count], pool[count:]
                taken.append((resource, ids))
            self.held[pod_uid] = taken
            return [d for _, ids in taken for d in ids]

    def release(self, pod_uid):
        with self.lock:
            for resource, ids in self.held.pop(pod_uid, []):
                self.free[resource].extend(ids)


def node_object(node):
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node["name"],
            "labels": node["labels"],
            "annotations": {"node.alpha.kubernetes.io/ttl": "0", "aifhub.io/test-kubelet": "true"},
        },
        "spec": {"taints": node["taints"]} if node["taints"] else {},
    }


def node_status(node, address, now, images=()):
    conditions = [
        {"type": t, "status": "False", "reason": r, "message": m, "lastHeartbeatTime": now, "lastTransitionTime": now}
        for t, r, m in [
            ("MemoryPressure", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ]
    ] + [
        {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "aifhub test kubelet is posting ready status",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
    ]
    return {
        "status": {
            "capacity": node["capacity"],
            "allocatable": node["capacity"],
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": node["name"]}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, node["name"]).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_URL, node["name"])),
                "bootID": str(uuid.uuid4()),
                "kernelVersion": "",
                "osImage": "aifhub test kubelet (bubblewrap)",
                "containerRuntimeVersion": "bubblewrap://0.8",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": [{"names": [name], "sizeBytes": size} for name, size in images],
        }
    }
