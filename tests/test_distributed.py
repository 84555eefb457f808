"""The study over several processes (analysis/engine/distributed.py): the numbers of one process, and
--out's guarantees across ranks.

In this process: the batches dealt, and shards of one plan merged, against the whole run. In real
processes on gloo (CPU, OMP_NUM_THREADS=1, rendezvous on 127.0.0.1): torchrun with 2 processes against one
process on the same prompts, and a rank killed or interrupted mid-run, launched both by torchrun and by hand
(RANK, WORLD_SIZE, … set here), so that every rank's exit status is seen.
"""

import csv
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import record
from test_corpus import values
from test_faults import state

import outdir
import weights
from analysis import engine, inputs, measures, study
from analysis.engine import distributed

ROOT = Path(__file__).parent.parent
PROMPTS = inputs.DEFAULT_PROMPTS.read_text().splitlines()[:25]
# 13 of the 25 (an odd number, a seeded sample), in batches of 2: 8 prompts padded for figure 5 in 4 batches,
# then 3 batches of the rest; rank 0 runs those 4 and the example prompt's, rank 1 the other 2.
ARGS = ("--model", "bundled", "--max-prompts", "13", "--batch-size", "2")
TIMEOUT = 240  # seconds for one run of the command, on a machine much slower than a quiet one


# ---------------------------------------------------------------------------------------------
# In this process


def test_batches_are_dealt_once_each_balanced_with_what_is_kept_whole_on_rank_0():
    lengths = [3, 5, 5, 7, 9, 9, 12, 20, 4, 6]
    plan = engine.plan_batches(lengths, 2, [0, 7], 4, 512, 64)
    owner = distributed.deal(plan, lengths, example=4, n_ranks=3)
    assert len(owner) == len(plan) and set(owner) <= {0, 1, 2}
    for (chosen, width), rank in zip(plan, owner):
        if width is not None or 4 in chosen:  # the padding batch and the example prompt's: kept whole on rank 0
            assert rank == 0
    load = [sum(len(c) * (w or max(lengths[i] for i in c)) for (c, w), o in zip(plan, owner) if o == r) for r in range(3)]
    largest = max(len(c) * (w or max(lengths[i] for i in c)) for c, w in plan)
    assert max(load) - min(load) <= largest
    assert distributed.deal(plan, lengths, 4, 1) == [0] * len(plan)


@pytest.fixture(scope="module")
def processed(small_checkpoint):
    return weights.load(small_checkpoint)


def test_shards_of_one_plan_merge_into_the_whole_run(processed):
    """What each rank does, in one process: every batch run by one of 3 shards, their NormStats merged. Counts
    equal exactly, figure 12's included (its sample drawn from the whole plan, here a real sample: 16 of
    ~150 pairs); float64 sums equal but for the order of their additions."""
    model, tokenizer = processed
    rng = np.random.default_rng(0)
    prompts = [np.array([tokenizer.eot, *rng.integers(0, 50000, size=rng.integers(2, 30))]) for _ in range(31)]
    lengths = [len(p) for p in prompts]
    padded = study.padding_picks(lengths, model.cfg.n_ctx)
    kw = dict(example=5, padded=padded, reservoir=16)
    whole = engine.collect(model, prompts, 4, tokenizer.eot, **kw)
    plan = engine.plan_batches(lengths, 4, padded, measures.PADDING_EXTRA, engine.BATCH_POSITIONS, model.cfg.n_ctx)
    owner = distributed.deal(plan, lengths, 5, 3)
    shards = [
        engine.collect(model, prompts, 4, tokenizer.eot, **kw, only={b for b, o in enumerate(owner) if o == r}) for r in range(3)
    ]
    assert [s.n_prompts for s in shards] == [sum(len(c) for (c, _), o in zip(plan, owner) if o == r) for r in range(3)]
    assert all(s.n_prompts for s in shards)
    merged = shards[0].merge(shards[1]).merge(shards[2])
    (floats, counts), (whole_floats, whole_counts) = merged.sums(), whole.sums()
    np.testing.assert_array_equal(counts, whole_counts)
    np.testing.assert_allclose(floats, whole_floats, rtol=1e-12, atol=0)
    assert merged.early_seen == whole.early_seen > 16 and merged.early_kept == whole.early_kept == 16
    assert merged.worst_excess == whole.worst_excess
    for key in whole.padding:
        np.testing.assert_array_equal(merged.padding[key], whole.padding[key])
    for stream in measures.STREAMS:
        np.testing.assert_array_equal(merged.example[stream], whole.example[stream])
    for key in ("active_early_positions", "active_other_layer"):
        np.testing.assert_array_equal(merged.early_controls()[key], whole.early_controls()[key])


def test_one_process_is_no_team_and_torchruns_variables_are_checked():
    assert distributed.Team.from_environment({}) is None
    assert distributed.Team.from_environment({"WORLD_SIZE": "1", "RANK": "0"}) is None
    team = distributed.Team.from_environment({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (team.rank, team.size, team.local_rank, team.leads) == (3, 4, 1, False)
    assert team.device("cpu") == "cpu"
    with pytest.raises(outdir.UsageError, match=r"torchrun's variables are incomplete .*RANK=None"):
        distributed.Team.from_environment({"WORLD_SIZE": "2"})
    with pytest.raises(outdir.UsageError, match="RANK 2 is outside WORLD_SIZE 2"):
        distributed.Team.from_environment({"WORLD_SIZE": "2", "RANK": "2"})


# ---------------------------------------------------------------------------------------------
# Real processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(**extra) -> dict[str, str]:
    """One thread per process, as torchrun gives each; the rendezvous and gloo's connections on 127.0.0.1 only."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", distributed.TEST_SIGNAL)}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    if sys.platform == "linux":
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env | extra


def growth(*args) -> list[str]:
    return [sys.executable, "-m", "analysis.growth", *map(str, args)]


def torchrun(*args) -> list[str]:
    rendezvous = ["--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port())]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, "-m", "analysis.growth", *map(str, args)]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


@pytest.fixture(scope="module")
def one_process(prompts_file, tmp_path_factory) -> Path:
    """The report of one process, with one thread, as each rank has."""
    out = tmp_path_factory.mktemp("one") / "report"
    result = subprocess.run(
        growth(*ARGS, "--prompts-file", prompts_file, "--out", out),
        env=environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    return out


def numbers(out: Path) -> dict:
    """Every leaf of summary.json and every cell of layers.csv, by its path."""
    with open(out / "layers.csv", newline="") as f:
        rows = {f"layers.csv[{i}].{key}": value for i, row in enumerate(csv.DictReader(f)) for key, value in row.items()}
    return values(json.loads((out / "summary.json").read_text())) | rows


NUMBER = r"-?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?|-?inf|nan"  # a float as layers.csv writes it


def test_two_processes_under_torchrun_give_the_numbers_of_one(one_process, prompts_file, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        torchrun(*ARGS, "--prompts-file", prompts_file, "--out", out),
        env=environment(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("torchrun: 2 processes over gloo; this log is rank 0's") == 1  # one log, rank 0's
    assert re.search(r"bundled: rank 0 runs 5 of 7 batches: 9 prompts, \d+ tokens", result.stdout)
    assert re.search(r"bundled: rank 1 runs 2 of 7 batches: 4 prompts, \d+ tokens", result.stdout)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["distributed"] == {"world_size": 2, "prompts_per_rank": {"bundled": [9, 4]}}
    assert "distributed" not in json.loads((one_process / "summary.json").read_text())
    mine, theirs = numbers(out), numbers(one_process)
    assert {k for k in mine.keys() - theirs.keys()} == {k for k in mine if k.startswith(".distributed.")}
    assert theirs.keys() <= mine.keys()
    # Each batch runs as it does in one process (the same prompts, padding and thread count), so every
    # per-batch number is bit for bit the same; only the order in which the ranks' float64 sums are added
    # differs. Counts (prompts, tokens, violations, figure 12's counts) must be equal; a float may differ
    # by that reassociation, ~1e-16 of itself: 1e-6 is the rounding of the float32 norms it is a mean of.
    largest = 0.0
    for key, expected in theirs.items():
        found = mine[key]
        if isinstance(expected, float) or (isinstance(expected, str) and re.fullmatch(NUMBER, expected)):
            expected, found = float(expected), float(found)
            if not (expected == found or (math.isnan(expected) and math.isnan(found))):
                largest = max(largest, abs(found - expected) / abs(expected) if expected else math.inf)
        else:
            assert found == expected, key
    record("2 processes against 1: largest relative difference of summary.json and layers.csv", largest, 1e-6)


def ranks_by_hand(*args, env) -> list[subprocess.Popen]:
    """The two ranks launched as torchrun would launch them, each a process of ours."""
    env = env | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    return [
        subprocess.Popen(
            growth(*args),
            env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]


@pytest.mark.parametrize(
    "launcher, signal_at",
    [
        ("by hand", "1@first-batch@SIGKILL"),  # a rank lost in its forward passes
        ("by hand", "1@all-done@SIGTERM"),  # interrupted while rank 0 writes the report: no publishing
        ("torchrun", "1@first-batch@SIGKILL"),
    ],
)
def test_a_rank_lost_or_interrupted_mid_run_leaves_out_as_it_was(launcher, signal_at, one_process, prompts_file, tmp_path):
    out = tmp_path / "report"
    subprocess.run(["cp", "-a", str(one_process), str(out)], check=True)  # a previous report, to be kept
    before = state(tmp_path)
    args = (*ARGS, "--prompts-file", prompts_file, "--out", out)
    env = environment(**{distributed.TEST_SIGNAL: signal_at})
    started = time.monotonic()
    if launcher == "torchrun":
        result = subprocess.run(torchrun(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode != 0
        # torchrun's report of its workers: every rank's exit status, and none of them 0
        exits = dict(re.findall(r"rank\s*: (\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*: (-?\d+)", result.stderr))
        assert exits.keys() == {"0", "1"} and "0" not in exits.values(), result.stderr
    else:
        ranks = ranks_by_hand(*args, env=env)
        ended = [rank.communicate(timeout=TIMEOUT) for rank in ranks]
        expected = {"SIGKILL": -9, "SIGTERM": 143}[signal_at.split("@")[2]]
        assert [rank.returncode for rank in ranks] == [1, expected], ended
        (line,) = [line for line in ended[0][1].splitlines() if line.strip()]  # rank 0: one line
        assert re.fullmatch(
            rf"error: rank 0 of 2 stops: another rank failed, stopped or did not answer within 30 minutes "
            rf"\(gloo: .+\); {re.escape(str(out))} is unchanged",
            line,
        ), line
    seconds = time.monotonic() - started
    assert state(tmp_path) == before  # the previous report byte for byte, and no scratch folder left
    record(f"seconds until every rank had stopped ({launcher}, {signal_at})", seconds, TIMEOUT)


@pytest.mark.parametrize("case", ["out", "argument"])
def test_a_refusal_under_torchrun_is_every_ranks_one_line_before_they_join(case, prompts_file, tmp_path):
    """Every rank checks the arguments and --out before the process group forms and exits 2 with the same
    line, unless torchrun, seeing the first refusal, stopped it sooner (SIGTERM, before it had a line to say):
    none fails at a collective or is interrupted in the study. torchrun then prints its own summary of the
    failed workers (README, "Beyond one machine")."""
    out = tmp_path / "notes.txt"
    out.write_text("mine")
    extra = ("--batch-size", "0") if case == "argument" else ()
    args = (*ARGS, "--prompts-file", prompts_file, "--out", out, *extra)
    result = subprocess.run(torchrun(*args), env=environment(), cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    expected = {"out": f"error: --out {out} is an existing file, not a folder", "argument": "error: --batch-size must be"}[case]
    refusals = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert refusals and all(line.startswith(expected) for line in refusals), result.stderr
    assert not re.search(r"interrupted|stops|could not join", result.stderr), result.stderr
    exits = dict(re.findall(r"rank\s*: (\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*: (-?\d+)", result.stderr))
    # the first rank to refuse exits 2 (torchrun's "Root Cause"); another may be stopped by torchrun first
    assert "2" in exits.values() and set(exits.values()) <= {"2", "-15"}, result.stderr
    assert len(refusals) <= 2, result.stderr  # one line per rank at most
    assert out.read_text() == "mine"
