"""``aifhub k8s render``: the z2jh values and the extra manifests, written as YAML files."""

from pathlib import Path

import yaml

from ..kube.sharing import pools_with_kinds
from ..kube import manifests, podspec
from ..kube.grading_job import JobSettings, grading_job
from . import KUBERNETES_VERSION, NAMESPACE
from .values import z2jh_values

HEADER = (
    "# Rendered by `aifhub k8s render` (Kubernetes >= {k8s}). Edit the code or the course files\n"
    "# and render again rather than editing this file.\n"
)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # plain YAML, no &anchors
        return True


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(docs):
    return HEADER.format(k8s=KUBERNETES_VERSION) + "---\n".join(
        yaml.dump(d, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120) for d in docs
    )


def example_grading_job(catalog, images, pools, namespace=NAMESPACE):
    """A grading Job for the first assignment of the first course that has one (GPU courses first)."""
    courses = sorted(catalog.courses.values(), key=lambda c: (not c.needs_gpu, c.id))
    for course in courses:
        if course.assignments:
            return grading_job(
                JobSettings(namespace=namespace, pools=pools),
                course.summary(),
                images.get(course.sandbox.image),
                course.assignments[0],
                "learner1",
            )
    return None


def render(out, catalog, images, pools=None, registry="", kinds=None):
    """Write ``values.yaml`` and ``manifests/*.yaml`` under ``out``; return the paths written."""
    pools = podspec.validate_pools(
        pools_with_kinds(pools if pools is not None else podspec.DEFAULT_POOLS, kinds)  # a pool per GPU kind
    )
    out = Path(out)
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    files = {
        "values.yaml": [z2jh_values(images, pools, registry)],
        "manifests/00-priorityclasses.yaml": manifests.priority_classes(),
        "manifests/10-storage.yaml": manifests.storage(),
        "manifests/20-grading-networkpolicy.yaml": [
            manifests.grading_network_policy(),
            manifests.gradebook_network_policy(),
            manifests.placeholder_network_policy(),
        ],
        "manifests/21-grading-rbac.yaml": manifests.grading_rbac(),
        "manifests/22-placeholders-rbac.yaml": manifests.placeholder_rbac(),
        "manifests/30-nvidia-gpu-operator-config.yaml": manifests.nvidia_configs(kinds=kinds),
        "manifests/40-grafana-dashboard.yaml": [manifests.dashboard_configmap()],
    }
    job = example_grading_job(catalog, images, pools)
    if job is not None:
        files["manifests/50-grading-job-example.yaml"] = [job]
    written = []
    for name, docs in files.items():
        path = out / name
        path.write_text(dump(docs))
        written.append(path)
    return written
