"""Faults a user meets: --out naming their own files, interrupts, full disks, missing devices, and the
download path through a real hub-protocol server (olah on 127.0.0.1) with its cache.

Every run of the command here is a real process: signals, exit codes and the one-line errors are what a
user sees. "Unchanged" means every file's bytes, mode and modification time, and no file added.
"""

import hashlib
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HubServer

import outdir
import weights
from analysis import engine, growth, rates
from analysis.progress import Progress

PROMPTS = "The cat sat on the mat.\nRain is expected tomorrow.\n"
ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text(PROMPTS)
    return path


def command(*args) -> list[str]:
    return [sys.executable, "-m", "analysis.growth", *map(str, args)]


def run_cli(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    if env is None:  # the repository on the path from any cwd: minigpt need not be installed to be tested
        env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=300, env=env, **kwargs)


def error_line(result) -> str:
    """The one line a failed run prints; fails the test if there is more (a traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def state(folder: Path) -> dict[str, tuple]:
    """Everything observable about the files below folder: content hash, mode and mtime of each."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        found[str(path.relative_to(folder))] = (digest, info.st_mode, info.st_mtime_ns)
    return found


@pytest.fixture(scope="module")
def previous_report(small_checkpoint, prompts, tmp_path_factory) -> Path:
    """A finished report, made once by the command; tests copy it before letting a run loose on it."""
    out = tmp_path_factory.mktemp("previous") / "report"
    assert growth.main(["--model", str(small_checkpoint), "--prompts-file", str(prompts), "--out", str(out)]) == 0
    return out


@pytest.fixture
def report_copy(previous_report, tmp_path) -> Path:
    out = tmp_path / "report"
    subprocess.run(["cp", "-a", str(previous_report), str(out)], check=True)
    return out


# ---------------------------------------------------------------------------------------------
# 1. The output folder


def test_a_finished_report_is_marked_with_every_file_it_wrote(previous_report):
    marker = json.loads((previous_report / outdir.REPORT.marker).read_text())
    written = {str(p.relative_to(previous_report)) for p in previous_report.rglob("*") if p.is_file()} - {outdir.REPORT.marker}
    assert marker["format"] == outdir.REPORT.format and set(marker["files"]) == written
    assert {"summary.json", "report.md", "layers.csv"} <= written and len(
        written
    ) == 33  # 15 figures as PNG and SVG, report.md, summary.json, layers.csv


@pytest.mark.parametrize("case", ["file", "dot_in_a_project", "folder_of_work", "report_plus_notes", "link"])
def test_out_holding_anything_but_a_previous_report_is_refused_untouched(case, small_checkpoint, prompts, tmp_path, report_copy):
    cwd = tmp_path
    if case == "file":
        out = tmp_path / "notes.txt"
        out.write_text("my notes")
        expected = "is an existing file, not a folder"
    elif case == "dot_in_a_project":
        cwd = tmp_path / "project"
        (cwd / "src").mkdir(parents=True)
        (cwd / "README.md").write_text("mine")
        (cwd / "src" / "code.py").write_text("x = 1")
        out = Path(".")
        expected = r"holding 2 file\(s\) that this command did not write \(README.md, src/code.py\)"
    elif case == "folder_of_work":
        out = tmp_path / "thesis"
        (out / "empty-chapter").mkdir(parents=True)
        (out / "summary.json").write_text("{}")  # a name the report uses too
        (out / "report.md").write_text("my report")
        expected = "it looks like a report from before minigpt marked its reports"
    elif case == "report_plus_notes":
        out = report_copy
        (out / "my-notes.md").write_text("mine")
        (out / "drafts").mkdir()
        expected = r"holds a previous report and also 2 thing\(s\) this command did not write \(drafts, my-notes.md\)"
    else:
        out = tmp_path / "link"
        out.symlink_to(report_copy)
        expected = "is a symbolic link"
    before = state(tmp_path)
    result = run_cli("--model", small_checkpoint, "--prompts-file", prompts, "--out", out, cwd=cwd)
    assert result.returncode == 2
    assert re.search(expected, error_line(result)) and "nothing was touched" in error_line(result)
    assert state(tmp_path) == before


def test_an_empty_folder_and_a_previous_report_are_replaced_whole(small_checkpoint, prompts, tmp_path, report_copy):
    (report_copy / "old-model").mkdir()  # a folder a previous report wrote for a model not in this run
    (report_copy / "old-model" / "01-norm-histograms.png").write_bytes(b"old")
    marker = json.loads((report_copy / outdir.REPORT.marker).read_text())
    marker["files"].append("old-model/01-norm-histograms.png")
    (report_copy / outdir.REPORT.marker).write_text(json.dumps(marker))
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (report_copy, empty):
        assert growth.main(["--model", str(small_checkpoint), "--prompts-file", str(prompts), "--out", str(out)]) == 0
        assert (out / "summary.json").exists() and not (out / "old-model").exists()
        assert out.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "report"], "scratch left behind"


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def wait_for_line(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if text in line:
            return
        assert time.monotonic() < deadline, f"no line with {text!r}"
    raise AssertionError(f"the run ended before printing {text!r}: {process.stderr.read()}")


def test_scratch_of_a_killed_run_is_removed_by_the_next_run_and_nothing_else(small_checkpoint, prompts, tmp_path, report_copy):
    run = subprocess.Popen(
        command("--model", small_checkpoint, "--prompts-file", prompts, "--out", report_copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(run, ": figures")
    run.send_signal(signal.SIGKILL)
    run.wait()
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".report.partial-")]
    assert len(stale) == 1 and stale[0].name.startswith(f".report.partial-{run.pid}-")
    # Look-alikes that are not a dead run's scratch: a live process's, an odd name, a file.
    decoys = [
        tmp_path / f".report.partial-{os.getpid()}-abc",
        tmp_path / ".report.partial-notes",
        tmp_path / ".report.partial-1-x.txt",
    ]
    decoys[0].mkdir()
    decoys[1].mkdir()
    decoys[2].write_text("a file, not a folder")
    report_before = state(report_copy)
    assert growth.main(["--model", str(small_checkpoint), "--prompts-file", str(prompts), "--out", str(report_copy)]) == 0
    assert not stale[0].exists() and all(d.exists() for d in decoys)
    assert state(report_copy).keys() == report_before.keys()


@pytest.mark.parametrize(
    "signum, moment",
    [(signal.SIGINT, "loading"), (signal.SIGINT, "forward passes"), (signal.SIGINT, ": figures"), (signal.SIGTERM, ": figures")],
)
def test_an_interrupt_at_any_moment_leaves_out_exactly_as_before(
    signum, moment, small_checkpoint, prompts, tmp_path, report_copy
):
    before = state(tmp_path)
    run = subprocess.Popen(
        command("--model", small_checkpoint, "--prompts-file", prompts, "--out", report_copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_line(run, moment)
    run.send_signal(signum)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines == [f"interrupted ({signal.Signals(signum).name}); {report_copy} unchanged"], stderr
    assert state(tmp_path) == before


def limited_file_size(n_bytes: int):
    def limit():  # in the child, before exec: writes past n_bytes fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))

    return limit


def test_a_write_failure_names_the_file_and_leaves_out_unchanged(small_checkpoint, prompts, tmp_path, report_copy):
    before = state(tmp_path)
    result = run_cli(
        "--model", small_checkpoint, "--prompts-file", prompts, "--out", report_copy, preexec_fn=limited_file_size(20_000)
    )
    assert result.returncode == 1
    assert re.fullmatch(
        rf"error: could not write {tmp_path}/\.report\.partial-\d+-\w+/.+\.(png|svg|csv|json|md): File too large; "
        rf"{report_copy} is unchanged",
        error_line(result),
    )
    assert state(tmp_path) == before


def test_a_failed_run_removes_the_parent_folders_it_created(small_checkpoint, prompts, tmp_path):
    out = tmp_path / "new" / "deeper" / "report"
    result = run_cli("--model", small_checkpoint, "--prompts-file", prompts, "--out", out, preexec_fn=limited_file_size(20_000))
    assert result.returncode == 1 and "File too large" in error_line(result)
    assert list(tmp_path.iterdir()) == []


two_cores = pytest.mark.skipif(
    sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2, reason="the helper process needs Linux and two cores"
)


@two_cores
def test_out_inside_a_file_is_a_clear_error(small_checkpoint, prompts, tmp_path, capsys):
    (tmp_path / "plain-file").write_text("x")
    out = tmp_path / "plain-file" / "report"
    assert growth.main(["--model", str(small_checkpoint), "--prompts-file", str(prompts), "--out", str(out)]) == 1
    assert (
        capsys.readouterr().err
        == f"error: could not create a folder in {tmp_path / 'plain-file'}: Not a directory; {out} is unchanged\n"
    )


def publish_once(out: Path, text: str = "report") -> None:
    """One publish of a two-file output, as a command does it."""
    folder = outdir.OutputFolder(out, outdir.REPORT)
    with folder as scratch:
        (scratch / "summary.json").write_text(text)
        (scratch / "model").mkdir()
        (scratch / "model" / "01.png").write_text(text)
        folder.publish()


def test_a_file_saved_into_the_previous_report_after_the_last_check_is_kept(tmp_path, monkeypatch):
    """Stops in the exact windows: after publish's last check, before the swap; and after the swap, in the
    previous report's folder (a user whose shell sits in it). Both files end up in the new report."""
    out = tmp_path / "report"
    publish_once(out, "old")
    exchange = outdir._exchange

    def user_saves_meanwhile(new, old):
        (out / "notes-before-the-swap.txt").write_text("mine")
        (out / "model" / "my-figure.png").write_text("mine too")
        done = exchange(new, old)
        (new / "notes-after-the-swap.txt").write_text("mine as well")  # new holds the previous report now
        return done

    monkeypatch.setattr(outdir, "_exchange", user_saves_meanwhile)
    publish_once(out, "new")
    assert (out / "summary.json").read_text() == "new" and (out / "model" / "01.png").read_text() == "new"
    assert (out / "notes-before-the-swap.txt").read_text() == "mine"
    assert (out / "model" / "my-figure.png").read_text() == "mine too"
    assert (out / "notes-after-the-swap.txt").read_text() == "mine as well"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"], "scratch or the previous report left behind"


def test_a_file_saved_where_the_new_report_has_the_same_name_is_kept_beside_it(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    publish_once(out, "old")
    exchange = outdir._exchange

    def user_saves_meanwhile(new, old):
        done = exchange(new, old)
        (new / "model" / "01-mine").mkdir()
        (new / "model" / "01-mine" / "x.txt").write_text("mine")
        (out / "model" / "01-mine").write_text("the new report's file of that name")
        return done

    monkeypatch.setattr(outdir, "_exchange", user_saves_meanwhile)
    publish_once(out, "new")
    [kept] = [p for p in tmp_path.iterdir() if p.name.startswith("report.kept-")]
    assert (kept / "model" / "01-mine" / "x.txt").read_text() == "mine"
    assert f"are kept in {kept}" in capsys.readouterr().err


def test_a_marker_naming_files_outside_its_folder_deletes_nothing_there(tmp_path):
    """The marker is a file anyone can edit: its names reach only into its own folder."""
    out, outside = tmp_path / "report", tmp_path / "elsewhere"
    publish_once(out)
    outside.mkdir()
    (outside / "precious.txt").write_text("mine")
    (out / "link").symlink_to(outside)
    marker = json.loads((out / outdir.REPORT.marker).read_text())
    marker["files"] += ["../elsewhere/precious.txt", str(outside / "precious.txt"), "link/precious.txt", "link"]
    (out / outdir.REPORT.marker).write_text(json.dumps(marker))
    publish_once(out)
    assert (outside / "precious.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "report"]


WRITER = """
import os, sys, time
out, safe, stop = sys.argv[1:]
created = 0
while not os.path.exists(stop):
    name = f"user-{created}.txt"
    try:
        with open(os.path.join(out, name), "x") as f:
            f.write("mine")
    except OSError:
        continue
    created += 1
    time.sleep(0.001)
    for _ in range(200):  # the user moves it out again, so that later runs are not refused
        try:
            os.rename(os.path.join(out, name), os.path.join(safe, name))
            break
        except FileNotFoundError:  # moved back into the new report a moment from now
            time.sleep(0.0005)
    time.sleep(0.004)
print(created)
"""


def test_a_thousand_publishes_racing_a_writer_lose_no_file(tmp_path):
    """The issue's race: a user saving files into --out while runs publish, 1,000 times. Every file the writer
    made is somewhere afterwards (where the user moved it, or in --out); a run that saw one at its last check
    refused. Before the swap lost nothing, one run here lost 16 of 325 files with the previous report."""
    out, safe, stop = tmp_path / "report", tmp_path / "safe", tmp_path / "stop"
    safe.mkdir()
    publish_once(out)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(out), str(safe), str(stop)], stdout=subprocess.PIPE, text=True)
    published = refused = 0
    try:
        began = time.monotonic()
        while published < 1000 and time.monotonic() - began < 60:
            try:
                publish_once(out)
                published += 1
            except outdir.OutputError:
                refused += 1
    finally:
        stop.touch()
        created = int(writer.communicate(timeout=60)[0])
    found = [p for p in tmp_path.rglob("user-*.txt")]
    assert published == 1000 and created > 100, (published, created)
    assert len(found) == created, f"{created - len(found)} of {created} files lost ({published} published, {refused} refused)"
    assert all(p.read_text() == "mine" for p in found)


PUBLISHER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import outdir
for i in range(int(sys.argv[3])):
    out = Path(sys.argv[2]) / f"out-{i}"
    folder = outdir.OutputFolder(out, outdir.REPORT)
    with folder as scratch:
        (scratch / "summary.json").write_text("report")
        folder.publish()
"""


def test_two_runs_creating_the_same_new_out_at_once_both_succeed(tmp_path):
    """Two runs whose --out does not exist yet when they check it: the second to finish replaces the first's
    output (it is a previous report of the same command), never `[Errno 39] Directory not empty`."""
    root = str(Path(outdir.__file__).parent.parent)
    runs = [
        subprocess.Popen([sys.executable, "-c", PUBLISHER, root, str(tmp_path), "400"], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [run.communicate(timeout=120)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], errors
    for i in range(400):
        assert sorted(p.name for p in (tmp_path / f"out-{i}").iterdir()) == [outdir.REPORT.marker, "summary.json"]
    assert len(list(tmp_path.iterdir())) == 400, "scratch left behind"


def test_a_run_that_finds_out_made_by_another_at_its_swap_replaces_it(tmp_path, monkeypatch):
    """Stops in the exact window: out was missing at this run's last check, and another run puts its report
    there before the swap. Was `[Errno 39] Directory not empty` (58 of 400 tries in the issue)."""
    out = tmp_path / "report"
    rename, replace = os.rename, os.replace

    def another_run_finishes_first(real):
        def move(src, dst):
            if Path(dst) == out:  # this run's swap, out missing when it looked
                monkeypatch.setattr(os, "rename", rename)
                monkeypatch.setattr(os, "replace", replace)
                publish_once(out, "the other run's")
            return real(src, dst)

        return move

    monkeypatch.setattr(os, "rename", another_run_finishes_first(rename))
    monkeypatch.setattr(os, "replace", another_run_finishes_first(replace))
    publish_once(out, "this run's")
    assert (out / "summary.json").read_text() == "this run's"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"], "scratch or the other report left behind"


def test_out_at_a_mount_point_is_refused_at_the_start(small_checkpoint, prompts, tmp_path, monkeypatch, capsys):
    """rename(2) of a mount point fails with EBUSY, which would come after the whole study: refused first."""
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(outdir.os.path, "ismount", lambda path: Path(path) == out)
    assert growth.main(["--model", str(small_checkpoint), "--prompts-file", str(prompts), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"error: --out {out} is a mount point, which this command cannot replace whole; give a folder inside it, "
        f"such as --out {out}/report (nothing was touched)\n"
    )


def test_out_at_the_root_is_refused_at_once(small_checkpoint, prompts):
    """--out / used to walk the whole file system (34 s) before refusing."""
    started = time.perf_counter()
    result = run_cli("--model", small_checkpoint, "--prompts-file", prompts, "--out", "/")
    assert result.returncode == 2 and "error: --out / is a mount point" in error_line(result)
    assert time.perf_counter() - started < 30


def test_a_big_folder_without_our_marker_is_refused_without_walking_it_all(tmp_path, monkeypatch):
    for i in range(3):
        (tmp_path / f"d{i}").mkdir()
        for j in range(600):
            (tmp_path / f"d{i}" / f"f{j}").touch()
    walked = []
    walk = os.walk
    monkeypatch.setattr(outdir.os, "walk", lambda folder: (walked.append(step) or step for step in walk(folder)))
    expected = r"holding more than 1000 file\(s\) that this command did not write \(d0/f0, d0/f1"
    with pytest.raises(outdir.OutputError, match=expected):
        outdir.check(tmp_path)
    assert len(walked) < 4, "walked every folder"


def test_an_out_name_longer_than_the_file_system_allows_is_one_line(small_checkpoint, prompts, tmp_path):
    out = tmp_path / ("x" * 300)
    result = run_cli("--model", small_checkpoint, "--prompts-file", prompts, "--out", out)
    assert result.returncode == 2
    assert error_line(result) == f"error: --out {out}: File name too long; give another folder (nothing was touched)"


def test_growth_and_dynamics_do_not_replace_each_other(tmp_path):
    out = tmp_path / "report"
    publish_once(out)
    with pytest.raises(outdir.OutputError, match="holding 3 file"):
        outdir.check(out, outdir.DYNAMICS)


# ---------------------------------------------------------------------------------------------
# 3. Devices


@pytest.mark.parametrize(
    "device, expected",
    [
        ("cuda", "device 'cuda': this machine has no CUDA GPU"),
        ("cuda:3", "device 'cuda:3': this machine has no CUDA GPU"),
        ("tpu", "unknown device 'tpu'"),
        ("cpu:x", "unknown device 'cpu:x'"),
    ],
)
def test_a_device_this_machine_lacks_is_one_line_before_any_weight_is_read(
    device, expected, small_checkpoint, prompts, tmp_path, capsys
):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    broken = tmp_path / "broken"  # unreadable weights: the device error must come first
    subprocess.run(["cp", "-r", str(small_checkpoint), str(broken)], check=True)
    (broken / "model.safetensors").write_bytes(b"\0" * 100)
    assert (
        growth.main(["--model", str(broken), "--prompts-file", str(prompts), "--out", str(tmp_path / "out"), "--device", device])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --device: {expected}") and err.endswith(
        "available: cpu" if "CUDA" in expected else "(or 'auto' for the first of them)"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        weights.load(broken, device=device)


def test_auto_device_is_logged_and_recorded(previous_report, capsys):
    source = json.loads((previous_report / "summary.json").read_text())["models"]
    (model,) = source.values()
    assert model["source"]["device"] == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert weights.devices.resolve("auto") == torch.device(weights.devices.available()[0])


def test_float16_on_cpu_works_and_agrees_with_float32(small_checkpoint):
    tokens = torch.arange(1, 40)[None] * 11
    logits = {dtype: weights.load(small_checkpoint, dtype=dtype)[0](tokens).float() for dtype in (torch.float32, torch.float16)}
    assert torch.isfinite(logits[torch.float16]).all()
    scale = logits[torch.float32].abs().max()
    assert (logits[torch.float16] - logits[torch.float32]).abs().max() / scale < 1e-2


# ---------------------------------------------------------------------------------------------
# 4. The download path, through olah serving git repositories as hub repositories


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())["models"]


def test_first_download_into_an_empty_cache_is_the_default_model_and_records_its_commit(hub, hub_mirrors, prompts, tmp_path):
    _, facts = hub_mirrors
    result = run_cli("--prompts-file", prompts, "--out", tmp_path / "out", env=hub.env(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    assert re.search(r"model: gpt2 \(revision [0-9a-f]{40}, from ", result.stdout)
    model = summary_of(tmp_path / "out")["gpt2"]
    assert model["revision"] == facts["newer"] and model["source"]["repo"] == "openai-community/gpt2"
    cached = tmp_path / "hf" / "hub" / "models--openai-community--gpt2" / "snapshots" / facts["newer"]
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "merges.txt", "model.safetensors", "vocab.json"]
    assert re.search(r"forward passes: 2/2 prompts, [\d.]+ prompts/s", result.stdout)  # stdout is a pipe: plain lines


def in_process_mean_norms(directory: Path) -> np.ndarray:
    model, tokenizer = weights.load(directory)
    prompts = [[tokenizer.eot, *tokenizer.encode(line)] for line in PROMPTS.splitlines()]
    return engine.collect(model, prompts, 4, tokenizer.eot).mean("resid_post")


@pytest.mark.parametrize("revision", ["older", "v1"])
def test_revision_analyses_the_older_weights(revision, hub, hub_mirrors, prompts, tmp_path):
    _, facts = hub_mirrors
    asked = facts["older"] if revision == "older" else revision
    result = run_cli(
        "--model", "gpt2", "--revision", asked, "--prompts-file", prompts, "--out", tmp_path / "out", env=hub.env(tmp_path / "hf")
    )
    assert result.returncode == 0, result.stderr
    model = summary_of(tmp_path / "out")["gpt2"]
    assert model["revision"] == facts["older"] and model["source"]["requested_revision"] == asked
    expected = in_process_mean_norms(facts["older_dir"])
    np.testing.assert_allclose(model["mean_norm"]["resid_post"], expected, rtol=1e-5)
    assert not np.allclose(expected, in_process_mean_norms(facts["newer_dir"]), rtol=1e-2)


def test_after_the_server_stops_the_cache_serves(hub_mirrors, prompts, tmp_path):
    _, facts = hub_mirrors
    server = HubServer(hub_mirrors[0], tmp_path)  # its own server, to stop without disturbing the others
    try:
        first = run_cli(
            "--model", "gpt2", "--prompts-file", prompts, "--out", tmp_path / "first", env=server.env(tmp_path / "hf")
        )
        assert first.returncode == 0, first.stderr
    finally:
        server.stop()
    second = run_cli("--model", "gpt2", "--prompts-file", prompts, "--out", tmp_path / "second", env=server.env(tmp_path / "hf"))
    assert second.returncode == 0, second.stderr
    assert summary_of(tmp_path / "second")["gpt2"]["revision"] == facts["newer"]
    assert summary_of(tmp_path / "second")["gpt2"]["mean_norm"] == summary_of(tmp_path / "first")["gpt2"]["mean_norm"]


def test_with_neither_server_nor_cache_the_default_is_the_bundled_model(hub, prompts, tmp_path):
    env = hub.env(tmp_path / "hf") | {"HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on the discard port
    result = run_cli("--prompts-file", prompts, "--out", tmp_path / "out", env=env)
    assert result.returncode == 0, result.stderr
    assert (
        "model: the bundled model, because openai-community/gpt2 is not in the Hugging Face cache and the hub cannot be reached"
        in result.stdout
    )
    assert list(summary_of(tmp_path / "out")) == ["bundled"]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--model", "nobody/nothing"], "error: nobody/nothing: no such repository on the Hugging Face hub"),
        (
            ["--model", "gpt2", "--revision", "no-such-branch"],
            "error: openai-community/gpt2: the hub has no revision 'no-such-branch' .*; it has branches main and tags v1$",
        ),
        (
            ["--model", "someone/flax-only"],
            r"error: someone/flax-only \(revision main\) has none of the weight files minigpt reads \(model\.safetensors, "
            r"model\.safetensors\.index\.json, pytorch_model\.bin, pytorch_model\.bin\.index\.json\); it has config\.json, "
            r"flax_model\.msgpack$",
        ),
        (
            ["--model", "someone/shard-missing"],
            r"error: someone/shard-missing \(revision [0-9a-f]{40}\): model\.safetensors\.index\.json names 2 shard\(s\) "
            r"the repository does not have: model-00001-of-00002\.safetensors, model-00002-of-00002\.safetensors$",
        ),
        (["--model", "bundled", "--revision", "v1"], "error: --revision v1 applies to hub models; bundled is the bundled model"),
        (
            ["--model", "./missing", "--revision", "v1"],
            r"error: --revision v1 applies to hub models; \./missing is a path, not a hub id \(and no such directory\)$",
        ),
    ],
)
def test_what_the_hub_does_not_have_is_one_line_exit_2(args, expected, hub, prompts, tmp_path):
    result = run_cli(*args, "--prompts-file", prompts, "--out", tmp_path / "out", env=hub.env(tmp_path / "hf"))
    assert result.returncode == 2
    assert re.match(expected, error_line(result)), error_line(result)
    assert not (tmp_path / "out").exists()


def cached_files(hf_home: Path, repo: str) -> list[str]:
    (snapshot,) = (hf_home / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots").iterdir()
    return sorted(path.name for path in snapshot.iterdir())


def test_a_pickle_only_and_a_sharded_repository_download_what_they_have_and_load(hub, hub_mirrors, prompts, tmp_path):
    """pytorch_model.bin alone (as OPT's repositories are), and safetensors shards beside a decoy .bin: each
    download fetches the weights file(s) minigpt reads and the tokenizer, nothing else, and the study's
    numbers are those of the same weights read from a local directory."""
    _, facts = hub_mirrors
    repos = {"someone/gpt2-pickle": "pickle_dir", "someone/gpt2-sharded": "sharded_dir"}
    models = [arg for repo in repos for arg in ("--model", repo)]
    result = run_cli(*models, "--prompts-file", prompts, "--out", tmp_path / "out", env=hub.env(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    tokenizer = ["config.json", "merges.txt", "tokenizer.json", "vocab.json"]  # tokenizer.json in GPT-2's form: not read
    assert cached_files(tmp_path / "hf", "someone/gpt2-pickle") == sorted(["pytorch_model.bin", *tokenizer])
    shards = sorted(p.name for p in facts["sharded_dir"].glob("model-*.safetensors"))
    assert len(shards) > 2
    assert cached_files(tmp_path / "hf", "someone/gpt2-sharded") == sorted(["model.safetensors.index.json", *shards, *tokenizer])
    by_repo = {model["source"]["repo"]: model for model in summary_of(tmp_path / "out").values()}
    for repo, source in repos.items():
        expected = in_process_mean_norms(facts[source])
        np.testing.assert_allclose(by_repo[repo]["mean_norm"]["resid_post"], expected, rtol=1e-5)


def test_a_download_takes_the_tokenizer_and_shards_each_repository_has(hub, tmp_path):
    """.bin shards with their index; tokenizer.json where the repository has it (beside vocab.json and merges.txt
    too: which is read is decided on reading)."""
    script = "import json, weights; print(json.dumps(sorted(p.name for p in weights.locate(NAME)[0].iterdir())))"
    found = {}
    for repo in ("someone/gpt2-bin-sharded", "someone/tokenizer-json"):
        result = subprocess.run(
            [sys.executable, "-c", script.replace("NAME", repr(repo))],
            env=hub.env(tmp_path / "hf"),
            capture_output=True,
            text=True,
            check=True,
        )
        found[repo] = json.loads(result.stdout)
    bin_shards = [name for name in found["someone/gpt2-bin-sharded"] if name.startswith("pytorch_model-")]
    assert len(bin_shards) > 2 and found["someone/gpt2-bin-sharded"] == sorted(
        ["config.json", "merges.txt", "pytorch_model.bin.index.json", "tokenizer.json", "vocab.json", *bin_shards]
    )
    assert found["someone/tokenizer-json"] == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_truncated_cached_file_is_named_with_the_way_to_fix_it(hub, prompts, tmp_path):
    env = hub.env(tmp_path / "hf")
    load = [sys.executable, "-c", "import weights; print(weights.load('gpt2')[0].source['revision'])"]
    subprocess.run(load, env=env, check=True, capture_output=True)
    (link,) = (tmp_path / "hf" / "hub").glob("models--openai-community--gpt2/snapshots/*/model.safetensors")
    blob = link.resolve()
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    result = run_cli("--model", "gpt2", "--prompts-file", prompts, "--out", tmp_path / "out", env=env)
    assert result.returncode == 2
    line = error_line(result)
    assert line.startswith(f"error: {link}: corrupt or truncated safetensors file (truncated: ")
    fix = re.search(r"`(rm [^`]+)`", line).group(1)
    assert fix == f"rm {blob} {link}"
    subprocess.run(fix.split(), check=True)  # do what it says, and the next run downloads the file afresh
    assert subprocess.run(load, env=env, capture_output=True, text=True).returncode == 0


# ---------------------------------------------------------------------------------------------
# 5. Progress


class Terminal(list):
    """A stand-in for a terminal: records what is written, and says it is a tty."""

    def write(self, text):
        self.append(text)

    def flush(self):
        pass

    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_elsewhere(capsys):
    terminal = Terminal()
    with Progress(terminal).counting("forward passes", 60, "prompt") as advance:
        for _ in range(6):
            advance(10)
    shown = "".join(terminal)
    assert "\r" in shown and "60/60" in shown and re.search(r"prompt/s", shown)
    with Progress(every=0).counting("forward passes", 3, "prompt") as advance:
        for _ in range(3):
            advance(1)
    lines = capsys.readouterr().out.splitlines()
    assert [re.sub(r"^\[.*?\] | [\d.]+ prompts/s$", "", line) for line in lines] == [
        "forward passes: 1/3 prompts,",
        "forward passes: 2/3 prompts,",
        "forward passes: 3/3 prompts,",
    ]


# ---------------------------------------------------------------------------------------------
# Non-finite numbers: never a rate, always named, summary.json always JSON


def overflowing_checkpoint(directory: Path) -> Path:
    """A 3-layer model whose residual stream passes float16's largest number (65504) after layer 1: two MLP
    output biases of ±40,000 (alternating in sign, so centring the writing weights leaves them)."""
    from safetensors.torch import load_file, save_file

    from benchmarks.checkpoints import write_checkpoint

    write_checkpoint(directory, n_layers=3, d_model=64, n_heads=4, seed=1)
    state = load_file(directory / "model.safetensors")
    for layer in (0, 1):
        state[f"h.{layer}.mlp.c_proj.bias"] = torch.tensor([40_000.0, -40_000.0]).repeat(32)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"summary.json holds {constant}, which is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("values", [[1.0, float("nan"), 4.0, 8.0], [1.0, 2.0, float("inf"), 8.0], [1.0, 2.0, 0.0, 8.0]])
def test_a_non_finite_or_zero_norm_gives_no_rate_never_nan_or_r2_1(values):
    g = rates.growth_rate(values, 0, 3)
    assert g["rate"] is None and g["fit_rate"] is None and g["r2"] is None
    assert (
        g["no_rate"]
        == {0: "NaN at layer 1", 1: "inf at layer 2", 2: "not positive at layer 2"}[
            [math.isnan(values[1]), math.isinf(values[2]), values[2] == 0].index(True)
        ]
    )
    assert rates.steady_growth(g, 4)["steady"] is False
    assert "×nan" not in rates.growth_sentence("m", g, 4) and "no growth rate" in rates.growth_sentence("m", g, 4)


def test_activations_that_overflow_in_float16_are_named_never_a_rate_and_summary_json_stays_json(prompts, tmp_path, capsys):
    model, out = overflowing_checkpoint(tmp_path / "model"), tmp_path / "report"
    assert growth.main(["--model", str(model), "--prompts-file", str(prompts), "--out", str(out), "--dtype", "float16"]) == 0
    assert "BUG" not in capsys.readouterr().err  # inf and NaN are no violation of the Appendix 1 bound
    summary = strict_json((out / "summary.json").read_text())
    found = summary["models"][str(model)]
    assert found["growth"]["fit_rate"] is None and found["growth"]["r2"] is None
    assert found["growth"]["no_rate"] == "inf at layer 1; NaN at layer 2"
    assert found["mean_norm"]["resid_post"][1] is None
    assert summary["nonfinite"][f"models.{model}.mean_norm.resid_post"] == "inf at index 1; NaN at index 2"
    text = (out / "report.md").read_text()
    assert "resid_post: inf at layer 1, NaN at layer 2" in text and "run with --dtype float32 or bfloat16" in text
    assert "nan" not in text.replace("NaN", "") and "R² 1.000" not in text
    assert not list(out.rglob("*.png")), "figures drawn from non-finite numbers"


# ---------------------------------------------------------------------------------------------
# Ctrl-C while the command is still importing

# Put on PYTHONPATH as sitecustomize.py: SIGINT arrives at the moment the command first imports MODULE,
# deep in its imports, as a user's Ctrl-C in the seconds torch takes to import would. No timing involved.
INTERRUPT_AT_IMPORT = """
import os, signal, sys

class InterruptAt:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["MINIGPT_TEST_INTERRUPT_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptAt())
"""


@pytest.mark.parametrize(
    "command_module, module",
    [
        ("analysis.growth", "torch"),
        ("analysis.growth", "weights"),
        ("analysis.growth", "analysis.engine"),
        ("training", "torch"),
        ("training.corpus", "torch"),
    ],
)
def test_ctrl_c_while_importing_is_one_line(command_module, module, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(INTERRUPT_AT_IMPORT)
    root = Path(outdir.__file__).parent.parent
    env = os.environ | {"PYTHONPATH": f"{tmp_path}:{root}", "MINIGPT_TEST_INTERRUPT_AT": module}
    result = subprocess.run(
        [sys.executable, "-m", command_module, "--out", tmp_path / "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        # Python installs its SIGINT handler only where SIGINT is not ignored, as it is under a background job
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert result.returncode == 130, result.stderr
    assert error_line(result) == "interrupted (SIGINT) while starting; nothing was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sitecustomize.py"]


def analyse_anyway() -> list[str]:
    """The option that analyses weights holding NaN (helper C's --allow-nonfinite), where the command has it:
    without it, NaN weights are refused at load, if the loader checks them."""
    try:
        growth.parse_args(["--allow-nonfinite"])
        return ["--allow-nonfinite"]
    except SystemExit:
        return []


def test_nan_weights_analysed_anyway_give_no_rate_and_summary_json_stays_json(small_checkpoint, prompts, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(small_checkpoint, broken)
    state = load_file(broken / "model.safetensors")
    state["h.1.mlp.c_fc.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "report"
    models = ["--model", str(broken), "--model", str(small_checkpoint)]
    assert growth.main([*models, "--prompts-file", str(prompts), "--out", str(out), *analyse_anyway()]) == 0
    capsys.readouterr()
    summary = strict_json((out / "summary.json").read_text())
    assert summary["models"][str(broken)]["growth"]["no_rate"] == "NaN at layers 1–2"
    assert summary["models"][str(small_checkpoint)]["growth"]["fit_rate"] > 0  # the sound model keeps its rate
    assert "- **broken**: mean norms that are not finite. resid_pre: NaN at layer 2" in (out / "report.md").read_text()
    assert (out / "03-mean-norm-by-model.png").exists() and not (out / "broken").exists()
