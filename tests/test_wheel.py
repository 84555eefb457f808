"""The installed package, as a pip user and a Colab class get it: the wheel is built offline, installed (not
editable) into a fresh environment and used from a folder that is not the clone; it carries no answers; and
the notebooks' first cell installs it in a simulated Colab from the one file a teacher uploads, with no network.

The fresh environments borrow this one's libraries (torch, numpy, ipykernel …) through a .pth file, as
`python -m venv --system-site-packages` would from a system Python, so that nothing is downloaded."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from lessons import build

ROOT = Path(__file__).parents[1]
PLACEHOLDERS = re.compile(r"YOUR-ACCOUNT|your-account|YOUR_ACCOUNT|github\.com/<|example\.(com|org)/minigpt", re.I)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build.wheel(tmp_path_factory.mktemp("dist"))


def offline() -> dict[str, str]:
    """The environment for a command in a fresh venv: pip may not reach an index, and the clone is not on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env | {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}


def fresh_venv(root: Path) -> Path:
    """A new venv whose own site-packages is empty and comes first. This environment's libraries come after
    it, through a folder of links to them that leaves out minigpt itself (an editable install, as CI's, would
    otherwise answer every import from the clone) and the .pth files that would bring it back."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = subprocess.run([python, "-c", where], capture_output=True, text=True).stdout.strip()
    borrowed = root / "borrowed"
    borrowed.mkdir()
    libraries = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    libraries |= {p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()}
    for library in sorted(libraries):
        for entry in Path(library).iterdir():
            ours = entry.name in build.PACKAGES or entry.name.startswith((build.DISTRIBUTION, "__editable__"))
            if not ours and entry.suffix != ".pth" and not (borrowed / entry.name).exists():
                (borrowed / entry.name).symlink_to(entry)
    Path(purelib, "zz_borrowed.pth").write_text(f"{borrowed}\n")
    return python


def run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), *args], cwd=cwd, env=offline(), capture_output=True, text=True, timeout=600)


def test_no_placeholder_address_anywhere():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = tracked or [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    suffixes = {".py", ".md", ".ipynb", ".toml", ".txt", ".sh", ".cfg", ".json"}
    files = [f for f in files if Path(f).suffix in suffixes and f != "tests/test_wheel.py"]  # this file: the pattern itself
    found = [f for f in files if PLACEHOLDERS.search((ROOT / f).read_text(encoding="utf-8", errors="ignore"))]
    assert not found, f"a placeholder address in {found}"
    assert build.REPOSITORY is None or build.REPOSITORY.startswith("https://")


def test_the_wheel_carries_the_commands_and_the_exercises_and_no_answers(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        texts = {
            n: archive.read(n).decode("utf-8", errors="ignore") for n in names if n.endswith((".py", ".ipynb", ".md", ".txt"))
        }
    needed = [
        "training/__main__.py",
        "analysis/growth.py",
        "analysis/dynamics.py",
        "analysis/prompts.txt",
        "weights/bundled/model.safetensors",
        "lessons/checkpoints/small6-step004/model.safetensors",
        "lessons/expected/04-hooks-and-theories.txt",
        *(f"lessons/{name}.ipynb" for name in build.names()),
    ]
    assert not [n for n in needed if n not in names]
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [
        n for n in names if n.startswith(("lessons/solutions/", "lessons/source/", "tests/")) or n.endswith("TEACHING.md")
    ]
    assert not [n for n, text in texts.items() if build.SOLUTION.search(text)]  # a solution block, as lessons/source has
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Name: minigpt-residual" in metadata and "Provides-Extra: lessons" in metadata


def test_installed_from_the_wheel_the_commands_and_the_lessons_set_up_run_from_another_folder(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    installed = run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(
        python,
        "-c",
        "import analysis, lessons, training; print(analysis.__file__, lessons.__file__, training.__file__)",
        cwd=elsewhere,
    )
    assert where.returncode == 0 and all(path.startswith(str(tmp_path / "venv")) for path in where.stdout.split()), where

    growth = run(python, "-m", "analysis.growth", "--model", "bundled", "--max-prompts", "3", "--out", "report", cwd=elsewhere)
    assert growth.returncode == 0, growth.stderr[-2000:]
    assert (elsewhere / "report" / "report.md").is_file() and (elsewhere / "report" / "summary.json").is_file()
    for command in (["-m", "analysis.dynamics", "--help"], ["-m", "training", "--help"]):
        done = run(python, *command, cwd=elsewhere)
        assert done.returncode == 0 and "usage" in done.stdout, (command, done.stderr[-2000:])

    copied = run(python, "-m", "lessons", "notebooks", cwd=elsewhere)
    assert copied.returncode == 0, copied.stderr
    assert sorted(p.name for p in (elsewhere / "notebooks").iterdir()) == [f"{name}.ipynb" for name in build.names()]
    assert run(python, "-m", "lessons", "notebooks", cwd=elsewhere).returncode == 2  # never overwrites a student's work
    set_up = (
        "import lessons, weights\nfrom lessons.check import lesson3, lesson4\n"
        "model, tokenizer = weights.load(lessons.MID_TRAINING)\nbundled, _ = weights.load('bundled')\n"
        "print(model.cfg.n_layers, bundled.cfg.n_layers, len(lessons.prompts()))"
    )
    done = run(python, "-c", set_up, cwd=elsewhere)
    assert done.returncode == 0 and done.stdout.split() == ["6", "10", "61"], done.stderr[-2000:]
    refused = run(python, "-m", "lessons.build", cwd=elsewhere)
    assert refused.returncode == 2 and "works in a clone" in refused.stderr


def test_lessons_build_refuses_an_unknown_argument_in_one_line(capsys):
    assert build.main(["--colb"]) == 2
    assert capsys.readouterr().err.strip() == "usage: python -m lessons.build [--colab]; unknown argument '--colb'"


COLAB = 'import sys, types\nsys.modules["google.colab"] = types.ModuleType("google.colab")  # as on Colab'


def colab_client(notebook, folder: Path, python: Path, monkeypatch) -> NotebookClient:
    """A client whose kernel runs the fresh venv's Python in `folder`, as Colab's runtime runs in /content."""
    kernels = folder.parent / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True, exist_ok=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernels / "kernel.json").write_text(f'{{"argv": {argv!r}, "display_name": "colab", "language": "python"}}'.replace("'", '"'))
    monkeypatch.setenv("JUPYTER_PATH", str(folder.parent / "jupyter"))
    for key, value in offline().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    return NotebookClient(notebook, timeout=600, kernel_name="colab", resources={"metadata": {"path": str(folder)}})


def test_in_a_simulated_colab_the_first_cell_installs_the_uploaded_wheel_and_lesson_4_runs(wheel, tmp_path, monkeypatch):
    python = fresh_venv(tmp_path / "venv")
    content = tmp_path / "content"  # Colab's working folder, where uploaded files land
    content.mkdir()
    nothing = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(COLAB), nbformat.v4.new_code_cell(build.COLAB)])
    with pytest.raises(
        CellExecutionError, match=r"upload minigpt_residual-….whl \(Files pane; made by python -m lessons.build --colab\)"
    ):
        colab_client(nothing, content, python, monkeypatch).execute()

    shutil.copy2(wheel, content / wheel.name)
    notebook = nbformat.read(build.LESSONS / "solutions" / "04-hooks-and-theories.ipynb", as_version=4)
    assert notebook.cells[0].source == build.COLAB
    notebook.cells.insert(
        0, nbformat.v4.new_code_cell(COLAB + "\nimport importlib.util\nprint(importlib.util.find_spec('lessons'))")
    )
    colab_client(notebook, content, python, monkeypatch).execute()
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert printed.startswith("None\n")  # before the set-up cell, minigpt was not importable
    assert printed.count("✓") == 4 and "next-token loss on 8 prompts" in printed
