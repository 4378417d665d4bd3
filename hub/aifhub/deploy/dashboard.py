"""The Grafana dashboard of an aifhub deployment (Prometheus data source)."""

# Metric names the dashboard reads. jupyterhub_* come from the hub's /hub/metrics, DCGM_* from
# NVIDIA's dcgm-exporter and aifhub_* from the aifhub service's /services/aifhub/metrics.
AIFHUB_METRICS = {
    "granted": "aifhub_allocation_granted_gpu_hours",  # gauge {allocation}
    "used": "aifhub_allocation_used_gpu_hours",  # gauge {allocation}
    "held": "aifhub_allocation_held_gpu_hours",  # gauge {allocation}: running sandboxes' holds
    "course_used": "aifhub_course_used_gpu_hours",  # gauge {course}
    "course_held": "aifhub_course_held_gpu_hours",  # gauge {course}
    "refusals": "aifhub_spawn_refusals_total",  # counter {reason}
}
M = AIFHUB_METRICS

PANELS = [
    ("Allocation GPU-hours left", f"sum by (allocation) ({M['granted']} - {M['used']} - {M['held']})", "short"),
    ("Allocation GPU-hours charged", f"sum by (allocation) ({M['used']})", "short"),
    ("GPU-hours charged by course", f"sum by (course) ({M['course_used']})", "short"),
    ("GPU-hours held by running sandboxes", f"sum by (course) ({M['course_held']})", "short"),
    ("Refused spawns by reason (per hour)", f"sum by (reason) (increase({M['refusals']}[1h]))", "short"),
    ("Running servers (hub)", "jupyterhub_running_servers", "short"),
    (
        "Spawn time p90",
        "histogram_quantile(0.9, sum by (le) (rate(jupyterhub_server_spawn_duration_seconds_bucket[10m])))",
        "s",
    ),
    ("GPU utilisation of sandboxes", 'avg by (pod) (DCGM_FI_DEV_GPU_UTIL{pod=~"jupyter-.*"})', "percent"),
    ("GPU memory used by sandboxes", 'sum by (pod) (DCGM_FI_DEV_FB_USED{pod=~"jupyter-.*"})', "decmbytes"),
]


def grafana_dashboard():
    panels = []
    for i, (title, expr, unit) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [{"refId": "A", "expr": expr, "legendFormat": "__auto"}],
            }
        )
    return {
        "uid": "aifhub-overview",
        "title": "aifhub: sandboxes, GPU-hours and spawns",
        "schemaVersion": 39,
        "tags": ["aifhub", "jupyterhub"],
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }
