"""Ledger units: amounts are integer milliseconds of (weighted) GPU or CPU time; hours are for people.

The charging formula lives here and nowhere else: :func:`charge_ms` says what ``elapsed_ms`` of a session
costs, :func:`rates_per_s` how fast a running session draws (for warnings and estimates). Every charge,
hold and correction of the ledger goes through them.
"""

from .. import texts

MS_PER_HOUR = 3_600_000
PPM = 1_000_000  # a GPU weight of 1.0 (a full GPU) in millionths


def weight_ppm(gpus_per_hour):
    """A GPU kind's weight (GPU-hours per hour of one holder, e.g. 0.25 for a quarter share) in millionths."""
    return int(round(gpus_per_hour * PPM))


def hours_to_ms(hours):
    return int(round(float(hours) * MS_PER_HOUR))


def ms_to_hours(ms):
    return round(ms / MS_PER_HOUR, 4)


def charge_ms(elapsed_ms, weight_ppm, gpu_count, cpu_millis):
    """``(gpu_ms, cpu_ms)`` charged for ``elapsed_ms`` of ``gpu_count`` devices of weight ``weight_ppm`` and
    ``cpu_millis`` thousandths of a CPU, each truncated to whole milliseconds (never rounded up)."""
    gpu_ms = elapsed_ms * weight_ppm * gpu_count // PPM if gpu_count else 0
    return gpu_ms, elapsed_ms * cpu_millis // 1000


def rates_per_s(weight_ppm, gpu_count, cpu_millis):
    """``(gpu_ms, cpu_ms)`` a running session draws per second, as floats (what :func:`charge_ms` charges
    for 1000 ms, before truncation)."""
    return 1000 * (gpu_count or 0) * weight_ppm / PPM, float(cpu_millis or 0)


def fmt_hours(ms):
    """Hours for people, with enough digits to be true (:func:`aifhub.texts.hours`)."""
    return texts.hours(ms / MS_PER_HOUR)
