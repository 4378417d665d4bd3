"""The Grafana dashboard of an aifhub deployment (Prometheus data source)."""

# Metric names the dashboard reads. jupyterhub_* come from the hub's /hub/metrics and
# DCGM_* from NVIDIA's dcgm-exporter; aifhub_* are what the aifhub service exports at
# /services/aifhub/metrics (names kept in this one place).
AIFHUB_METRICS = {
    "sessions": "aifhub_sandbox_sessions",  # gauge: running sandboxes {course, gpu_kind}
    "gpu_hours": "aifhub_gpu_hours_used_total",  # counter: GPU-hours charged {allocation, course}
    "remaining": "aifhub_allocation_remaining_gpu_hours",  # gauge {allocation}
    "refusals": "aifhub_admissions_refused_total",  # counter {reason}
}

PANELS = [
    ("Running sandboxes by course", f'sum by (course, gpu_kind) ({AIFHUB_METRICS["sessions"]})', "short"),
    ("GPU-hours charged per hour", f'sum by (allocation, course) (rate({AIFHUB_METRICS["gpu_hours"]}[1h]) * 3600)', "short"),
    ("Allocation GPU-hours left", f'{AIFHUB_METRICS["remaining"]}', "short"),
    ("Refused spawns by reason", f'sum by (reason) (increase({AIFHUB_METRICS["refusals"]}[1h]))', "short"),
    ("Running servers (hub)", "jupyterhub_running_servers", "short"),
    ("Spawn time p90", "histogram_quantile(0.9, sum by (le) (rate(jupyterhub_server_spawn_duration_seconds_bucket[10m])))", "s"),
    ("GPU utilisation of sandboxes", 'avg by (pod) (DCGM_FI_DEV_GPU_UTIL{pod=~"jupyter-.*"})', "percent"),
    ("GPU memory used by sandboxes", 'sum by (pod) (DCGM_FI_DEV_FB_USED{pod=~"jupyter-.*"})', "decmbytes"),
]


def grafana_dashboard():
    panels = []
    for i, (title, expr, unit) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto"}],
        })
    return {
        "uid": "aifhub-overview", "title": "aifhub: sandboxes, GPU-hours and spawns", "schemaVersion": 39,
        "tags": ["aifhub", "jupyterhub"], "time": {"from": "now-24h", "to": "now"}, "refresh": "1m",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }
