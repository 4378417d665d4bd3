"""Ledger units: amounts are integer milliseconds of (weighted) GPU or CPU time; hours are for people."""

from .. import texts

MS_PER_HOUR = 3_600_000
PPM = 1_000_000  # a GPU weight of 1.0 (a full GPU) in millionths


def hours_to_ms(hours):
    return int(round(float(hours) * MS_PER_HOUR))


def ms_to_hours(ms):
    return round(ms / MS_PER_HOUR, 4)


def charge_ms(elapsed_ms, weight_ppm, count):
    """GPU-milliseconds charged for ``elapsed_ms`` of ``count`` devices of weight ``weight_ppm`` (truncated)."""
    return elapsed_ms * weight_ppm * count // PPM


def fmt_hours(ms):
    """Hours for people, with enough digits to be true (:func:`aifhub.texts.hours`)."""
    return texts.hours(ms / MS_PER_HOUR)
