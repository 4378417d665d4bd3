"""``aifhub k8s render|pods|grading-job``: what aifhub sends to a Kubernetes cluster, rendered offline."""

import asyncio
import json
from pathlib import Path

import yaml

from ..catalog import load_catalog, load_images
from ..gpus.kinds import load_kinds
from ..kube.podspec import DEFAULT_POOLS, PodSpecError, validate_pools
from ..kube.sharing import pools_with_kinds
from ..catalog.images import IMAGES_HELP, images_dir_for
from .common import CLIError


def register(sub):
    k8s = sub.add_parser("k8s", help="render the Kubernetes deployment (z2jh values, manifests, pods) offline")
    ksub = k8s.add_subparsers(dest="k8s_cmd", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("--courses", default="courses", help="directory of course folders (default: courses)")
        p.add_argument("--images", help=IMAGES_HELP)
        p.add_argument(
            "--registry", default="", help="registry prefixed to image repositories (e.g. registry.example.org)"
        )
        p.add_argument("--pools", help="YAML file of GPU pools keyed by GPU kind (default: aifhub's example pools)")
        p.add_argument(
            "--gpu-kinds",
            help="YAML file with a gpu_kinds: list (sharing modes); each kind without a pool gets one, and each "
            "time-slice or MPS kind a device plugin configuration",
        )

    p = ksub.add_parser("render", help="write the z2jh values and the extra manifests to a directory")
    common(p)
    p.add_argument("--out", required=True, help="directory to write values.yaml and manifests/ into")
    p.set_defaults(func=render)

    p = ksub.add_parser("pods", help="print the pod manifest KubeSpawner would create for a learner and course")
    common(p)
    p.add_argument("--course", required=True, help="course id")
    p.add_argument("--user", required=True, help="learner's user name")
    p.add_argument("--values", help="a rendered values.yaml to take the spawner settings from (default: render them)")
    p.add_argument("--pvc", action="store_true", help="also print the learner's per-course PersistentVolumeClaim")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(func=pods)

    p = ksub.add_parser("grading-job", help="print the grading Job for one submission")
    common(p)
    p.add_argument("--course", required=True, help="course id")
    p.add_argument("--assignment", required=True, help="assignment name")
    p.add_argument("--student", required=True, help="student's user name")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(func=grading_job_cmd)


def _inputs(args):
    images_dir = images_dir_for(args.courses, args.images)
    images = load_images(images_dir)
    catalog = load_catalog([Path(args.courses)], images)
    pools = None
    if args.pools:
        try:
            pools = validate_pools(yaml.safe_load(Path(args.pools).read_text()) or {})
        except (OSError, yaml.YAMLError, PodSpecError) as exc:
            raise CLIError(f"{args.pools}: {exc}")
    args.kinds = {}
    if getattr(args, "gpu_kinds", None):
        try:
            args.kinds = load_kinds(args.gpu_kinds)
        except ValueError as exc:
            raise CLIError(str(exc))
        pools = validate_pools(pools_with_kinds(pools if pools is not None else DEFAULT_POOLS, args.kinds))
    return catalog, images, images_dir, pools


def _course(catalog, course_id):
    course = catalog.get(course_id)
    if course is None:
        if course_id in catalog.broken:
            problems = "; ".join(str(p) for p in catalog.broken[course_id])
            raise CLIError(f"course {course_id} is broken: {problems}")
        raise CLIError(f"there is no course {course_id!r} (known: {', '.join(sorted(catalog.courses)) or 'none'})")
    return course


def _print(docs, as_json):
    if as_json:
        print(json.dumps(docs if len(docs) > 1 else docs[0], indent=2))
    else:
        print("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs), end="")


def render(args):
    from ..deploy.render import render as render_all

    catalog, images, _, pools = _inputs(args)
    for path in render_all(args.out, catalog, images, pools, args.registry, kinds=args.kinds):
        print(f"wrote {path}")
    return 0


def pods(args):
    from ..deploy import chart, offline
    from ..deploy.values import z2jh_values

    catalog, images, images_dir, pools = _inputs(args)
    course = _course(catalog, args.course)
    values = yaml.safe_load(Path(args.values).read_text()) if args.values else z2jh_values(images, pools, args.registry)
    config = chart.hub_config(values)
    config.KubeSandboxSpawner.images_dir = str(images_dir)

    async def build():
        spawner = offline.make_spawner(args.user, config=config)
        pod = await offline.render_pod(spawner, course.summary())
        return [pod, await offline.render_pvc(spawner)] if args.pvc else [pod]

    try:
        with offline.offline_kubeconfig():
            docs = asyncio.run(build())
    except PodSpecError as exc:
        raise CLIError(str(exc))
    _print(docs, args.json)
    return 0


def grading_job_cmd(args):
    from ..kube.grading_job import JobSettings, grading_job

    catalog, images, _, pools = _inputs(args)
    course = _course(catalog, args.course)
    try:
        job = grading_job(
            JobSettings(registry=args.registry, pools=pools or DEFAULT_POOLS),
            course.summary(),
            images.get(course.sandbox.image),
            args.assignment,
            args.student,
        )
    except PodSpecError as exc:
        raise CLIError(str(exc))
    _print([job], args.json)
    return 0
