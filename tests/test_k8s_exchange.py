"""Kubernetes sandboxes use aifhub's nbgrader exchange too: the images carry it, the pods are told where it is."""

from pathlib import Path

import yaml
from traitlets.config import Config

from aifhub.deploy import SERVICE_PORT
from aifhub.hubside.z2jh import configure_z2jh
from aifhub.sandboxside.nbgrader_config import config_text

REPO = Path(__file__).resolve().parent.parent


def test_pods_get_the_exchange_url_through_the_hub_service():
    c = Config()
    c.KubeSandboxSpawner.environment = {"SITE": "x"}
    configure_z2jh(c, env={"POD_IP": "10.0.0.7", "AIFHUB_INTERNAL_TOKEN": "t"})
    env = c.KubeSandboxSpawner.environment
    assert env == {"SITE": "x", "AIFHUB_EXCHANGE_URL": f"http://hub:{SERVICE_PORT}/services/aifhub/"}


def test_the_hub_service_exposes_the_aifhub_port_to_sandboxes():
    values = yaml.safe_load((REPO / "k8s" / "rendered" / "values.yaml").read_text())
    assert {"name": "aifhub", "port": SERVICE_PORT, "targetPort": SERVICE_PORT} in values["hub"]["service"][
        "extraPorts"
    ]
    ingress = values["hub"]["networkPolicy"]["ingress"]
    assert any(rule["ports"] == [{"port": SERVICE_PORT, "protocol": "TCP"}] for rule in ingress)


def test_sandbox_images_install_aifhub_and_its_nbgrader_config():
    assert "ExchangeFactory.submit = 'aifhub.sandboxside.exchange.ExchangeSubmit'" in config_text()
    for name in ("cpu-base", "pytorch-cuda"):
        dockerfile = (REPO / "sandbox_images" / name / "Dockerfile").read_text()
        assert "pip install --no-cache-dir --no-deps /tmp/aifhub" in dockerfile
        assert "from aifhub.sandboxside.nbgrader_config import config_text" in dockerfile
        assert "/etc/jupyter/nbgrader_config.py" in dockerfile
        assert not (REPO / "sandbox_images" / name / "nbgrader_config.py").exists()  # no shared-folder exchange
