"""aifhub's Slurm spawner (``aifhub-slurm``): course sandboxes as Slurm jobs on the AI Factory's
supercomputer, charged to the course's Slurm account (docs/slurm.md).

- :mod:`.jobspec`: pure functions, a course as job properties and Slurm's answers in words;
- :mod:`.rest`: slurmrestd (JWT) and the command-line tools as the two ways to reach Slurm;
- :mod:`.address`: the hub's endpoint where a job reports its server's address;
- :mod:`.spawner`: the spawner.
"""

from . import address  # noqa: F401 - registers the hub's address endpoint
from .spawner import SlurmSpawner  # noqa: F401
