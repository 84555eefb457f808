"""The study at scale: the machinery that makes analysis.measures' definitions fast and small. Skip it on a
first reading; nothing here changes a number, and tests/test_engine.py checks each piece against the plain
definition it speeds up.

- collect.py  runs every prompt in batches of similar length (`plan_batches`), each pass writing its
              per-position reductions into one buffer made before it (`per_position_norms`, the fast form
              of `measures.per_position`), and keeps only running sums (`collect`).
- stats.py    `NormStats`: those running sums, a fixed-bin histogram and figure 12's sample, of a size set
              by the model, not by the number of prompts; mergeable across shards by addition.
- memory.py   glibc's malloc thresholds, fixed so that one batch's freed memory is reused by the next.
- processes.py `two_at_once`: the figures drawn by two processes where there are two cores.
- distributed.py `Team`, `collect_shared`: the study under torchrun, each rank running a share of the
              batches, their sums added up by torch.distributed: the numbers of one process.
"""

from .collect import BATCH_POSITIONS, by_length, collect, per_position_norms, plan_batches
from .distributed import RankFailed, Team, collect_shared
from .memory import fix_malloc_thresholds
from .processes import two_at_once
from .stats import HISTOGRAM_EDGES, RESERVOIR, NormStats

__all__ = [
    "BATCH_POSITIONS",
    "HISTOGRAM_EDGES",
    "RESERVOIR",
    "NormStats",
    "RankFailed",
    "Team",
    "by_length",
    "collect",
    "collect_shared",
    "fix_malloc_thresholds",
    "per_position_norms",
    "plan_batches",
    "two_at_once",
]
