#!/usr/bin/env bash
# The runs behind docs/training-dynamics.md: python -m training with log-spaced checkpoints, then
# python -m analysis.dynamics over each group. Every run uses the same data, seed (1234) and recipe as
# the bundled model unless its flags say otherwise.
#
#   bash training/runs.sh GROUP OUT [DEVICE]      # after: python -m training.corpus --out data
#
#   ablation  weight decay 0.1 on matrices (today's recipe) / 0 / 0.1 on matrices and LayerNorm gains, 10 layers
#   depth     8, 12 and 16 layers (the 10-layer run is ablation's wd-matrices)
#   long      10 layers trained for 2× the steps
#   small     the ablation at a size that runs on 2 CPU cores in ~5 minutes a run
set -euo pipefail
group=$1 out=$2 device=${3:-cpu}

train() {  # NAME [flags]: one run, its progress lines dropped, its time kept
    local name=$1
    shift
    local args=(--data data --out "$out/$name" --checkpoints 14 --device "$device" "$@")
    echo "== python -m training ${args[*]}"
    set +e
    python -m training "${args[@]}" 2>&1 | tr '\r' '\n' | grep -v '^step [0-9]*/'
    local status=${PIPESTATUS[0]}
    set -e
    [ "$status" -eq 0 ] || { echo "python -m training failed (exit $status): $name" >&2; exit 1; }
    runs+=("$out/$name")
}

runs=()
case $group in
ablation)
    train wd-matrices
    train wd-none --weight-decay 0
    train wd-matrices-gains --decay-gains true
    ;;
depth)
    train depth-8 --layers 8
    train depth-12 --layers 12
    train depth-16 --layers 16
    ;;
long)
    train long-10 --steps 3000
    ;;
small)
    small=(--layers 6 --d-model 128 --heads 4 --n-ctx 128 --batch-size 8 --steps 300 --warmup-steps 30 --eval-every 100 --eval-batches 4)
    train small-wd-matrices "${small[@]}"
    train small-wd-none "${small[@]}" --weight-decay 0
    train small-wd-matrices-gains "${small[@]}" --decay-gains true
    ;;
*)
    echo "unknown group $group: ablation, depth, long or small" >&2
    exit 2
    ;;
esac
python -m analysis.dynamics "${runs[@]}" --out "$out/report-$group" --device "$device"
