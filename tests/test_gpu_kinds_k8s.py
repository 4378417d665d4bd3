"""GPU kinds on Kubernetes, offline: `aifhub k8s render --gpu-kinds` writes the device plugin's configuration per
sharing kind, a course's pod requests the kind's resource on the kind's nodes, and the simulated nodes of the
local cluster (configured as that render says) advertise exactly that resource and hand out its shares."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from localcluster.nodes import Devices, pool_nodes

from aifhub.catalog import load_catalog, load_images
from aifhub.gpus.kinds import load_kinds
from aifhub.kube import podspec, sharing

REPO = Path(__file__).resolve().parent.parent
KINDS_FILE = Path(__file__).parent / "data" / "gpu-kinds.yaml"
KINDS = load_kinds(KINDS_FILE)
IMAGES = load_images(REPO / "sandbox_images")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("rendered")
    proc = subprocess.run(
        [sys.executable, "-m", "aifhub", "k8s", "render", "--out", str(out), "--courses", str(REPO / "courses"),
         "--gpu-kinds", str(KINDS_FILE)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


def plugin_configs(rendered):
    docs = list(yaml.safe_load_all((rendered / "manifests" / "30-nvidia-gpu-operator-config.yaml").read_text()))
    cm = next(d for d in docs if d["metadata"]["name"] == "aifhub-device-plugin-config")
    return {name: yaml.safe_load(text) for name, text in cm["data"].items()}


def test_render_writes_one_device_plugin_config_per_sharing_kind(rendered):
    configs = plugin_configs(rendered)
    assert set(configs) == {"default", "aifhub-h100-ts4", "aifhub-h100-mps4"}
    ts = configs["aifhub-h100-ts4"]["sharing"]["timeSlicing"]
    assert ts == {
        "renameByDefault": True,
        "failRequestsGreaterThanOne": True,
        "resources": [{"name": "nvidia.com/gpu", "replicas": 4}],
    }
    assert configs["aifhub-h100-mps4"]["sharing"]["mps"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert "sharing" not in configs["default"] and configs["default"]["flags"]["migStrategy"] == "mixed"


def test_render_gives_each_kind_a_pool_in_the_values(rendered):
    values = yaml.safe_load((rendered / "values.yaml").read_text())
    text = yaml.safe_dump(values)
    assert "nvidia.com/gpu.shared" in text and "aifhub-h100-ts4" in text and "aifhub-h100-mps4" in text


@pytest.mark.parametrize(
    "kind, resource, selector",
    [
        ("h100-ts4", "nvidia.com/gpu.shared", {"nvidia.com/device-plugin.config": "aifhub-h100-ts4"}),
        ("h100-mps4", "nvidia.com/gpu.shared", {"nvidia.com/device-plugin.config": "aifhub-h100-mps4"}),
        ("mig-1g.10gb", "nvidia.com/mig-1g.10gb", {"nvidia.com/mig.config": "all-1g.10gb"}),
    ],
)
def test_a_course_of_a_kind_requests_its_resource_on_its_nodes(tmp_path, kind, resource, selector):
    course = load_catalog([REPO / "courses"], IMAGES).get("gpu-fundamentals").summary()
    course["sandbox"]["gpu"] = {"kind": kind, "count": 1}
    pools = podspec.validate_pools(sharing.pools_with_kinds(podspec.DEFAULT_POOLS, KINDS))
    pod = podspec.pod_settings(course, IMAGES["pytorch-cuda"], pools, pvc_name="claim")
    assert pod["extra_resource_limits"] == {resource: "1"} == pod["extra_resource_guarantees"]
    assert pod["node_selector"] == selector
    # a node pool labelled as the render says advertises that resource, and matches the pod's selector
    k = KINDS[kind]
    pool = {"name": kind, "preset": "h100", "gpus": 2}
    if k.shared:
        pool |= {"sharing": k.sharing, "replicas": k.replicas, "config": sharing.config_name(k)}
    else:
        pool = {"name": kind, "preset": f"mig-{k.profile}", "gpus": 2}
    node = pool_nodes(pool)[0]
    assert all(node["labels"].get(key) == value for key, value in selector.items()), node["labels"]
    per_node = 2 * (k.replicas if k.shared else 7)
    assert node["capacity"][resource] == str(per_node)
    assert node["capacity"]["nvidia.com/gpu"] == "0"  # no whole GPU on a sharing node
    devices = Devices(node["capacity"])
    got = [devices.allocate(f"pod-{i}", pod["extra_resource_limits"]) for i in range(per_node)]
    assert len({d for ids in got for d in ids}) == per_node
    with pytest.raises(RuntimeError, match="requested 1, 0 free"):
        devices.allocate("one-too-many", pod["extra_resource_limits"])


def test_a_whole_gpu_course_never_lands_on_a_sharing_node():
    whole = sharing.pool_for_kind(KINDS["h100"])
    shared = pool_nodes(
        {"name": "ts", "preset": "h100", "gpus": 2, "sharing": "timeslice", "replicas": 4, "config": "aifhub-h100-ts4"}
    )[0]
    plain = pool_nodes({"name": "g", "preset": "h100", "gpus": 2})[0]
    matches = lambda node: all(node["labels"].get(k) == v for k, v in whole["node_selector"].items())  # noqa: E731
    assert matches(plain) and not matches(shared)
    assert whole["resource"] == "nvidia.com/gpu" and shared["capacity"]["nvidia.com/gpu"] == "0"


def test_render_refuses_bad_kinds_with_the_file_and_the_fault(tmp_path):
    bad = tmp_path / "kinds.yaml"
    bad.write_text("gpu_kinds:\n  - {name: ts, sharing: timeslice}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "aifhub", "k8s", "render", "--out", str(tmp_path / "o"), "--courses", str(REPO / "courses"),
         "--gpu-kinds", str(bad)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "replicas: timeslice needs a whole number of holders per GPU" in proc.stderr and str(bad) in proc.stderr
