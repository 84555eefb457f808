"""The study at scale: the machinery that makes analysis.measures' definitions fast and small. Skip it on a
first reading; nothing here changes a number, and tests/test_engine.py checks each piece against the plain
definition it speeds up.

- batching.py how many positions one forward pass takes: 512 on the CPU, on a GPU as many as its free memory holds.
- collect.py  runs every prompt in batches of similar length (`plan_batches`), each pass writing its
              per-position reductions into one buffer made before it (`per_position_norms`, the fast form
              of `measures.per_position`), and keeps only running sums (`collect`).
- stats.py    `NormStats`: those running sums, a fixed-bin histogram and figure 12's sample, of a size set
              by the model, not by the number of prompts; mergeable across shards by addition.
- distributed.py `Team`, `collect_shared`: the study under torchrun, each rank running a share of the
              batches, their sums added up by torch.distributed: the numbers of one process.
"""

from . import batching
from .collect import BATCH_POSITIONS, by_length, collect, per_position_norms, plan_batches, positions_per_pass
from .distributed import RankFailed, Team, collect_shared
from .stats import HISTOGRAM_EDGES, RESERVOIR, NormStats

__all__ = [
    "BATCH_POSITIONS",
    "HISTOGRAM_EDGES",
    "RESERVOIR",
    "NormStats",
    "RankFailed",
    "Team",
    "batching",
    "by_length",
    "collect",
    "collect_shared",
    "per_position_norms",
    "plan_batches",
    "positions_per_pass",
]
