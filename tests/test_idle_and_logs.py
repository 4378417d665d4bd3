"""The pure parts of two #23 fixes, without a hub: what the idle rule counts as use (:class:`UseWatch`),
and a sandbox's bounded log (a real copier process, a real pipe)."""

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from aifhub.isolation import sandbox_log
from aifhub.service.idle import BUSY_CPU_SHARE, UseWatch

T0 = datetime(2026, 12, 8, tzinfo=timezone.utc)


def at(s):
    return T0 + timedelta(seconds=s)


def test_cpu_use_above_the_share_marks_a_sandbox_used_and_idle_noise_does_not():
    watch, key = UseWatch(), ("ana", "")
    watch.cpu(key, 5.0, 0.0, at(0))
    assert watch.last_used[key] == at(0)  # the first look: what it did before is unknown, so it counts as use
    watch.cpu(key, 5.0 + BUSY_CPU_SHARE * 10 * 0.5, 10.0, at(10))  # half the share: an idle server's noise
    assert watch.last_used[key] == at(0)
    watch.cpu(key, 5.0 + 8.0, 20.0, at(20))  # a detached process worked 8 s of the last 10
    assert watch.last_used[key] == at(20)
    watch.cpu(key, 1.0, 30.0, at(30))  # less than before: a new group under the same name, or a process reaped
    assert watch.last_used[key] == at(30)
    watch.forget({("bob", "")})
    assert key not in watch.last_used and key not in watch.samples


def test_a_sandbox_log_keeps_its_first_bytes_and_never_fails_a_writer(tmp_path):
    fd, copier = sandbox_log.open_log(tmp_path, "ana+lab", limit=100_000)
    writer = subprocess.run(
        [sys.executable, "-c", "import os\nfor _ in range(50):\n    os.write(1, b'x' * 65536)\nprint('done')"],
        stdout=fd,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    os.close(fd)
    assert writer.returncode == 0, writer.stderr  # 3 MiB written, none refused
    copier.wait(30)
    path = sandbox_log.log_path(tmp_path, "ana+lab")
    assert path.stat().st_size == 100_000 and oct(path.stat().st_mode & 0o777) == "0o600"
    assert sandbox_log.log_path(tmp_path, "../x y").name == ".._x_y.log"  # no folder of another's
