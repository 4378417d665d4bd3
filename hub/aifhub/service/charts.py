"""Small server-side SVG charts: no JavaScript library, nothing loaded from elsewhere, readable by screen readers;
and the two rules every page writes figures by: :func:`hours` and :func:`when`."""

from datetime import datetime
from html import escape

W, H, PAD = 420, 160, 32


def _frame(label, body, css_class="chart", element_id=None):
    ident = f' id="{escape(element_id)}"' if element_id else ""
    return (
        f'<svg class="{css_class}"{ident} viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
        f'aria-label="{escape(label)}"><title>{escape(label)}</title>{body}</svg>'
    )


def _axes():
    return (
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - 8}" y2="{H - PAD}" stroke="#555"/>'
        f'<line x1="{PAD}" y1="8" x2="{PAD}" y2="{H - PAD}" stroke="#555"/>'
    )


def burndown(points, granted, label, element_id=None):
    """Remaining hours over time: ``points`` is ``[(day label, cumulative used hours), ...]``."""
    if not points:
        return _frame(
            label + ": no usage yet",
            _axes() + f'<text x="{PAD + 8}" y="{H / 2}" font-size="12">no usage yet</text>',
            "burndown",
            element_id,
        )
    top = max(granted, 1e-9)
    if len(points) == 1:
        points = points * 2
    n = len(points) - 1
    xs = [PAD + i * (W - PAD - 16) / n for i in range(len(points))]
    ys = [8 + (H - PAD - 8) * (1 - max(granted - used, 0) / top) for _, used in points]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(zip(xs, ys)))
    remaining = max(granted - points[-1][1], 0)
    body = (
        _axes() + f'<path d="{path}" fill="none" stroke="#1f6feb" stroke-width="2"/>'
        f'<text x="{W - 150}" y="20" font-size="11">{escape(hours(remaining))} of {escape(hours(granted))} h left</text>'
        f'<text x="2" y="14" font-size="10">{granted:g}</text><text x="2" y="{H - PAD}" font-size="10">0</text>'
        f'<text x="{PAD}" y="{H - 12}" font-size="10">{escape(points[0][0])}</text>'
        f'<text x="{W - 80}" y="{H - 12}" font-size="10">{escape(points[-1][0])}</text>'
    )
    return _frame(label, body, "burndown", element_id)


def hours(value):
    """Hours as every page writes them: to 0.01 h; an amount above zero but below that reads "<0.01"."""
    value = float(value or 0)
    return "<0.01" if 0 < value < 0.005 else f"{value:.2f}"


def when(value):
    """A moment as every page writes it: ``YYYY-MM-DD HH:MM`` (UTC, to the minute), from a datetime, an ISO
    string or nbgrader's timestamp (``2026-12-08 09:14:03.123456 UTC``); "" for none."""
    if not value:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    text = str(value).strip().removesuffix("UTC").strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text[:16].replace("T", " ")


def amount(value, unit):
    """``value`` with its unit as a person reads it: counts whole ("1 submission", "3 submissions"), hours to 0.01."""
    if isinstance(value, int):
        return f"{value} {unit[:-1] if value == 1 and unit.endswith('s') else unit}"
    return f"{hours(value)} {unit}"


def bars(values, label, element_id=None, unit="h"):
    """A bar chart of ``[(label, value), ...]`` (ints are counts of ``unit``, floats amounts of it)."""
    if not values:
        return _frame(
            label + ": no data yet",
            _axes() + f'<text x="{PAD + 8}" y="{H / 2}" font-size="12">no data yet</text>',
            "bars",
            element_id,
        )
    top = max(v for _, v in values) or 1
    width = (W - PAD - 16) / len(values)
    body = _axes()
    for i, (name, value) in enumerate(values):
        h = (H - PAD - 16) * value / top
        x = PAD + 2 + i * width
        body += (
            f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{max(width - 4, 1):.1f}" height="{h:.1f}" fill="#2da44e">'
            f"<title>{escape(str(name))}: {escape(amount(value, unit))}</title></rect>"
        )
        if len(values) <= 12:
            body += f'<text x="{x:.1f}" y="{H - 14}" font-size="9">{escape(str(name))}</text>'
    body += f'<text x="2" y="14" font-size="10">{top if isinstance(top, int) else escape(hours(top))}</text>'
    return _frame(label, body, "bars", element_id)
