"""What runs inside the JupyterHub process: the course spawners (local and Kubernetes), the spawn form, the
quota notices on the hub's pages, the client that reaches the aifhub service, and the two hub
configurations (the embedded default of ``aifhub up``, and the z2jh chart's ``hub.extraConfig``), which
share one service entry (:mod:`.service_entry`).

The hub is one event loop serving every user: nothing here opens the ledger's database or imports the
service, the ledger or grading; it speaks to the service over HTTP.
"""
