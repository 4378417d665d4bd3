"""aifhub patches JupyterHub (``aifhub.hubside.turns``) only on the releases the patches were tested with."""

import pytest
from jupyterhub import __version__ as running_version
from jupyterhub.app import JupyterHub
from jupyterhub.handlers.base import BaseHandler

from aifhub.hubside import turns
from aifhub.hubside.service_entry import ConfigError


def test_the_installed_jupyterhub_is_a_tested_one():
    # pyproject.toml pins the same range: an install that resolves cannot be refused
    assert turns.check_jupyterhub() == running_version


@pytest.mark.parametrize("version", ["6.1.1", "6.1.9"])
def test_a_tested_version_is_patched(version, monkeypatch):
    monkeypatch.delenv(turns.UNTESTED_ENV, raising=False)
    assert turns.check_jupyterhub(version) == version


@pytest.mark.parametrize("version", ["6.2.0", "7.0.0", "6.1.0", "5.4.6", "not-a-version"])
def test_an_untested_version_is_refused_with_what_to_do(version, monkeypatch):
    monkeypatch.delenv(turns.UNTESTED_ENV, raising=False)
    with pytest.raises(ConfigError) as refused:
        turns.check_jupyterhub(version)
    message = str(refused.value)
    assert f"this is JupyterHub {version}" in message
    assert str(turns.TESTED_JUPYTERHUB) in message  # which versions are tested
    assert f"pip install 'jupyterhub{turns.TESTED_JUPYTERHUB}'" in message  # how to proceed
    assert f"{turns.UNTESTED_ENV}={version}" in message


def test_the_override_names_the_exact_version(monkeypatch):
    monkeypatch.setenv(turns.UNTESTED_ENV, "6.2.0")
    assert turns.check_jupyterhub("6.2.0") == "6.2.0"
    with pytest.raises(turns.UntestedJupyterHub):
        turns.check_jupyterhub("6.2.1")  # an override for one release does not carry over to the next


def test_nothing_is_patched_on_an_untested_version(monkeypatch):
    monkeypatch.delenv(turns.UNTESTED_ENV, raising=False)
    prepare, sweep = BaseHandler.prepare, JupyterHub.update_last_activity
    with pytest.raises(turns.UntestedJupyterHub):
        turns.install_all("7.0.0")
    assert BaseHandler.prepare is prepare and JupyterHub.update_last_activity is sweep
