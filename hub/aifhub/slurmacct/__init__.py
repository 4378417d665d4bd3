"""The ledger in Slurm's accounting: the association tree (:mod:`.tree`, pure; :mod:`.sync`, reading the ledger and
running sacctmgr) and usage from sacct keyed by job id (:mod:`.usage`). docs/slurm.md."""
