"""Sandboxes: GPU discovery, the local spawner, and the client the hub uses to reach the service."""
