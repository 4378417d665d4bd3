"""Sandbox pods for Kubernetes, built by KubeSpawner's own code and validated against the API schema."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from aifhub.catalog import load_catalog, load_images
from aifhub.deploy import KUBERNETES_VERSION, chart, offline
from aifhub.deploy.values import z2jh_values
from aifhub.kube import podspec
from aifhub.hubside.kube import KubeSandboxSpawner

REPO = Path(__file__).resolve().parent.parent
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
IMAGES = load_images(REPO / "sandbox_images")
CATALOG = load_catalog([REPO / "courses"], IMAGES)


def kubernetes_validate(tmp_path, docs):
    """Run ``kubernetes-validate --strict`` once over ``docs``; return {name: output line}."""
    paths = []
    for i, doc in enumerate(docs):
        path = tmp_path / f"{i:02d}-{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(path)
    proc = subprocess.run(
        [str(VALIDATE), "--strict", "-k", KUBERNETES_VERSION, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.returncode, proc.stdout + proc.stderr


def variant(course_id, gpu):
    """An example course's summary with another GPU request (None: CPU-only)."""
    summary = copy.deepcopy(CATALOG.courses[course_id].summary())
    summary["sandbox"]["gpu"] = gpu
    return summary


COURSES = {cid: CATALOG.courses[cid].summary() for cid in sorted(CATALOG.courses)}
GPU_KINDS = {
    "full-gpu-h100": variant("gpu-fundamentals", {"kind": "h100", "count": 2}),
    "mig-1g.10gb": variant("gpu-fundamentals", {"kind": "mig-1g.10gb", "count": 1}),
    "cpu-only": variant("gpu-fundamentals", None),
}


@pytest.fixture(scope="module", autouse=True)
def kubeconfig():
    with offline.offline_kubeconfig() as path:
        yield path


@pytest.fixture(scope="module")
def config():
    cfg = chart.hub_config(z2jh_values(IMAGES))
    cfg.KubeSandboxSpawner.images_dir = str(REPO / "sandbox_images")
    return cfg


def container(pod):
    return pod["spec"]["containers"][0]


def env(pod):
    return {e["name"]: e.get("value") for e in container(pod)["env"]}


def assert_restricted(pod):
    spec, sc = pod["spec"], container(pod)["securityContext"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1000
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["runAsNonRoot"] is True
    assert not sc.get("privileged")
    # one init container, unprivileged like the sandbox: it fetches the course's materials as the learner's user
    [init] = spec.get("initContainers") or [None]
    assert init["name"] == "course-materials" and init["image"] == spec["containers"][0]["image"]
    assert init["command"][:3] == ["python", "-m", "aifhub.kube.materials"]
    assert init["securityContext"] == sc and not [k for k in init["resources"]["limits"] if k.startswith("nvidia.com/")]


def assert_shm_and_volume(pod, pvc_name):
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container(pod)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/home/jovyan"]]["persistentVolumeClaim"]["claimName"] == pvc_name


async def test_every_example_course_and_gpu_kind_validates(config, tmp_path):
    docs, pods = [], {}
    for name, course in {**COURSES, **GPU_KINDS}.items():
        spawner = offline.make_spawner("learner1", config=config)
        pods[name] = pod = await offline.render_pod(spawner, course)
        docs += [pod, await offline.render_pvc(spawner)]
        assert_restricted(pod)
        assert_shm_and_volume(pod, f"aifhub-learner1--{course['id']}")
        assert env(pod)["AIFHUB_COURSE"] == course["id"]
        assert pod["metadata"]["labels"]["aifhub.io/course"] == course["id"]
        res = container(pod)["resources"]
        assert float(res["requests"]["cpu"]) < float(res["limits"]["cpu"])
        assert int(res["requests"]["memory"]) < int(res["limits"]["memory"])
        assert pod["spec"]["schedulerName"] == "aifhub-user-scheduler"
    rc, out = kubernetes_validate(tmp_path, docs)
    assert rc == 0, out
    assert out.count("passed") == len(docs), out

    h100 = pods["full-gpu-h100"]
    assert container(h100)["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert container(h100)["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert h100["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in h100["spec"]["tolerations"]
    assert h100["spec"]["priorityClassName"] == "aifhub-sandbox-gpu"
    assert env(h100)["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert h100["spec"]["activeDeadlineSeconds"] == 4 * 3600 + 900

    mig = pods["mig-1g.10gb"]
    limits = container(mig)["resources"]["limits"]
    assert limits["nvidia.com/mig-1g.10gb"] == "1" and "nvidia.com/gpu" not in limits
    assert mig["spec"]["nodeSelector"] == {"nvidia.com/mig.config": "all-1g.10gb"}

    for cpu in (pods["cpu-only"], pods["dl-basics"]):
        limits = container(cpu)["resources"]["limits"]
        assert not [k for k in limits if k.startswith("nvidia.com/")]
        assert "nodeSelector" not in cpu["spec"] or not cpu["spec"]["nodeSelector"]
        assert not [t for t in cpu["spec"]["tolerations"] if t["key"] == "nvidia.com/gpu"]
        assert cpu["spec"]["priorityClassName"] == "aifhub-sandbox-cpu"
        assert env(cpu)["NVIDIA_VISIBLE_DEVICES"] == "void"  # CUDA images would otherwise see every GPU
    dl = pods["dl-basics"]
    assert container(dl)["image"] == "aifhub/sandbox-cpu-base:2026.12.0"
    assert container(dl)["resources"]["limits"]["memory"] == 4 * 10**9


async def test_strict_validation_rejects_a_typo(config, tmp_path):
    """The check above can fail: a misspelt field is refused by the strict schema."""
    pod = await offline.render_pod(offline.make_spawner("learner1", config=config), COURSES["dl-basics"])
    container(pod)["resource"] = container(pod).pop("resources")
    rc, out = kubernetes_validate(tmp_path, [pod])
    assert rc != 0 and "resource" in out, out


async def test_course_b_after_course_a_leaves_no_trace(config):
    """One spawner object, GPU course then CPU course (KubeSpawner #546/#691), then back."""
    spawner = offline.make_spawner("learner2", config=config)
    fresh = await offline.render_pod(offline.make_spawner("learner2", config=config), GPU_KINDS["cpu-only"])
    gpu = await offline.render_pod(spawner, GPU_KINDS["full-gpu-h100"])
    cpu = await offline.render_pod(spawner, GPU_KINDS["cpu-only"])
    text = json.dumps(cpu)
    for trace in ('nvidia.com/gpu"', "NVIDIA-H100", "aifhub-sandbox-gpu", "NVIDIA_DRIVER_CAPABILITIES", '"h100"'):
        assert trace not in text, f"{trace} leaked from the GPU course into the CPU course"
    assert cpu == fresh, "a reused spawner must build exactly what a fresh one builds"
    mig = await offline.render_pod(spawner, GPU_KINDS["mig-1g.10gb"])
    assert "nvidia.com/gpu" not in container(mig)["resources"]["limits"]
    assert "NVIDIA_VISIBLE_DEVICES" not in env(mig)
    assert len(mig["spec"]["volumes"]) == len(gpu["spec"]["volumes"]) == 2
    assert [t["key"] for t in mig["spec"]["tolerations"]].count("nvidia.com/gpu") == 1


async def test_an_instructors_sandbox_mounts_the_course_directory_for_formgrader(config, tmp_path):
    spawner = offline.make_spawner("instructor", config=config)
    teaching = await offline.render_pod(spawner, COURSES["dl-basics"], role="instructor")
    volumes = {v["name"]: v for v in teaching["spec"]["volumes"]}
    mount = next(m for m in container(teaching)["volumeMounts"] if m["mountPath"] == "/home/jovyan/course-grading")
    assert volumes[mount["name"]]["persistentVolumeClaim"]["claimName"] == "aifhub-grading"
    assert mount["subPath"] == "courses/dl-basics"  # that course's directory, nothing else of the volume
    assert mount["readOnly"] is True  # nbgrader runs there in the service: nothing of the pod's may be planted
    assert env(teaching)["AIFHUB_GRADING_DIR"] == "/home/jovyan/course-grading"
    assert teaching["metadata"]["labels"]["aifhub.io/gradebook-access"] == "true"
    learning = await offline.render_pod(spawner, COURSES["dl-basics"])  # the same spawner, as a learner
    assert "course-grading" not in json.dumps(learning) and "gradebook-access" not in json.dumps(learning)
    # a learner's JupyterLab without nbgrader's instructor tools (the image's learner config); the instructor keeps them
    assert env(learning)["JUPYTER_CONFIG_PATH"] == "/etc/jupyter/aifhub-learner"
    assert "JUPYTER_CONFIG_PATH" not in env(teaching)
    assert learning == await offline.render_pod(offline.make_spawner("instructor", config=config), COURSES["dl-basics"])
    rc, out = kubernetes_validate(tmp_path, [teaching, learning])
    assert rc == 0 and out.count("passed") == 2, out


async def test_group_overrides_apply_on_the_clean_baseline(config):
    cfg = copy.deepcopy(config)
    cfg.KubeSpawner.group_overrides = {
        "01-staff": {"groups": ["formgrade-gpu-fundamentals"], "spawner_override": {"extra_labels": {"staff": "yes"}}}
    }
    spawner = offline.make_spawner("instructor", config=cfg)
    spawner.user.groups = [type("G", (), {"name": "formgrade-gpu-fundamentals"})()]
    for course in (GPU_KINDS["full-gpu-h100"], GPU_KINDS["cpu-only"]):
        pod = await offline.render_pod(spawner, course)
        assert pod["metadata"]["labels"]["staff"] == "yes"
        assert pod["metadata"]["labels"]["aifhub.io/course"] == "gpu-fundamentals"


async def test_unknown_gpu_kind_and_image_say_what_is_missing(config):
    spawner = offline.make_spawner("learner1", config=config)
    with pytest.raises(podspec.PodSpecError, match="no pool for it.*gpu_pools"):
        await offline.render_pod(spawner, variant("gpu-fundamentals", {"kind": "b200", "count": 1}))
    course = variant("gpu-fundamentals", None)
    course["sandbox"]["image"] = "no-such-image"
    with pytest.raises(podspec.PodSpecError, match="no-such-image"):
        await offline.render_pod(spawner, course)


@pytest.mark.parametrize(
    "pools, message",
    [
        ({"h100": {"node_selectr": {}}}, r"gpu_pools\['h100'\]: unknown field 'node_selectr'"),
        ({"h100": {"tolerations": [{"key": "x", "efect": "NoSchedule"}]}}, r"tolerations\[0\]"),
        (
            {"h100": {"node_selector": {"nvidia.com/gpu.present": True}}},
            r"node_selector: keys and values must be strings",
        ),
        ({"H100": {}}, r"lowercase"),
        ({"cpu": {"resource": "nvidia.com/gpu"}}, r"CPU-only"),
        ({"h100": {"mem_guarantee_fraction": 2}}, r"\(0, 1\]"),
    ],
)
def test_gpu_pools_validation_says_what_is_wrong(kubeconfig, pools, message):
    with pytest.raises(Exception) as info:
        KubeSandboxSpawner(_mock=True, gpu_pools=pools)
    assert info.match(message)


def test_pools_fill_in_resources():
    pools = podspec.validate_pools({"mig-3g.40gb": {}, "a100": {}, "cpu": {}})
    assert pools["mig-3g.40gb"]["resource"] == "nvidia.com/mig-3g.40gb"
    assert pools["a100"]["resource"] == "nvidia.com/gpu"
    assert "resource" not in pools["cpu"]


def test_cli_pods_prints_the_manifest(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifhub",
            "k8s",
            "pods",
            "--course",
            "gpu-fundamentals",
            "--user",
            "learner1",
            "--courses",
            str(REPO / "courses"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    pod = json.loads(proc.stdout)
    assert pod["kind"] == "Pod" and container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "Unclosed" not in proc.stderr
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "aifhub",
            "k8s",
            "pods",
            "--course",
            "nope",
            "--user",
            "learner1",
            "--courses",
            str(REPO / "courses"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "no course 'nope'" in proc.stderr
