"""What a pod learns of the Services of its namespace: the environment variables the kubelet sets
(``<NAME>_SERVICE_HOST``, ``<NAME>_SERVICE_PORT``, ``<NAME>_SERVICE_PORT_<PORT NAME>`` and the Docker-link
style ``<NAME>_PORT*``), as in kubelet's ``getServiceEnvVarMap`` / ``envvars.FromServices``.

The zero-to-jupyterhub chart's hub finds its proxy and itself through them (``z2jh.get_name_env``).
"""


def _prefix(name):
    return name.upper().replace("-", "_")


def service_env(services):
    """The variables for ``services`` (Service dicts with ``spec.clusterIP``); headless ones are left out."""
    env = {}
    for svc in services:
        spec = svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not spec.get("ports"):
            continue
        name = _prefix(svc["metadata"]["name"])
        first = spec["ports"][0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        for port in spec["ports"]:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{_prefix(port['name'])}"] = str(port["port"])
        proto = first.get("protocol", "TCP")
        env[f"{name}_PORT"] = f"{proto.lower()}://{ip}:{first['port']}"
        for port in spec["ports"]:
            proto = port.get("protocol", "TCP")
            pre = f"{name}_PORT_{port['port']}_{proto.upper()}"
            env[pre] = f"{proto.lower()}://{ip}:{port['port']}"
            env[f"{pre}_PROTO"] = proto.lower()
            env[f"{pre}_PORT"] = str(port["port"])
            env[f"{pre}_ADDR"] = ip
    return env
