"""A real Slurm on one machine for aifhub's `slurm` tests and `make slurm` (docs/slurm.md).

Debian's packages (munge, slurmctld, slurmd, slurmdbd with MariaDB, slurmrestd), started in a private
folder with their own ports and their own munge socket, no systemd. Two compute nodes (two slurmd with
`-N`, each on its own port at 127.0.0.1) with 2 GPUs each as real `gres/gpu`: the GPUs are character
device nodes with NVIDIA's major number (195) made in the private folder and named in gres.conf with
`File=` and `AutoDetect=off`. What is simulated: the GPUs (no driver behind the nodes) and the second
machine (both nodes are this one).
"""

from .slurm import SlurmError, LocalSlurm  # noqa: F401
