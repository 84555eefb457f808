"""The study over many processes: torchrun's ranks each run a share of the batches, and their sums are added.

Speed machinery, not the study: the numbers are those of one process. Every rank reads and tokenizes the
same prompts (the --max-prompts sample is seeded), so each computes the same batch plan (`plan_batches`)
and figure 12's sample, both from the prompts' lengths alone. Each batch then runs on one rank (`deal`),
exactly as it would in one process (the same prompts, the same padding, so the same arithmetic), and what
the ranks keep is added up (`Team.add_up`): sums, counts, histograms and figure 12's counts by an
all-reduce, the worst excess by maximum. Counts come out equal to one process's; the float64 sums are
added in another order, which changes them by their rounding only (about 1e-16 relative).

What is kept whole, not summed (the example prompt's per-position norms, the padding batch's means), comes
from batches that `deal` gives to rank 0, which also measures the weights, draws the figures and writes
the report. Only rank 0 touches --out, and it puts the report in place only after `Team.all_done`, a last
collective that every rank reaches only when its own part succeeded. A rank that fails or is killed makes
the others' next collective fail (its connections close) or, if it hangs, time out after TIMEOUT; they
then stop with one line (`RankFailed`, exit status 1) and --out is as it was. Under torchrun, the first
rank to exit non-zero also makes torchrun stop the others (SIGTERM, which they take as an interrupt).

Without torchrun's variables (WORLD_SIZE unset or 1), `Team.from_environment` is None and none of this runs.
"""

import datetime
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

import outdir
from analysis import measures
from minigpt import GPT2

from .collect import BATCH_POSITIONS, collect, plan_batches
from .stats import NormStats

# How long a rank waits at a collective for the others. Long enough for the slowest wait of a sound run:
# the other ranks wait for rank 0 to measure the weights and draw the figures (seconds to a minute at
# gpt2-xl), and for a rank that downloads its model while the others have it cached.
TIMEOUT = datetime.timedelta(minutes=30)

# For tests/test_distributed.py only: "RANK@MOMENT@SIGNAL" makes that rank send itself that signal at a
# moment, "first-batch" (its first batch just done) or "all-done" (half a second into its wait at the last
# collective), as a process killed (SIGKILL: a machine lost, the out-of-memory killer) or interrupted
# (SIGTERM, SIGINT) mid-run would be.
TEST_SIGNAL = "MINIGPT_TEST_SIGNAL_RANK"


class RankFailed(Exception):
    """A collective failed: another rank failed, stopped or hung. One line, exit status 1, --out unchanged."""


@dataclass
class Team:
    """This process's place among torchrun's: its rank of `size`, and its rank on this machine."""

    rank: int
    size: int
    local_rank: int
    backend: str = ""  # gloo or nccl, once joined

    @classmethod
    def from_environment(cls, environ=os.environ) -> "Team | None":
        """The team torchrun's variables describe (RANK, WORLD_SIZE, LOCAL_RANK; MASTER_ADDR and MASTER_PORT
        are read when joining); None for one process."""
        try:
            size = int(environ.get("WORLD_SIZE", "1"))
            if size <= 1:
                return None
            rank, local_rank = int(environ["RANK"]), int(environ.get("LOCAL_RANK", "0"))
        except (KeyError, ValueError):
            names = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
            found = ", ".join(f"{name}={environ.get(name)!r}" for name in names)
            raise outdir.UsageError(f"torchrun's variables are incomplete or not numbers ({found}); run under torchrun") from None
        if not 0 <= rank < size:
            raise outdir.UsageError(f"RANK {rank} is outside WORLD_SIZE {size}")
        return cls(rank, size, local_rank)

    @property
    def leads(self) -> bool:
        """Rank 0: it measures the weights and writes the report."""
        return self.rank == 0

    def device(self, asked: str) -> str:
        """--device for this rank: "auto" or a bare "cuda" is cuda:LOCAL_RANK where CUDA exists (one GPU per
        process, as torchrun's --nproc-per-node counts them); any other device is taken as given."""
        if asked == "cuda" or (asked == "auto" and torch.cuda.is_available()):
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if self.local_rank >= count:
                raise outdir.UsageError(
                    f"--device {asked}: rank {self.rank} has LOCAL_RANK {self.local_rank}, but this machine has {count} "
                    "CUDA GPU(s); give torchrun --nproc-per-node at most that"
                )
            return f"cuda:{self.local_rank}"
        return asked

    def join(self, device: torch.device, environ=os.environ) -> None:
        """Join the others (torchrun's rendezvous, env://): nccl between GPUs, gloo otherwise (`choose_backend`)."""
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        self.backend = choose_backend(device, int(environ.get("LOCAL_WORLD_SIZE", "1")), gpus)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(self.backend, timeout=TIMEOUT)
        except (RuntimeError, ValueError) as error:
            raise RankFailed(f"rank {self.rank} of {self.size} could not join the others ({_first_line(error)})") from None

    def leave(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()

    def add_up(self, stats: NormStats, seconds: float) -> tuple[list[int], list[float]]:
        """Add every rank's sums into `stats` (in place, on every rank); return each rank's (prompts run,
        seconds taken), for the report and the log."""
        floats, counts = stats.sums()
        mine = np.arange(self.size) == self.rank
        floats = self._all_reduce(np.concatenate([floats, np.where(mine, seconds, 0.0)]), dist.ReduceOp.SUM)
        counts = self._all_reduce(np.concatenate([counts, np.where(mine, stats.n_prompts, 0)]), dist.ReduceOp.SUM)
        worst = self._all_reduce(np.array([stats.worst_excess]), dist.ReduceOp.MAX)
        n = self.size
        stats.set_sums(floats[:-n], counts[:-n])
        stats.worst_excess = float(worst[0])
        return counts[-n:].tolist(), floats[-n:].tolist()

    def smallest(self, value: int) -> int:
        """The smallest of every rank's value: one batch plan for all, though each rank's GPU has its own free memory."""
        return int(self._all_reduce(np.array([value], dtype=np.int64), dist.ReduceOp.MIN)[0])

    def all_done(self) -> None:
        """The last collective: every rank has done its part (rank 0: the report written, not yet in place)."""
        self.test_signal("all-done")
        self._all_reduce(np.ones(1, dtype=np.int64), dist.ReduceOp.MIN)

    def _all_reduce(self, values: np.ndarray, op) -> np.ndarray:
        # nccl reduces tensors on the GPU; gloo on the CPU. float64 and int64 are exact in both.
        tensor = torch.from_numpy(values).to(f"cuda:{torch.cuda.current_device()}" if self.backend == "nccl" else "cpu")
        try:
            work = dist.all_reduce(tensor, op=op, async_op=True)
            # Waited for here, in Python: inside torch's wait, SIGINT and SIGTERM would wait too, and a rank
            # interrupted at the last collective would take part in it once the others came, letting rank 0 publish.
            while not work.is_completed():
                time.sleep(0.01)
            work.wait()
        except RuntimeError as error:
            raise RankFailed(
                f"rank {self.rank} of {self.size} stops: another rank failed, stopped or did not answer within "
                f"{TIMEOUT.total_seconds() / 60:.0f} minutes ({self.backend}: {_first_line(error)})"
            ) from None
        return tensor.cpu().numpy()

    def test_signal(self, moment: str) -> None:
        """TEST_SIGNAL's hook (tests only)."""
        rank, at, name = (os.environ.get(TEST_SIGNAL, "") + "@@").split("@")[:3]
        if rank == str(self.rank) and at == moment:
            threading.Timer(0.5 if moment == "all-done" else 0, os.kill, (os.getpid(), signal.Signals[name])).start()


def choose_backend(device: torch.device, processes_here: int, gpus_here: int) -> str:
    """nccl where each of this machine's processes has a GPU of its own; gloo on the CPU, and where processes
    share a GPU (torchrun --nproc-per-node 2 on one GPU, --device cuda:0): NCCL refuses two ranks on one
    device ("Duplicate GPU detected"). gloo adds the sums up on the CPU, where they are a few kilobytes."""
    return "nccl" if device.type == "cuda" and processes_here <= gpus_here else "gloo"


def end_failed_rank(status: int) -> None:
    """End a rank that failed (exit status not 0) at once, with os._exit, once its one line is printed.

    A normal exit would wait for the collective it may have left running (torch's process group finishes
    its pending work before it goes): the rank would stay, and could still complete that collective
    when the others reach it. Gone at once, its connections close, and every other rank's next collective
    fails (RankFailed). Nothing is left to clean up: --out's scratch folder went as the error passed."""
    if status != 0 and dist.is_initialized():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _first_line(error: Exception) -> str:
    """A torch.distributed error's gist: its first sentence, without the C++ source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip().splitlines()[0] if str(error).strip() else repr(error))
    return text.split(". ")[0].rstrip(".")


def deal(plan: list[tuple[list[int], int | None]], lengths: list[int], example: int | None, n_ranks: int) -> list[int]:
    """The rank that runs each batch of the plan. The batches whose values rank 0 keeps whole (the padding
    batch, width not None, and the example prompt's) go to rank 0; then the others, largest first, each to
    the rank with the fewest padded positions so far (ties to the lower rank), so that the ranks' loads end
    within about one batch of each other."""
    positions = [len(chosen) * (width or max(lengths[i] for i in chosen)) for chosen, width in plan]
    owner = [0 if width is not None or example in chosen else None for chosen, width in plan]
    load = [0] * n_ranks
    load[0] = sum(p for p, o in zip(positions, owner) if o == 0)
    for b in sorted((b for b, o in enumerate(owner) if o is None), key=lambda b: -positions[b]):
        owner[b] = min(range(n_ranks), key=lambda r: load[r])
        load[owner[b]] += positions[b]
    return owner


def collect_shared(
    team: Team,
    model: GPT2,
    prompts: list,
    batch_size: int,
    pad: int,
    *,
    example: int,
    padded: list[int] | None,
    log,
    name: str,
    max_positions: int = BATCH_POSITIONS,
) -> tuple[NormStats, list[int]]:
    """engine.collect over the team: this rank runs its share of the plan's batches, then every rank's sums
    are added. Returns the statistics of all the prompts (the example's and the padding batch's on rank 0
    only) and how many prompts each rank ran. max_positions: this rank's choice; the team runs the smallest."""
    lengths = [len(p) for p in prompts]
    max_positions = team.smallest(max_positions)  # sized by each GPU's free memory, which differs between ranks
    # The plan collect itself makes: the same batches as one process with that max_positions.
    plan = plan_batches(lengths, batch_size, padded, measures.PADDING_EXTRA, max_positions, model.cfg.n_ctx)
    owner = deal(plan, lengths, example, team.size)
    for r in range(team.size):
        batches = [b for b, o in enumerate(owner) if o == r]
        n, tokens = sum(len(plan[b][0]) for b in batches), sum(lengths[i] for b in batches for i in plan[b][0])
        log(f"{name}: rank {r} runs {len(batches)} of {len(plan)} batches: {n} prompts, {tokens} tokens")
    mine = {b for b, o in enumerate(owner) if o == team.rank}
    first = True
    started = time.perf_counter()
    n_mine = sum(len(plan[b][0]) for b in mine)
    with log.counting(f"{name}: forward passes, rank {team.rank}'s share", n_mine, "prompt") as advance:

        def on_batch(n: int) -> None:
            nonlocal first
            advance(n)
            if first:
                team.test_signal("first-batch")
                first = False

        stats = collect(
            model,
            prompts,
            batch_size,
            pad,
            example=example,
            padded=padded,
            max_positions=max_positions,
            only=mine,
            on_batch=on_batch,
        )
    prompts_per_rank, seconds = team.add_up(stats, time.perf_counter() - started)
    took = ", ".join(f"{s:.1f} s (rank {r})" for r, s in enumerate(seconds))
    log(f"{name}: every rank's sums added up; its forward passes took {took}")
    return stats, prompts_per_rank
