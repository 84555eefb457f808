"""Train a small GPT-2 with minigpt's own forward pass, and write it in the official checkpoint layout.

    python -m training.corpus --out data        # once: the token files (see training/corpus.py)
    python -m training --data data --out training-run

The recipe is GPT-3's (GPT-2's paper states no optimiser settings; nanoGPT trains GPT-2 with GPT-3's
too), scaled down: AdamW (β = 0.9, 0.95), linear warm-up then cosine decay to 10% of the peak learning
rate, gradient clipping at norm 1, weight decay 0.1 on the matrices and embeddings only (as in nanoGPT:
decaying LayerNorm gains or biases would pull them towards 0, which is not a sensible prior for a gain),
no dropout. Matrix products run in bfloat16 autocast with float32
master weights (2.3× faster than float32 on the AMD EPYC the bundled model was trained on, which has
AVX-512 BF16; on a CPU without it, a Zen 3 EPYC say, bfloat16 products were measured 16× slower than
float32: pass --bf16 false there); the checkpoint is stored in bfloat16.

Checkpoints over training, for `python -m analysis.dynamics OUT`:

    python -m training --data data --out runs/base --checkpoints 12     # OUT/checkpoints/step-000000 ...

writes the model at step 0 (the initialisation), the last step, and log-spaced steps between, each in
the official layout (float32) with its step, tokens seen and validation loss in training_step.json.
`--weight-decay 0` and `--decay-gains true` give the weight-decay ablation; `--device cuda` trains on a GPU.
`--stop-after N` ends a run after N steps of its --steps-long schedule (what stopping it by hand did
before a stopped run left nothing behind): `--steps 1500 --checkpoints 14 --stop-after 443` keeps the
checkpoints up to step 443 of the 1,500-step schedule, and the model at step 443.

--out follows the rules of every minigpt command that writes a folder (outdir/__init__.py): it must be
new, empty, or a previous training run holding only its own files, which is then replaced; anything
else is refused untouched. The run, checkpoints included, is written into a scratch folder beside it
and moved into place when training ends, so an interrupted (Ctrl-C, SIGTERM) or failed run leaves --out
exactly as it was. The shipped model, weights/bundled, is never written by this command: replacing it
is a deliberate copy, described in weights/bundled/README.md.
"""

import argparse
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError

import outdir
import weights
from minigpt import GPT2, Config
from training.checks import check_numbers, check_token_ids, read_provenance

BUNDLED = Path(weights.hub.BUNDLED_DIR)
DEFAULT_OUT = Path("training-run")


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 2e-3
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 16
    seed: int = 1234
    bf16: bool = True
    decay_gains: bool = False  # also decay the LayerNorm gains (the ablation; the recipe does not)
    checkpoints: int = 0  # how many log-spaced checkpoints to keep (0: none, only the final model)
    stop_after: int = 0  # end after this many steps of the `steps`-long schedule (0: all of them)


@torch.no_grad()
def init_weights(model: GPT2, seed: int) -> GPT2:
    """GPT-2's initialisation: N(0, 0.02) for matrices and token embeddings, N(0, 0.01) for positions,
    and N(0, 0.02/√(2·n_layers)) for the two matrices that write into the residual stream (W_O, W_out).
    That scaling (GPT-2's paper: "by 1/√N where N is the number of residual layers") makes the
    2·n_layers writes add up to a final residual variance that does not depend on n_layers; within one
    model the variance still grows with every layer, linearly. Measured at d_model 128: from 5.0e-4
    after the embedding to 2.1e-3 after the last block, whether the model has 2, 8 or 32 layers.
    Biases 0, gains 1."""
    generator = torch.Generator().manual_seed(seed)
    writer_std = 0.02 / math.sqrt(2 * model.cfg.n_layers)
    for name, param in model.named_parameters():
        if name.endswith(("W_O", "W_out")):
            param.copy_(torch.randn(param.shape, generator=generator) * writer_std)
        elif name == "W_pos":
            param.copy_(torch.randn(param.shape, generator=generator) * 0.01)
        elif name.split(".")[-1].startswith("W_"):
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        elif name.endswith(".w"):
            param.fill_(1.0)
        else:
            param.zero_()
    return model


def random_windows(tokens: np.ndarray, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
    """batch_size windows of seq_len + 1 consecutive tokens at random offsets: inputs and next-token targets."""
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator).tolist()
    return torch.from_numpy(np.stack([tokens[s : s + seq_len + 1].astype(np.int64) for s in starts]))


def next_token_loss(model: GPT2, windows: torch.Tensor, bf16: bool) -> torch.Tensor:
    windows = windows.to(model.W_E.device)
    with torch.autocast(windows.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(windows[:, :-1])
    return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())


@torch.no_grad()
def validation_loss(model: GPT2, tokens: np.ndarray, cfg: TrainConfig) -> float:
    """Mean loss on a fixed sample of validation windows (the same windows at every evaluation)."""
    generator = torch.Generator().manual_seed(0)
    losses = [
        next_token_loss(model, random_windows(tokens, cfg.batch_size, cfg.seq_len, generator), cfg.bf16).item()
        for _ in range(cfg.eval_batches)
    ]
    return sum(losses) / len(losses)


def unigram_loss(train_tokens: np.ndarray, val_tokens: np.ndarray, d_vocab: int) -> float:
    """Cross-entropy on validation tokens of predicting every token by its training frequency (add-one smoothed)."""
    counts = np.bincount(train_tokens, minlength=d_vocab).astype(np.float64) + 1
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[val_tokens].mean())


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def parameter_groups(model: GPT2, weight_decay: float, decay_gains: bool) -> list[dict]:
    """AdamW's two groups, each with the names of its parameters: weight_decay on the matrices and
    embeddings, the parameters named `W_…` (and on the LayerNorm gains `…ln*.w` if decay_gains), none on
    biases `b_…`. Decided by name, not by shape: the per-head biases b_Q, b_K, b_V are [n_heads, d_head],
    two-dimensional, and are still biases."""
    groups = {"decay": ([], []), "no_decay": ([], [])}
    for name, param in model.named_parameters():
        leaf = name.split(".")[-1]
        decayed = leaf.startswith("W_") or (decay_gains and leaf == "w")
        names, params = groups["decay" if decayed else "no_decay"]
        names.append(name)
        params.append(param)
    return [
        {"names": names, "params": params, "weight_decay": weight_decay if key == "decay" else 0.0}
        for key, (names, params) in groups.items()
    ]


def make_optimizer(model: GPT2, cfg: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameter_groups(model, cfg.weight_decay, cfg.decay_gains), lr=cfg.lr, betas=(0.9, 0.95))


def checkpoint_steps(steps: int, n: int) -> list[int]:
    """n steps (fewer where rounding merges them) from 0 to `steps`, log-spaced after 0: the early
    steps, where the weights change fastest, are sampled most densely."""
    if n < 1:
        return []
    if n < 3:  # not geomspace: geomspace(1, steps, 1) is [1], which would give n = 2 three steps
        return [steps] if n == 1 else [0, steps]
    return sorted({0, steps} | {int(round(s)) for s in np.geomspace(1, steps, n - 1)})


def save_model(model: GPT2, directory: Path, dtype: torch.dtype = torch.float32) -> None:
    """weights.save with GPT-2's vocabulary; a refused write (disk full, file too large) is an outdir.WriteError
    naming the folder. safetensors reports its own write failures as SafetensorError, not OSError."""
    try:
        weights.save(model, directory, vocab_json=BUNDLED / "vocab.json", merges_txt=BUNDLED / "merges.txt", dtype=dtype)
    except (OSError, SafetensorError) as error:
        safetensors_words = r"^Error while serializing: I/O error: | \(os error \d+\)$"  # around the OS's reason
        reason = getattr(error, "strerror", None) or re.sub(safetensors_words, "", str(error))
        raise outdir.WriteError(f"could not write the checkpoint in {directory}: {reason}") from None


def save_checkpoint(model: GPT2, directory: Path, step: int, cfg: TrainConfig, val_tokens: np.ndarray, train_loss) -> None:
    """The model after `step` updates, in the official layout, and what training had reached then."""
    model.eval()
    save_model(model, directory)
    record = {
        "step": step,
        "tokens": step * cfg.batch_size * cfg.seq_len,
        "learning_rate": learning_rate(min(step, cfg.steps - 1), cfg),  # the rate of the step about to run
        "train_loss": train_loss,  # the mean over the last (up to) 10 steps' batches; None at step 0
        "val_loss": validation_loss(model, val_tokens, cfg),
    }
    with outdir.writing(directory / "training_step.json") as path:
        path.write_text(json.dumps(record, indent=2) + "\n")
    model.train()


def check_splits(train_tokens: np.ndarray, val_tokens: np.ndarray, seq_len: int) -> None:
    """Each split must hold at least one window of seq_len + 1 tokens (inputs and their next tokens)."""
    if len(train_tokens) <= seq_len + 1 or len(val_tokens) <= seq_len + 1:
        raise ValueError(f"need more than {seq_len + 1} tokens in each split, found {len(train_tokens)} and {len(val_tokens)}")


def train(
    model: GPT2,
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    cfg: TrainConfig,
    progress=True,
    checkpoint_dir: Path | None = None,
) -> dict:
    """Train in place; return the history {"step", "train_loss", "val_step", "val_loss", "seconds"}.
    With checkpoint_dir and cfg.checkpoints > 0, save the model at `checkpoint_steps` into
    checkpoint_dir/step-NNNNNN (the time spent saving is not counted in "seconds"). With cfg.stop_after,
    stop after that many steps of the cfg.steps-long schedule."""
    check_splits(train_tokens, val_tokens, cfg.seq_len)
    model.train()
    for param in model.parameters():
        param.requires_grad_(True)
    optimizer = make_optimizer(model, cfg)
    generator = torch.Generator().manual_seed(cfg.seed)
    history = {"step": [], "train_loss": [], "val_step": [], "val_loss": []}
    saving = set(checkpoint_steps(cfg.steps, cfg.checkpoints)) if checkpoint_dir is not None else set()
    saving_seconds = 0.0

    def checkpoint(step: int) -> None:
        nonlocal saving_seconds
        if step in saving:
            began = time.time()
            recent = history["train_loss"][-10:]
            save_checkpoint(
                model, checkpoint_dir / f"step-{step:06d}", step, cfg, val_tokens, float(np.mean(recent)) if recent else None
            )
            saving_seconds += time.time() - began

    start = time.time()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    last = cfg.stop_after or cfg.steps  # the learning-rate schedule is cfg.steps long either way
    for step in range(last):
        checkpoint(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, cfg)
        loss = next_token_loss(model, random_windows(train_tokens, cfg.batch_size, cfg.seq_len, generator), cfg.bf16)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history["step"].append(step)
        history["train_loss"].append(loss.item())
        elapsed = time.time() - start - saving_seconds
        if progress:
            rate = (step + 1) * tokens_per_step / elapsed
            eta = (last - step - 1) * tokens_per_step / rate
            print(
                f"\rstep {step + 1}/{last}  loss {loss.item():.3f}  {rate:,.0f} tok/s  eta {eta / 60:.1f} min ",
                end="",
                file=sys.stderr,
                flush=True,
            )
        if (step + 1) % cfg.eval_every == 0 or step + 1 == last:
            model.eval()
            history["val_step"].append(step)
            history["val_loss"].append(validation_loss(model, val_tokens, cfg))
            model.train()
            if progress:
                print(f"\nstep {step + 1}: validation loss {history['val_loss'][-1]:.3f}", file=sys.stderr, flush=True)
    checkpoint(last)
    history["seconds"] = time.time() - start - saving_seconds
    model.eval()
    return history


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data"), help="folder with train.bin, val.bin (training.corpus)")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the model and its checkpoints: new, empty, or a previous training run (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--d-model", type=int, default=160)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=256)
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps, or auto")
    for field, default in asdict(TrainConfig()).items():
        if field not in ("seq_len",):
            kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(default, bool) else type(default)
            parser.add_argument(f"--{field.replace('_', '-')}", type=kind, default=default)
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    return args


def run(args) -> Path:
    """Check everything, train into a scratch folder beside --out, and swap it into place at the end."""
    out = Path(os.path.abspath(args.out))  # not resolve(): a link given as --out is refused, not followed
    if out == BUNDLED.absolute():
        raise outdir.UsageError(
            f"--out {args.out} is the shipped bundled model, which this command never overwrites; train into another "
            "folder, then copy it over as weights/bundled/README.md describes (nothing was touched)"
        )
    outdir.check(out, outdir.TRAINING_RUN)  # before the token files are read
    check_numbers(args)
    train_config = TrainConfig(**{f: getattr(args, f) for f in asdict(TrainConfig()) if f != "seq_len"}, seq_len=args.n_ctx)
    try:
        model_config = Config.sized(args.layers, args.d_model, args.heads, n_ctx=args.n_ctx)
    except ValueError as error:
        raise outdir.UsageError(f"--d-model, --heads: {error}") from None
    try:
        device = weights.devices.resolve(args.device)
    except ValueError as error:
        raise outdir.UsageError(f"--device: {error}") from None
    if train_config.checkpoints < 0:
        raise outdir.UsageError(f"--checkpoints must be 0 or more, found {train_config.checkpoints}")
    if not 0 <= train_config.stop_after <= train_config.steps:
        raise outdir.UsageError(
            f"--stop-after must be 0 (all --steps) to --steps ({train_config.steps}), found {train_config.stop_after}"
        )
    missing = [str(args.data / f"{name}.bin") for name in ("train", "val") if not (args.data / f"{name}.bin").is_file()]
    if missing:
        raise outdir.UsageError(
            f"no token file {' or '.join(missing)}: build them with `python -m training.corpus --out {args.data}`"
        )
    splits = {name: np.fromfile(args.data / f"{name}.bin", dtype=np.uint16) for name in ("train", "val")}
    try:
        check_splits(splits["train"], splits["val"], train_config.seq_len)
    except ValueError as error:
        raise outdir.UsageError(f"--data {args.data}: {error}") from None
    check_token_ids(splits, args.data, model_config.d_vocab)
    corpus = read_provenance(args.data / "provenance.json")  # read now: a malformed one must not cost the finished run
    torch.manual_seed(train_config.seed)
    model = init_weights(GPT2(model_config), train_config.seed).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"{n_params:,} parameters; {len(splits['train']):,} training and {len(splits['val']):,} validation tokens",
        file=sys.stderr,
    )
    folder = outdir.OutputFolder(out, outdir.TRAINING_RUN)
    with folder as scratch:
        history = train(model, splits["train"], splits["val"], train_config, checkpoint_dir=scratch / "checkpoints")
        save_model(model, scratch, dtype=torch.bfloat16)
        log = {
            "command": "python -m training " + " ".join(args.argv),
            "model": asdict(model_config),
            "parameters": n_params,
            "train": asdict(train_config),
            "corpus": corpus,
            "unigram_val_loss": unigram_loss(splits["train"], splits["val"], model_config.d_vocab),
            "torch": torch.__version__,
            "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "threads": torch.get_num_threads(),
            **history,
        }
        with outdir.writing(scratch / "training_log.json") as path:
            path.write_text(json.dumps(log) + "\n")
        folder.publish()
    print(
        f"wrote {args.out}: validation loss {history['val_loss'][-1]:.3f} (unigram baseline {log['unigram_val_loss']:.3f}), "
        f"{history['seconds'] / 60:.1f} min",
        file=sys.stderr,
    )
    return out


def main(argv=None) -> int:
    return outdir.command(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
