"""aifhub's benchmarks: each figure a ratio against a baseline measured in the same run.

``python -m bench`` runs them all; ``python -m bench --help`` lists the knobs.
"""
