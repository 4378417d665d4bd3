"""nbgrader courses: per-course course directories, the trusted exchange, and the autograding queue.

* :mod:`.coursedir` lays out ``<state>/grading/<course>/`` and generates its nbgrader config;
* :mod:`.gradebooks` puts each course's gradebook in SQLite or a PostgreSQL schema and role of its own;
* :mod:`.exchange` holds the nbgrader exchange classes that sandboxes use (HTTP to the service);
* :mod:`.store` is the service's side of the exchange (releases, submissions, feedback);
* :mod:`.queue` and :mod:`.workers` run grading jobs in parallel: each kernel in a sandbox here
  (:mod:`.kernel`: its own uid, no network, resource limits), or each notebook in a Kubernetes Job
  (:mod:`.kubejobs`, :mod:`.kubeclient`, and :mod:`.execute` inside the Job's pod);
* :mod:`.manager` ties them together for the service's handlers and the CLI.
"""
