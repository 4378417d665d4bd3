"""nbgrader courses, on the service's side: per-course course directories, the trusted exchange's storage,
and the autograding queue.

* :mod:`.coursedir` lays out ``<state>/grading/<course>/`` and generates its nbgrader config;
* :mod:`.gradebooks` puts each course's gradebook in SQLite or a PostgreSQL schema and role of its own;
* :mod:`.settings` holds every option; :mod:`.courses` sets up a course (directory, group, gradebook, sharing);
* :mod:`.steps` runs instructors' steps; :mod:`.exchange` is the exchange's store, learners' side;
* :mod:`.store` is the tar and file code of the exchange's server side (releases, submissions, feedback);
* :mod:`.queue` and :mod:`.workers` run grading jobs in parallel in worker processes (:mod:`.runners`):
  each kernel sandboxed here (its own uid, no network, resource limits), or each notebook in a
  Kubernetes Job;
* :mod:`.manager` is the facade over them for the service's handlers and the CLI (options: ``GradingManager.*``).

The exchange classes that sandboxes use, and their nbgrader configuration, are in :mod:`aifhub.sandboxside`;
the hub process imports nothing of this package.
"""
