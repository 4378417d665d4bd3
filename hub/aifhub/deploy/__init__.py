"""Kubernetes deployment: what ``aifhub k8s render`` writes and ``aifhub k8s pods`` prints.

Everything here is rendered offline; nothing talks to a cluster.
"""

KUBERNETES_VERSION = "1.32.0"  # the oldest version the zero-to-jupyterhub chart supports (kubeVersion >=1.32)
CHART_APP_VERSION = "5.5.0"  # JupyterHub version the chart's values schema was taken with (KubeSpawner 7.1.0)
NAMESPACE = "aifhub"
RELEASE = "aifhub"
SERVICE_PORT = 10101
STATE_DIR = "/srv/aifhub/state"
COURSES_DIR = "/srv/aifhub/courses"
IMAGES_DIR = "/srv/aifhub/sandbox_images"
SECRET_NAME = "aifhub-secrets"  # internal-token, db-password (created by the operator, see k8s/README.md)
