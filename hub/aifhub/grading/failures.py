"""What a failed grading step tells people, and what it leaves to the service's log.

A step (release, collect, feedback, grades export) runs nbgrader in a worker process; when it fails, the
worker's answer carries nbgrader's log and perhaps a Python traceback, with the server's paths in them. None
of that reaches a page, the REST API or the CLI: they get one short sentence (what failed, nbgrader's own
one-line reason with paths cut out, and a reference), and the service's log gets the whole answer under that
reference. A step with nothing to do is no failure: the worker says so in ``reason`` and a plain
``message`` (e.g. ``nothing-graded``), which is passed on as it is.
"""

import logging
import re
import secrets

from ..errors import Refusal
from .runners.worker import failure_lines

log = logging.getLogger("aifhub.grading")

# an absolute path (or a file URL), as nbgrader and Python print them: /srv/aifhub/grading/dl-basics/...
PATH = re.compile(r"file://[^\s'\"]+|(?<![\w.:/])/(?:[^\s/'\"():,;]+/)*[^\s/'\"():,;]+/?")
TRACEBACK = ("Traceback (most recent call last)", 'File "')
MAX_SAID = 160
# reasons a worker gives, with a plain message of its own, for a step that had nothing to do
PLAIN_REASONS = {"nothing-graded", "not-released"}


def scrub(line):
    """``line`` with every absolute path replaced by ``…/<its last part>`` (the file's name says enough)."""

    def short(match):
        last = match.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"…/{last}" if last else "…"

    return PATH.sub(short, line)


def said(text, lines=1):
    """nbgrader's own reason in ``text`` (its log and error), paths cut out: at most ``lines`` short lines."""
    out = []
    for line in failure_lines(text or "", lines=lines):
        if any(mark in line for mark in TRACEBACK):
            continue
        line = scrub(line)
        out.append(line if len(line) <= MAX_SAID else line[: MAX_SAID - 1] + "…")
    return out


def step_refusal(what, answer=None, error=None):
    """The :class:`Refusal` for a failed step ``what`` ("Releasing ps1"): a worker's ``answer`` that is not ok, or
    an ``error`` (the worker died). The details go to the log under a reference named in the message."""
    answer = answer or {}
    if answer.get("reason") in PLAIN_REASONS and answer.get("message"):
        return Refusal(answer["reason"], answer["message"])
    ref = secrets.token_hex(4)
    details = str(error) if error is not None else (answer.get("error") or "")
    log.error(
        "%s failed (reference %s): %s%s",
        what,
        ref,
        details,
        ("\n" + answer["traceback"]) if answer.get("traceback") else "",
    )
    reason = said(details)
    return Refusal(
        "step-failed",
        f"{what} failed" + (f": {reason[0]}" if reason else "") + f". An administrator finds the details in the "
        f"aifhub service's log under reference {ref}.",
    )
