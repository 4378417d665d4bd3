"""Autograding on Kubernetes: nbgrader's Execute step as a Job; everything else stays in the worker.

The grading worker runs ``nbgrader autograde`` with :class:`KubernetesExecute` in place of
nbgrader's ``Execute``. For each notebook it writes a job folder on the grading volume (the
notebook, the learner's other files, the limits), creates a Job from the service's template (see
:func:`aifhub.kube.grading_job.grading_job`), waits for it, and reads back the executed notebook;
nbgrader then saves the grades as usual. The pod never sees the gradebook or anyone else's work.

What comes back from the volume is read without following links and with a size cap: the folder
was writable by the learner's code.
"""

import asyncio
import copy
import json
import os
import stat
import time
from pathlib import Path

from nbgrader.preprocessors import Execute
from traitlets import Dict, Float, Integer, Unicode

from ... import fsafe
from ...kube.client import JobFailed, run_job
from ..coursedir import ignore_learner_files
from .execute import OUTPUT, RESULT

MAX_ANSWER_BYTES = 256 * 1024 * 1024


def read_answer(path, limit=MAX_ANSWER_BYTES):
    """The bytes of a regular file the pod wrote, never through a link, at most ``limit``."""
    try:  # not through a link; a FIFO must not block us (it is then refused as not a regular file)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise JobFailed(f"the grading pod left no usable {Path(path).name} ({exc.strerror})")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            raise JobFailed(f"the grading pod left no usable {Path(path).name}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


class KubernetesExecute(Execute):
    """nbgrader's Execute, in a Kubernetes Job per notebook (configured by the worker per request)."""

    job_template = Dict(help="The Job manifest (aifhub.kube.grading_job.grading_job) without name and subPath.").tag(
        config=True
    )
    job_name = Unicode(help="Prefix of the Jobs' names: one Job per notebook.").tag(config=True)
    namespace = Unicode("default", help="Namespace the Jobs run in.").tag(config=True)
    kube_config = Unicode(help="kubeconfig file; empty: the pod's service account (in the cluster).").tag(config=True)
    scratch = Unicode(help="This submission's folder on the grading volume, as the worker sees it.").tag(config=True)
    volume_root = Unicode(help="Where the worker sees the grading volume's root (subPaths are relative to it).").tag(
        config=True
    )
    notebook_timeout = Float(600, help="Seconds all the submission's notebooks may run, in all.").tag(config=True)
    start_timeout = Integer(600, help="Seconds a grading pod may wait for a node and its image.").tag(config=True)

    _used = 0.0
    _count = 0

    def preprocess(self, nb, resources):
        import nbformat

        self._count += 1
        notebook = resources.get("unique_key") or f"notebook-{self._count}"
        folder = Path(self.scratch) / f"{self._count:02d}"
        budget = max(1.0, self.notebook_timeout - self._used)
        with fsafe.opened(self.scratch) as scratch:  # the pod runs as the sandbox user: all of it is its to write
            scratch.remove(folder.name)
            with scratch.mkdir(folder.name, 0o777) as job:
                with fsafe.opened(resources["metadata"]["path"]) as src, job.mkdir("work", 0o777) as work:
                    fsafe.copy_tree(src, work, skip=ignore_learner_files, dir_mode=0o777, file_mode=0o666)
                job.write(
                    "job.json",
                    json.dumps({"cell_timeout": self.timeout, "notebook_timeout": budget, "notebook": notebook}),
                    0o666,
                )
                job.write("input.ipynb", nbformat.writes(nb), 0o666)

        manifest = copy.deepcopy(self.job_template)
        manifest["metadata"]["name"] = f"{self.job_name}-{self._count}"[:63].rstrip("-")
        spec = manifest["spec"]["template"]["spec"]
        for mount in spec["containers"][0]["volumeMounts"]:
            if mount["name"] == "job":
                mount["subPath"] = str(folder.relative_to(self.volume_root))
        manifest["spec"]["activeDeadlineSeconds"] = int(self.start_timeout + budget + 30)
        began = time.monotonic()
        try:
            outcome, why = asyncio.run(
                run_job(manifest, self.namespace, self.kube_config, self.start_timeout, budget + 30)
            )
        finally:
            self._used += time.monotonic() - began
        if outcome != "succeeded":
            raise JobFailed(why)
        result = json.loads(read_answer(folder / RESULT, 1024 * 1024))
        if not result.get("ok"):
            raise JobFailed(str(result.get("error") or result.get("reason") or "the notebook could not be run")[:2000])
        executed = nbformat.reads(read_answer(folder / OUTPUT).decode(), as_version=4)
        return executed, resources
