"""One set of Kubernetes settings for grading Jobs and placeholders, under its new names and its old ones."""

import pytest
from traitlets.config import Config

from aifhub.catalog import load_catalog, load_images
from aifhub.grading.manager import GradingManager
from aifhub.kube.grading_job import JobSettings, grading_job
from aifhub.kube.placeholders import placeholder_replicaset
from aifhub.kube.podspec import PodSpecError
from aifhub.kube.settings import KubeSettings
from aifhub.service.app import AifhubService

from servicekit import REPO

POOLS = {"cpu": {}, "gpu": {"node_selector": {"gpu": "yes"}}}


def settings(config):
    return KubeSettings(parent=AifhubService(config=Config(config)))


def test_new_names():
    kube = settings({"KubeSettings": {"namespace": "training", "registry": "reg.example.org", "gpu_pools": POOLS}})
    assert (kube.namespace, kube.registry) == ("training", "reg.example.org")
    assert kube.gpu_pools["gpu"]["resource"] == "nvidia.com/gpu"  # validated and filled in


def test_the_old_grading_manager_names_still_work_and_the_new_ones_win():
    old = {"kube_namespace": "old-ns", "kube_config": "/k/config", "kube_registry": "old.reg", "kube_gpu_pools": POOLS}
    kube = settings({"GradingManager": old})
    assert (kube.namespace, kube.kube_config, kube.registry) == ("old-ns", "/k/config", "old.reg")
    assert set(kube.gpu_pools) == {"cpu", "gpu"}
    both = settings({"GradingManager": old, "KubeSettings": {"namespace": "new-ns"}})
    assert both.namespace == "new-ns" and both.registry == "old.reg"


def test_grading_and_placeholders_share_one_settings_object(tmp_path):
    app = AifhubService(config=Config({"GradingManager": {"kube_namespace": "shared"}}))
    kube = KubeSettings(parent=app)
    grading = GradingManager(tmp_path / "state", None, kube=kube, parent=app)
    assert grading.kube is kube and grading.kube.namespace == "shared"
    alone = GradingManager(tmp_path / "state2", None, parent=app)  # no settings given: made from the same config
    assert alone.kube.namespace == "shared"


def test_bad_pools_are_refused_saying_what_is_wrong():
    with pytest.raises(ValueError, match="gpu_pools"):
        settings({"KubeSettings": {"gpu_pools": {"gpu": {"node_selector": "not a mapping"}}}})
    with pytest.raises(PodSpecError):
        JobSettings(pools={"Bad Kind": {}})


def test_the_renderers_take_the_settings_object():
    images = load_images(REPO / "sandbox_images")
    catalog = load_catalog([REPO / "courses"], images)
    course = catalog.courses["gpu-fundamentals"]
    cluster = settings({"KubeSettings": {"namespace": "training", "registry": "reg.example.org"}}).cluster()
    placeholders = placeholder_replicaset(cluster, course.summary(), images.get(course.sandbox.image), 3)
    assert placeholders["metadata"]["namespace"] == "training" and placeholders["spec"]["replicas"] == 3
    image = placeholders["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("reg.example.org/")
    job = grading_job(
        JobSettings(namespace="training", registry="reg.example.org", cpu="2", memory="4Gi", claim="grading"),
        course.summary(),
        images.get(course.sandbox.image),
        "ps1-matmul",
        "learner1",
        job_id=7,
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert job["metadata"]["namespace"] == "training" and container["image"].startswith("reg.example.org/")
    assert container["resources"]["limits"]["cpu"] == "2" and container["resources"]["limits"]["memory"] == "4Gi"
    assert job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "grading"
