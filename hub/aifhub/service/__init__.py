"""The aifhub service: a JupyterHub-managed service that owns aifhub's state."""
