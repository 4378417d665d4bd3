"""`make slurm`: start the local Slurm (in the background) and print the settings aifhub needs as export lines.

eval "$(make -s slurm)"     # start it (or find it running) and take its settings
aifhub up --sandboxes slurm
make slurm ARGS=--stop      # stop it
"""

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from . import LocalSlurm, SlurmError

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="make slurm", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--state-dir", default=str(REPO / ".slurm"), help="where it keeps its state and logs (default .slurm/)"
    )
    parser.add_argument("--stop", action="store_true", help="stop the running one")
    parser.add_argument(
        "--site-accounts",
        type=int,
        default=20,
        help="Unix accounts aifl<uid> for the first uids `aifhub up` hands to learners (default 20): Slurm runs "
        "jobs as them",
    )
    parser.add_argument("--first-uid", type=int, default=200000, help="the service's first learner uid (200000)")
    args = parser.parse_args(argv)
    state = Path(args.state_dir).resolve()
    record = state / "running.json"
    if os.geteuid() != 0:
        print(
            "make slurm: slurmd runs jobs as learners' accounts and munge, slurmdbd need root: run it as root",
            file=sys.stderr,
        )
        return 1
    running = json.loads(record.read_text()) if record.exists() else None
    if running and not all(alive(pid) for pid in running["pids"].values()):
        for pid in running["pids"].values():
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        running = None
    if args.stop:
        if running:
            for pid in running["pids"].values():
                os.kill(pid, signal.SIGTERM)
            for name in running.get("accounts", []):
                subprocess.run(["userdel", name], capture_output=True)
            print(f"# stopped the local Slurm in {state}")
        record.unlink(missing_ok=True)
        return 0
    if not running:
        from slurmkit import SiteAccounts, Traversable, code_paths

        state.mkdir(parents=True, exist_ok=True)
        state.chmod(0o755)
        Traversable([*code_paths(), state]).open()
        accounts = SiteAccounts(state / "homes", args.first_uid, args.site_accounts).create()
        slurm = LocalSlurm(state / "cluster")
        try:
            slurm.start()
        except SlurmError as exc:
            slurm.stop()
            print(f"make slurm: {exc}", file=sys.stderr)
            return 1
        running = {
            "settings": slurm.settings(),
            "pids": {k: p.pid for k, p in slurm.procs.items()},
            "ready_s": slurm.timings["ready_s"],
            "accounts": accounts.made,
        }
        record.write_text(json.dumps(running))
        print(
            f"# local Slurm up in {slurm.timings['ready_s']} s (2 nodes, 2 GPUs each as gres/gpu); logs in {state / 'cluster' / 'log'}"
        )
    else:
        print(f"# local Slurm already running in {state}")
    for name, value in running["settings"].items():
        print(f"export {name}={value}")
    print("export AIFHUB_SLURM_HOST=127.0.0.1")
    print("# then: aifhub up --sandboxes slurm; aifhub slurm sync (accounts); make slurm ARGS=--stop")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
