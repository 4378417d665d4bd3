"""The spawn form: one card per course the learner may see, disabled with the reason when it cannot start."""

from html import escape

from ..texts import hours


def _card(course, first):
    gpu = course["sandbox"]["gpu"]
    if gpu:
        hw = f"GPU {escape(gpu['kind'])} × {gpu['count']}"
        share = course.get("gpu_share")
        if share:
            hw += f" ({escape(share['title'])})"
        if course["gpu_free"] is not None:
            hw += f" · {course['gpu_free']} free"
    else:
        hw = "CPU only"
    for q in course.get("quota") or []:
        if q["scope"] == "learner":
            left = max(q["limit_hours"] - q["used_hours"] - q["held_hours"], 0)
            hw += f" · {hours(left)} of {q['limit_hours']:g} {q['unit'].upper()}-hours left this {escape(q['window'])}"
    disabled = "" if course["can_start"] else " disabled"
    checked = " checked" if first and course["can_start"] else ""
    why = (
        ""
        if course["can_start"]
        else f'<p class="aifhub-why" id="why-{escape(course["id"])}">{escape(course["why_not"])}</p>'
    )
    described = f' aria-describedby="why-{escape(course["id"])}"' if why else ""
    return f"""
<label class="aifhub-card{" aifhub-disabled" if disabled else ""}">
  <input type="radio" name="course" value="{escape(course["id"])}"{checked}{disabled}{described}>
  <strong>{escape(course["title"])}</strong>
  <span class="aifhub-meta">{escape(course["kind"])} · {hw}</span>
  {why}
</label>"""


_UNITS = {"whole": "GPUs", "mig": "MIG slices", "timeslice": "time-shares", "mps": "MPS shares"}


def capacity(pool):
    """The line of free capacity per GPU kind of the local pool ('' when the cluster places GPUs or there are none)."""
    kinds = (pool or {}).get("kinds") or []
    if not kinds:
        return ""
    parts = []
    for k in kinds:
        unit = _UNITS.get(k.get("sharing", "whole"), "GPUs")
        on = f" on {k['gpus']} GPU{'s' if k['gpus'] != 1 else ''}" if k.get("sharing", "whole") != "whole" else ""
        parts.append(f"{escape(k['kind'])}: {k['free']} of {k['total']} {unit} free{on}")
    return f'<p class="aifhub-capacity">GPUs now · {" · ".join(parts)}</p>'


def render_form(offers, isolated):
    courses = offers["courses"]
    if not courses:
        return "<p>No course is open to you yet. Enrol in a course first.</p>"
    first_startable = next((c["id"] for c in courses if c["can_start"]), None)
    cards = "".join(_card(c, c["id"] == first_startable) for c in courses)
    warning = (
        ""
        if isolated
        else (
            '<p class="alert alert-warning" role="alert">This hub does not run as root: '
            "sandboxes are not isolated from each other.</p>"
        )
    )
    return f"""
<style>
  .aifhub-cards {{ display: grid; gap: .75rem; }}
  .aifhub-card {{ display: block; border: 1px solid #ccc; border-radius: 6px; padding: .75rem; }}
  .aifhub-disabled {{ opacity: .65; }}
  .aifhub-meta {{ display: block; color: #555; }}
  .aifhub-why {{ margin: .25rem 0 0; color: #8a1c1c; }}
</style>
{warning}
{capacity(offers.get("pool"))}
<fieldset class="aifhub-cards"><legend>Choose a course</legend>{cards}</fieldset>
"""
