"""``python -m bench`` (``make bench``): every benchmark, one table, ``docs/benchmarks.md``."""

import sys

from .suite import main

sys.exit(main())
