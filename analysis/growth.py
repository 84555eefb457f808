"""Reproduce "Residual stream norms grow exponentially over the forward pass" (Heimersheim & Turner, 2023).

    python -m analysis.growth                                   # gpt2, or the bundled model offline
    python -m analysis.growth --model gpt2 --model gpt2-xl --out xl-report
    python -m analysis.growth --prompts-file corpus.jsonl --max-prompts 20000 --truncate   # a corpus slice

Writes into --out (default ./growth-report): one folder of figures per model (PNG and SVG), the
comparison figure 03-mean-norm-by-model, summary.json, layers.csv and report.md. --out must be new, empty,
or a previous report holding only what this command wrote; anything else is refused untouched. The
report is written elsewhere and swapped into place whole, so a failed or interrupted run leaves --out as
it was (see outdir/__init__.py).
"""

import argparse
import csv
import ctypes
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import outdir
import weights
from analysis import measures
from analysis.measures import STREAMS
from minigpt import Config, Tokenizer

DEFAULT_PROMPTS = Path(__file__).parent / "prompts.txt"
DEFAULT_OUT = Path("growth-report")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Progress:
    """Log lines stamped with the seconds since the start. Long loops show a progress bar (tqdm) when
    the output is a terminal, and otherwise a plain line every `every` seconds and at the end."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = sys.stdout if stream is None else stream
        self.every = every
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f} s] {message}", file=self.stream, flush=True)

    @contextmanager
    def counting(self, what: str, total: int, unit: str) -> Iterator[Callable[[int], None]]:
        """Yield advance(n): n more of `total` units are done."""
        if self.stream.isatty():
            from tqdm import tqdm

            with tqdm(total=total, desc=what, unit=unit, file=self.stream, dynamic_ncols=True) as bar:
                yield bar.update
            return
        began = last = time.perf_counter()
        done = 0

        def advance(n: int) -> None:
            nonlocal done, last
            done += n
            now = time.perf_counter()
            if now - last >= self.every or done == total:
                last = now
                self(f"{what}: {done}/{total} {unit}s, {done / max(now - began, 1e-9):.1f} {unit}s/s")

        yield advance


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Prompts:
    """The prompts as read: their texts, the line each came from, and how they were chosen."""

    path: Path
    texts: list[str]
    lines: list[int]  # the line number of each text in the file
    available: int  # how many non-empty prompts the file holds
    seed: int | None = None  # the seed of the sample --max-prompts took, if it took one


JSON_LINES = (".jsonl", ".ndjson")


def read_prompts(path: Path, max_prompts: int | None = None, seed: int = 0) -> Prompts:
    """The prompts in a UTF-8 file: one per non-empty line, or, for .jsonl/.ndjson, the "text" of each line's
    JSON object. With max_prompts, a uniform sample of that many (reservoir sampling, seeded) taken while
    reading, so a corpus of any size is never held whole; the sample keeps the file's order."""
    rng = np.random.default_rng(seed)
    kept: list[tuple[int, str]] = []
    available = 0
    for number, text in _records(path):
        available += 1
        if max_prompts is None or len(kept) < max_prompts:
            kept.append((number, text))
        elif (slot := int(rng.integers(0, available))) < max_prompts:
            kept[slot] = (number, text)
    if not kept:
        what = "object has an empty text" if path.suffix in JSON_LINES else "line is empty"
        raise outdir.UsageError(f"prompts file {path} has no prompts: every {what} (write one prompt per line)")
    kept.sort()
    sampled = max_prompts is not None and available > max_prompts
    return Prompts(path, [text for _, text in kept], [number for number, _ in kept], available, seed if sampled else None)


def _records(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, prompt) for each non-empty prompt of the file, read a line at a time."""
    json_lines = path.suffix in JSON_LINES
    offset = 0
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise outdir.UsageError(
                        f"prompts file {path} is not UTF-8: byte 0x{raw[error.start]:02x} at offset {offset + error.start} "
                        f"(line {number})"
                    ) from None
                offset += len(raw)
                if not line.strip():
                    continue
                text = _json_text(path, number, line) if json_lines else line.strip()
                if text.strip():
                    yield number, text
    except FileNotFoundError:
        raise outdir.UsageError(f"prompts file {path} does not exist") from None


def _json_text(path: Path, number: int, line: str) -> str:
    """The "text" of one JSON Lines record, or a outdir.UsageError naming the line and what is wrong with it."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise outdir.UsageError(f"prompts file {path}, line {number}: not JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        found = 'an object without a string "text"' if isinstance(record, dict) else f"a {type(record).__name__}"
        raise outdir.UsageError(
            f'prompts file {path}, line {number}: {found}; each line must be an object like {{"text": "..."}}'
        )
    return record["text"]


def parse_fit_layers(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        first, last = (int(part) for part in text.split(":"))
    except ValueError:
        raise outdir.UsageError(f"--fit-layers {text!r}: expected FIRST:LAST, two layer numbers such as 5:41") from None
    return first, last


@dataclass
class ModelChoice:
    name: str  # as the user gave it (or chosen by default)
    why: str  # one line for the progress log


def choose_default_model(revision: str | None = None) -> ModelChoice:
    """gpt2 when it is cached or downloadable; otherwise the bundled model, saying why."""
    try:
        directory, source = weights.locate("gpt2", revision)
        return ModelChoice("gpt2", f"gpt2 (revision {source['revision']}, from {directory})")
    except weights.CheckpointError as error:
        reason = str(error).split(". ")[0]
        return ModelChoice(weights.BUNDLED_NAME, f"the bundled model, because {reason}")


def slug(name: str) -> str:
    """A short name for titles and folders: a directory's own name, or the hub id with / replaced."""
    return Path(name).name if Path(name).is_dir() else name.replace("/", "__")


# ---------------------------------------------------------------------------------------------
# One model


@dataclass
class ModelStudy:
    """Everything measured on one model, as the figures, the report and the tables read it."""

    name: str  # as given
    slug: str  # short name for titles and folders
    cfg: Config
    source: dict  # repo, revision, path, dtype (weights.load)
    example_text: tuple[str, str]  # the example prompt's BOS and first 8 tokens, decoded
    act: measures.NormStats  # what the forward passes leave: sums, a histogram, the example prompt, figure 12's counts
    mean: dict[str, np.ndarray]  # mean norm per layer of each stream, BOS and padding excluded
    growth: dict  # measures.growth_rate of resid_post
    appendix: dict  # NormStats.appendix1
    weight_stats: dict[str, np.ndarray]  # measures.weight_measures and the resampled activation rates
    padding: dict[str, np.ndarray] | None  # measures.padding_norms (None if no room for padding)
    padding_prompts: list[int]  # which prompts formed the padding batch
    example: int  # the prompt of figures 2 and 4


def tokenize(prompts: Prompts, tokenizer: Tokenizer, cfg: Config, choice: ModelChoice, truncate: bool) -> tuple[list, int]:
    """Each prompt as token ids with BOS first (compact int32 arrays), and how many were cut to the model's
    context. Without truncate, a prompt longer than the context is an error naming it."""
    tokenized, truncated = [], 0
    for i, text in enumerate(prompts.texts):
        tokens = np.array([tokenizer.eot, *tokenizer.encode(text)], dtype=np.int32)
        if len(tokens) > cfg.n_ctx:
            if not truncate:
                raise outdir.UsageError(
                    f"prompt {i + 1} (line {prompts.lines[i]} of {prompts.path}: {tokenizer.decode(tokens[1:8])!r}…) has "
                    f"{len(tokens)} tokens with BOS; {choice.name} accepts at most {cfg.n_ctx} (--truncate cuts longer ones)"
                )
            tokens, truncated = tokens[: cfg.n_ctx], truncated + 1
        tokenized.append(tokens)
    return tokenized, truncated


def check_inputs(choice: ModelChoice, cfg: Config, fit_layers) -> tuple[int, int]:
    """Check the fit layers against the model's config.json before anything heavy is loaded; return them."""
    if cfg.n_layers < 2:
        raise outdir.UsageError(f"{choice.name} has {cfg.n_layers} layer; a growth rate needs at least 2")
    first, last = fit_layers or measures.default_fit_layers(cfg.n_layers)
    if not 0 <= first < last <= cfg.n_layers - 1:
        raise outdir.UsageError(
            f"--fit-layers {first}:{last} is outside {choice.name}'s {cfg.n_layers} layers "
            f"(need 0 <= FIRST < LAST <= {cfg.n_layers - 1})"
        )
    return first, last


def padding_picks(lengths: list[int], n_ctx: int) -> list[int] | None:
    """The prompts of the BOS and padding figure: 8 spread over the lengths, run in one batch padded 4
    positions beyond the longest of them, as part of the forward passes; None if the context has no room."""
    shortest_first = sorted(range(len(lengths)), key=lambda i: lengths[i])
    picks = sorted({shortest_first[round(k)] for k in np.linspace(0, len(lengths) - 1, min(8, len(lengths)))})
    return picks if n_ctx > max(lengths[i] for i in picks) else None


def analyse(plan: "Plan", args, device: torch.device, log: Progress) -> ModelStudy:
    choice, prompts, fit_layers = plan.choice, plan.prompts, plan.fit_layers
    log(f"loading {choice.name} ({args.dtype} on {device}, processed: LayerNorm folded, writing weights centred)")
    model, tokenizer = weights.from_directory(
        plan.directory, plan.source, dtype=DTYPES[args.dtype], device=device, unembed=False
    )  # the study reads no logits: no unembedding, 14% less memory at gpt2-medium
    cfg = model.cfg
    first, last = fit_layers
    n_tokens = sum(map(len, prompts))
    # The example prompt for figures 2 and 4: the one whose length is closest to 32 tokens.
    example = min(range(len(prompts)), key=lambda i: abs(len(prompts[i]) - 32))
    example_text = (tokenizer.decode(prompts[example][:1]), tokenizer.decode(prompts[example][1:9]))
    pad = tokenizer.eot
    del tokenizer  # its BPE tables (~25 MB) are all the figures would keep it for
    # Only the prompts' own tokens are ever embedded: the other rows of W_E (13% of gpt2-medium) go before
    # the first batch, and the prompts are renumbered to the rows kept. The residual stream is the same.
    renumber = weights.keep_tokens(model, np.concatenate([*prompts, [pad]])).numpy()
    prompts, pad = [renumber[p] for p in prompts], int(renumber[pad])
    picks = padding_picks([len(p) for p in prompts], cfg.n_ctx)
    log(f"{choice.name}: forward passes over {len(prompts)} prompts ({n_tokens} tokens with BOS), batch size {args.batch_size}")
    started = time.perf_counter()
    with log.counting(f"{choice.name}: forward passes", len(prompts), "prompt") as advance:
        act = measures.collect(model, prompts, args.batch_size, pad, example=example, padded=picks, on_batch=advance)
    seconds = time.perf_counter() - started
    log(f"{choice.name}: {n_tokens} tokens in {seconds:.1f} s, {n_tokens / seconds:.0f} tokens/s")
    padding = act.padding
    with log.counting(f"{choice.name}: measuring the weights", cfg.n_layers, "layer") as advance:
        weight_stats = measures.weight_measures(model, on_layer=advance)
    weight_stats |= act.early_controls()
    mean = {s: act.mean_norm(s) for s in STREAMS}
    growth = measures.growth_rate(mean["resid_post"], first, last)
    appendix = act.appendix1()
    return ModelStudy(
        name=choice.name,
        slug=slug(choice.name),
        cfg=cfg,
        source=model.source,
        example_text=example_text,
        act=act,
        mean=mean,
        growth=growth,
        appendix=appendix,
        weight_stats=weight_stats,
        padding=padding,
        padding_prompts=picks or [],
        example=example,
    )


# ---------------------------------------------------------------------------------------------
# Figures and report


def growth_sentence(name: str, g: dict) -> str:
    """What the fitted numbers say, and only that."""
    text = (
        f"{name}: mean ‖resid_post‖ grows ×{g['rate']:.4f} per layer from layer {g['first_layer']} to {g['last_layer']} "
        f"(least-squares fit ×{g['fit_rate']:.4f}, R² {g['r2']:.3f})."
    )
    a, b = g["rate_first_half"], g["rate_second_half"]
    if a is None:
        return text
    text += f" By halves of that range: ×{a:.4f} then ×{b:.4f} per layer."
    if abs(g["fit_rate"] - 1) < 0.005:
        return text + " That is no measurable growth."
    # Exponential growth keeps the per-layer rate; compare the halves' log-rates.
    second_over_first = math.log(b) / math.log(a) if a != 1 else float("inf")
    if second_over_first < 0.75:
        text += (
            " The rate falls with depth, so this is not growth at one exponential rate. (For comparison: a sum of "
            "independent updates grows like √l, which is what random-weight models show; no exponential growth is "
            "expected of them.)"
        )
    elif second_over_first > 1.33:
        text += " The rate rises with depth: faster than one exponential."
    elif g["r2"] >= 0.95:
        text += " A steady rate: exponential growth over this range."
    return text


@dataclass
class Inputs:
    """What went into the forward passes, as the report and summary.json state it."""

    prompts: Prompts
    n_tokens: int  # with one BOS per prompt, as the first model tokenizes them
    truncated: int  # prompts cut to the first model's context
    n_ctx: int

    def sentence(self) -> str:
        p = self.prompts
        how = f" (a uniform sample, seed {p.seed}, of the {p.available} it holds)" if p.seed is not None else ""
        cut = f"; {self.truncated} cut to the model's context of {self.n_ctx} tokens (--truncate)" if self.truncated else ""
        tokens = f"{self.n_tokens} tokens including one BOS (<|endoftext|>) per prompt"
        return f"{len(p.texts)} prompts from {p.path}{how}, {tokens}{cut}."


def write_report(results: list[ModelStudy], directory: Path, inputs: Inputs, shown: dict) -> None:
    lines = [
        "# Residual stream norms grow exponentially over the forward pass: reproduction",
        "",
        f"{inputs.sentence()} Averages exclude BOS and padding. Weights processed as in the study (LayerNorm folded, "
        "writing weights centred).",
        "",
    ]
    for r in results:
        s = r.source
        lines.append(
            f"- **{r.name}**: {r.cfg.n_layers} layers, d_model {r.cfg.d_model}; revision `{s['revision']}`; {s['dtype']}"
        )
    lines += ["", "## 3. Mean norm by layer, every model", "", "![figure 3](03-mean-norm-by-model.png)", ""]
    lines += [growth_sentence(r.slug, r.growth) + " " for r in results] + [""]
    for r in results:
        lines += [f"# {r.slug}", ""]
        for figure in shown[r.slug]:
            lines += [
                f"## {int(figure.stem[:2])}. {figure.title}",
                "",
                f"![{figure.title}]({r.slug}/{figure.stem}.png)",
                "",
                figure.caption,
                "",
            ]
    with outdir.writing(directory / "report.md") as path:
        path.write_text("\n".join(lines), encoding="utf-8")


def summary(results: list[ModelStudy], inputs: Inputs) -> dict:
    models = {}
    for r in results:
        a = r.appendix
        models[r.name] = {
            "n_layers": r.cfg.n_layers,
            "d_model": r.cfg.d_model,
            "revision": r.source["revision"],
            "source": r.source,
            "mean_norm": {s: r.mean[s].tolist() for s in STREAMS},
            "bos_norm": {s: r.act.bos_norm(s).tolist() for s in STREAMS},
            "growth": {"hook": "resid_post"} | {k: v for k, v in r.growth.items() if k != "fit_intercept"},
            "mlp_active_fraction": r.act.active_fraction().tolist(),
            "appendix1": {"violations": a["violations"], "worst_excess": a["worst_excess"]},
            "padding": None if r.padding is None else {k: v.tolist() for k, v in r.padding.items()},
        }
    n_prompts = len(inputs.prompts.texts)
    return {
        "models": models,
        "prompts": n_prompts,
        "tokens": inputs.n_tokens,
        "tokens_averaged": inputs.n_tokens - n_prompts,
        "prompts_file": str(inputs.prompts.path),
        "prompts_available": inputs.prompts.available,
        "sample_seed": inputs.prompts.seed,
        "truncated": inputs.truncated,
    }


def layer_rows(r: ModelStudy) -> list[dict]:
    act, w, a = r.act, r.weight_stats, r.appendix
    columns = {f"mean_{s}": r.mean[s] for s in STREAMS}
    columns |= {f"rms_{s}": act.rms_norm(s) for s in STREAMS}
    columns |= {f"bos_{s}": act.bos_norm(s) for s in STREAMS}
    columns |= {
        "mlp_active_fraction": act.active_fraction(),
        "appendix1_growth_minus_1": a["growth_minus_1"],
        "appendix1_bound": a["bound"],
    }
    columns |= {"W_OV_frobenius_mean": w["W_OV_frobenius"].mean(1), "W_OV_mean_Wx_mean": w["W_OV_mean_Wx"].mean(1)}
    columns |= {key: value for key, value in w.items() if np.ndim(value) == 1}
    if r.padding is not None:
        columns |= {f"padding_batch_{k}_resid_post": v for k, v in r.padding.items()}
    return [{"model": r.name, "layer": l} | {k: float(v[l]) for k, v in columns.items()} for l in range(r.cfg.n_layers)]


def write_outputs(results: list[ModelStudy], directory: Path, inputs: Inputs, log: Progress) -> None:
    # matplotlib is imported here, once the models are gone: its 30 MB would otherwise sit beside the
    # weights through the forward passes, where the study's peak memory is.
    from analysis import figures, plots

    shown = {}
    for r in results:
        log(f"{r.name}: figures")
        with outdir.writing(directory / r.slug) as path:
            path.mkdir()
        shown[r.slug] = figures.write(r, directory / r.slug)
    plots.save(
        plots.models_mean_norm({r.slug: {"mean_norm": r.mean["resid_post"], "growth": r.growth} for r in results}),
        directory,
        "03-mean-norm-by-model",
    )
    with outdir.writing(directory / "summary.json") as path:
        path.write_text(json.dumps(summary(results, inputs), indent=2) + "\n")
    rows = [row for r in results for row in layer_rows(r)]
    with outdir.writing(directory / "layers.csv") as path, open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    write_report(results, directory, inputs, shown)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m analysis.growth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        action="append",
        help="model name, hub id or directory; repeat to compare (default: gpt2, or the bundled model offline)",
    )
    parser.add_argument(
        "--revision", help="branch, tag or commit of the hub models (default: main); summary.json records the commit"
    )
    parser.add_argument(
        "--prompts-file",
        type=Path,
        help='one prompt per non-empty line, UTF-8, or .jsonl with a "text" per line (default: the ~60 shipped prompts)',
    )
    parser.add_argument("--max-prompts", type=int, help="use a uniform sample (seed 0) of this many prompts from the file")
    parser.add_argument(
        "--truncate", action="store_true", help="cut prompts longer than the model's context instead of refusing them"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output folder: new, empty, or a previous report, which is replaced (default: ./{DEFAULT_OUT})",
    )
    parser.add_argument(
        "--fit-layers", help="FIRST:LAST layers of the growth fit (default: the study's 5:41 of 48, scaled to depth)"
    )
    parser.add_argument("--device", default="auto", help="torch device: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help=f"at most this many prompts per forward pass (default 64), {measures.BATCH_POSITIONS} positions with padding",
    )
    return parser.parse_args(argv)


@dataclass
class Plan:
    """One model to analyse: where its files are, and the prompts in its tokens."""

    choice: ModelChoice
    directory: Path
    source: dict
    cfg: Config
    prompts: list[np.ndarray]  # token ids, BOS first
    truncated: int
    fit_layers: tuple[int, int]


def run(args, log: Progress) -> Path:
    if args.batch_size < 1:
        raise outdir.UsageError(f"--batch-size must be at least 1, found {args.batch_size}")
    fit_layers = parse_fit_layers(args.fit_layers)
    out = Path(os.path.abspath(args.out))  # not resolve(): a link given as --out is refused, not followed
    outdir.check(out)  # before anything is downloaded or loaded
    try:
        device = weights.devices.resolve(args.device)
    except ValueError as error:
        raise outdir.UsageError(f"--device: {error}") from None
    if args.max_prompts is not None and args.max_prompts < 1:
        raise outdir.UsageError(f"--max-prompts must be at least 1, found {args.max_prompts}")
    prompts_in = read_prompts(args.prompts_file or DEFAULT_PROMPTS, args.max_prompts)
    if args.model:
        choices = [ModelChoice(name, name) for name in args.model]
        if args.revision:
            for name in args.model:
                if not weights.is_hub_name(name):
                    what = "the bundled model" if name == weights.BUNDLED_NAME else "a local directory"
                    raise outdir.UsageError(f"--revision {args.revision} applies to hub models; {name} is {what}")
    else:
        choices = [choose_default_model(args.revision)]
    for choice in choices:
        log(f"model: {choice.why}")
    log(f"device: {device}" + (" (auto: the first of CUDA, MPS, CPU that this machine has)" if args.device == "auto" else ""))
    torch.manual_seed(0)

    plans = []
    for choice in choices:
        directory, source = weights.locate(choice.name, args.revision)  # downloads, if needed, before any check
        cfg = weights.read_config(directory)
        # The tokenizer (~30 MB of BPE tables) is dropped at once: loading the model reads its own.
        prompts, truncated = tokenize(prompts_in, weights.read_tokenizer(directory), cfg, choice, args.truncate)
        plans.append(Plan(choice, directory, source, cfg, prompts, truncated, check_inputs(choice, cfg, fit_layers)))
    first = plans[0]
    inputs = Inputs(prompts_in, sum(map(len, first.prompts)), first.truncated, first.cfg.n_ctx)
    log(inputs.sentence())
    results = [analyse(plan, args, device, log) for plan in plans]
    for r in results:
        if r.appendix["violations"]:
            print(
                f"\n!!! BUG: {r.name}: {r.appendix['violations']} residual vectors violate the Appendix 1 triangle "
                f"inequality (largest excess {r.appendix['worst_excess']:.3g}). The measurements are wrong; "
                "please report this.\n",
                file=sys.stderr,
                flush=True,
            )
    folder = outdir.OutputFolder(out, outdir.REPORT)
    with folder as scratch:
        write_outputs(results, scratch, inputs, log)
        folder.publish()
    for r in results:
        log(growth_sentence(r.slug, r.growth))
    log(f"wrote {out}/report.md, summary.json, layers.csv and {sum(1 for _ in out.rglob('*.png'))} figures")
    return out


def fix_malloc_thresholds() -> None:
    """Fix glibc's thresholds at 32 MB: a freed block under that size stays in the heap for the next
    batch to reuse; larger ones (the weights) are mapped and unmapped on their own.

    Measured at gpt2-medium shape, two runs each, alternating: left to itself, glibc raises its mmap
    threshold each time it frees a mapped block, so which sizes the heap holds drifts with the order of
    allocations (peak RSS 1.12x and 1.15x the file; study 20.7 and 23.2 s). With the threshold at 128 KB
    (this command's setting until now) every batch's activations are new pages: 7.4-10.8 s of system
    time, study 24.8-30.0 s, peak 1.11x. Fixed at 32 MB: 1.4-2.4 s, study 19.8-22.1 s, peak 1.12x.
    The heap stays small because the forward passes keep nothing small between their large blocks
    (`measures.per_position_norms`). Elsewhere than glibc this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 32 * 1024 * 1024)  # M_TRIM_THRESHOLD: free memory kept at the heap's top
    except (OSError, AttributeError):
        pass


def command(run: Callable, args) -> int:
    """Run a report command, run(args, log), with `outdir.command`'s one-line errors and exit statuses."""
    return outdir.command(lambda args: run(args, Progress()), args, user_errors=(weights.CheckpointError,))


def main(argv=None) -> int:
    args = parse_args(argv)
    fix_malloc_thresholds()
    return command(run, args)


if __name__ == "__main__":
    sys.exit(main())
