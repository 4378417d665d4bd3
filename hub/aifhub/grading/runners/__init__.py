"""Code that runs outside the service's process to grade: the worker (``python -m
aifhub.grading.runners.worker``, which runs nbgrader's steps), the sandboxed kernel launcher it starts for
each graded notebook (:mod:`.kernel`), the Kubernetes Jobs it runs instead (:mod:`.kubejobs`), and the
executor inside a grading pod (:mod:`.execute`)."""
