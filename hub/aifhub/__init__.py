"""aifhub: the training platform of an AI Factory, as a JupyterHub plugin."""

__version__ = "0.3.0"
