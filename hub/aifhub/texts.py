"""Text that goes back to people: what they sent, quoted short in messages, and cells of CSV exports.

A message that quotes its input whole lets a request make the answer (and the log line) as large
as it likes; a CSV cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return) is
run as a formula by spreadsheets, so a user named ``=HYPERLINK(...)`` would be one in an export.
"""

import math

MAX_SHOWN = 60
MAX_MESSAGE = 500
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def shown(value, limit=MAX_SHOWN):
    """``value`` as quoted in a message: its repr, cut to about ``limit`` characters."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def message(text, limit=MAX_MESSAGE):
    """A whole message, cut to ``limit`` characters."""
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


def csv_cell(value):
    """A CSV cell a spreadsheet shows as text: a string that would start a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_row(row):
    return {key: csv_cell(value) for key, value in row.items()}


def hours(h):
    """A number of hours for people, with enough digits to be true: two decimals from 0.1 h on (none from 100 h on)
    and below that two significant digits, so that a quota of 0.003 GPU-hours reads "0.003", never "0.00"."""
    if h >= 100:
        return f"{h:.0f}"
    if h >= 0.1 or h <= 0:
        return f"{max(h, 0):.2f}"
    decimals = 1 - math.floor(math.log10(h))  # two significant digits
    return f"{h:.{decimals}f}".rstrip("0")
