"""nbgrader courses: per-course course directories, the trusted exchange, and the autograding queue.

* :mod:`.coursedir` lays out ``<state>/grading/<course>/`` and generates its nbgrader config;
* :mod:`.exchange` holds the nbgrader exchange classes that sandboxes use (HTTP to the service);
* :mod:`.store` is the service's side of the exchange (releases, submissions, feedback);
* :mod:`.queue` and :mod:`.workers` run grading jobs in parallel, each kernel in a sandbox
  (:mod:`.kernel`): its own uid, no network, resource limits;
* :mod:`.manager` ties them together for the service's handlers and the CLI.
"""
