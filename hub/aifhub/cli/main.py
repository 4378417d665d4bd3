"""Entry point of the ``aifhub`` command."""

import argparse
import logging
import sys

from .. import __version__
from . import courses, ledger, up
from . import k8s
from . import assignments
from . import training
from . import slurm
from .common import CLIError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="aifhub",
        description="aifhub: training platform of an AI Factory (JupyterHub + GPU sandboxes + nbgrader).",
    )
    parser.add_argument("--version", action="version", version=f"aifhub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up.register(sub)
    courses.register(sub)
    ledger.register(sub)
    k8s.register(sub)
    assignments.register(sub)
    training.register(sub)
    training.register_credentials(sub)
    slurm.register(sub)
    return parser


def main(argv=None):
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CLIError as exc:
        print(f"aifhub: {exc}", file=sys.stderr)
        return exc.status


if __name__ == "__main__":
    sys.exit(main())
