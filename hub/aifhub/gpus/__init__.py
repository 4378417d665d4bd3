"""GPUs as aifhub hands them out: the admin's GPU kinds and their sharing modes (:mod:`.kinds`), the NVML adapter
that discovers devices and MIG instances and samples their use (:mod:`.nvml`), the DCGM exporter's metrics on
Kubernetes (:mod:`.dcgm`), and the telemetry the service keeps from them (:mod:`.telemetry`)."""
