"""The study of one model: load it processed, run the prompts, measure the weights, fit the growth.

`analyse` reads as the study's steps; what each number is, is defined in measures.py, weight_measures.py and
rates.py, and the engine (analysis/engine/) is how the forward passes run fast and small.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import outdir
import weights
from analysis import architecture, engine, measures, rates, weight_measures
from analysis.progress import Progress
from minigpt import Config

BATCH_SIZE = 64  # prompts per forward pass at most (and positions with padding: engine.positions_per_pass)


@dataclass
class Plan:
    """One model to analyse: its name, where its files are, and the prompts in its tokens."""

    name: str  # as the user gave it (or chosen by default)
    directory: Path
    source: dict
    cfg: Config
    prompts: list[np.ndarray]  # token ids, BOS first
    truncated: int  # prompts cut to the model's context
    fit_layers: tuple[int, int]
    allow_nonfinite: bool = False  # analyse weights holding NaN or Inf (--allow-nonfinite)


@dataclass
class ModelStudy:
    """Everything measured on one model, as the figures, the report and the tables read it."""

    name: str  # as given
    slug: str  # short name for titles and folders
    cfg: Config
    family: str  # measures.family: GPT-2, GPT-Neo, OPT, GPT-NeoX (Pythia), Llama, Qwen 3, OLMo 2, …
    nonlinearity: str  # measures.nonlinearity: the MLP's, which says what figure 12 counts (GELU, ReLU, SwiGLU, GeGLU)
    arch: architecture.Architecture  # what the model has that GPT-2 has not, and what processing did to it
    bos: tuple[int, str]  # the token every prompt starts with, as this model's tokenizer files name it: id, text
    pad: tuple[int, str]  # the token figure 5's prompts are padded with: id, text
    pad_embedding: tuple[float, float]  # ‖W_E[pad]‖ as trained, and the median ‖W_E[t]‖ over the vocabulary
    n_tokens: int  # the prompts' tokens in this model's tokenizer, one BOS each
    truncated: int  # prompts cut to this model's context (--truncate)
    source: dict  # repo, revision, path, dtype (weights.load)
    example_text: tuple[str, str]  # the example prompt's BOS and first 8 tokens, decoded
    act: engine.NormStats  # what the forward passes leave: sums, a histogram, the example prompt, figure 12's counts
    mean: dict[str, np.ndarray]  # mean norm per layer of each stream the model has, BOS and padding excluded
    centred: dict[str, np.ndarray]  # the same of ‖x − mean(x)‖, for RMSNorm models ({} with LayerNorm: it is ‖x‖)
    rates: dict  # rates.growth_rate of mean ‖resid_post‖ over the fit layers
    appendix: dict  # measures.appendix1 over every prompt
    weight_stats: dict[str, np.ndarray]  # weight_measures (processed, and as_trained) and figure 12's resampled rates
    padding: dict[str, np.ndarray] | None  # measures.padding_means of the padding batch (None if no room for padding)
    padding_prompts: list[int]  # which prompts formed the padding batch
    example: int  # the prompt of figures 2 and 4
    mlp_input: str  # the stream each MLP reads: resid_mid, or resid_pre in a parallel block
    prompts_per_rank: list[int] | None = None  # under torchrun, how many prompts each process ran (None: one process)


def slug(name: str) -> str:
    """A short name for titles and folders: a directory's own name, or the hub id with / replaced."""
    return Path(name).name if weights.hub.on_disk(Path(name), directory=True) else name.replace("/", "__")


def check_fit_layers(name: str, cfg: Config, fit_layers) -> tuple[int, int]:
    """Check the fit layers against the model's config.json before anything heavy is loaded; return them."""
    if cfg.n_layers < 2:
        raise outdir.UsageError(f"{name} has {cfg.n_layers} layer; a growth rate needs at least 2")
    first, last = fit_layers or rates.default_fit_layers(cfg.n_layers)
    if not 0 <= first < last <= cfg.n_layers - 1:
        raise outdir.UsageError(
            f"--fit-layers {first}:{last} is outside {name}'s {cfg.n_layers} layers "
            f"(need 0 <= FIRST < LAST <= {cfg.n_layers - 1})"
        )
    return first, last


def padding_picks(lengths: list[int], n_ctx: int) -> list[int] | None:
    """The prompts of the BOS and padding figure: 8 spread over the lengths of those shorter than the context,
    padded up to 4 positions beyond the longest of them (measures.padding_norms), run as part of the forward
    passes; None if every prompt fills the context (with --truncate, a corpus's long prompts do)."""
    shortest_first = sorted((i for i in range(len(lengths)) if lengths[i] < n_ctx), key=lambda i: lengths[i])
    if not shortest_first:
        return None
    return sorted({shortest_first[round(k)] for k in np.linspace(0, len(shortest_first) - 1, min(8, len(shortest_first)))})


def analyse(
    plan: Plan,
    dtype: torch.dtype,
    batch_size: int,
    device: torch.device,
    log: Progress,
    team: engine.Team | None = None,
    batch_positions: int | None = None,
) -> ModelStudy | None:
    """The study of one model. Under torchrun (team), every rank runs its share of the forward passes and
    their sums are added up; rank 0 goes on to the weights and returns the study, the other ranks None.
    batch_positions: positions per forward pass (--batch-positions); None: as the device allows
    (engine.positions_per_pass)."""
    dtype_name = str(dtype).removeprefix("torch.")
    log(f"loading {plan.name} ({dtype_name} on {device}, then processed)")
    # Read in float32 on the CPU, measured as trained, then processed and cast (as weights.load does it).
    # The study reads no logits: no unembedding (14% less memory at gpt2-medium).
    model, tokenizer = weights.from_directory(
        plan.directory, plan.source, processed=False, unembed=False, allow_nonfinite=plan.allow_nonfinite
    )
    as_trained = weight_measures.as_trained(model)  # the norms' gains, before they are folded away
    # OPT pads with <pad>, its embedding's padding_idx (a row nn.Embedding gives no gradient): figure 5 says its size.
    rows = model.W_E.norm(dim=-1)
    pad_embedding = float(rows[tokenizer.pad]), float(rows.median())
    del rows
    weights.process(model, unembed=False)
    arch = architecture.architecture(model)  # what processing folded and left, read from the processed model
    log(f"{plan.name}: processed: {arch.processing}")
    model = weights.to(model, dtype, device)
    model.source["processed"] = True  # from_directory recorded the files as read
    cfg, prompts = model.cfg, plan.prompts
    n_tokens = sum(map(len, prompts))
    # The example prompt for figures 2 and 4: the one whose length is closest to 32 tokens.
    example = min(range(len(prompts)), key=lambda i: abs(len(prompts[i]) - 32))
    example_text = (tokenizer.decode(prompts[example][:1]), tokenizer.decode(prompts[example][1:9]))
    bos = tokenizer.bos, tokenizer.decode([tokenizer.bos])  # (id, text)
    pad = tokenizer.pad, tokenizer.decode([tokenizer.pad])
    del tokenizer  # its BPE tables (21 MB held, measured with tracemalloc) are all the figures would keep it for
    picks = padding_picks([len(p) for p in prompts], cfg.n_ctx)

    positions = engine.positions_per_pass(model, prompts, batch_positions)  # once the weights are on the device
    log(
        f"{plan.name}: forward passes over {len(prompts)} prompts ({n_tokens} tokens with BOS), batch size {batch_size}, "
        f"{positions} positions at most" + (" (--batch-positions)" if batch_positions else f" ({device.type}'s size)")
    )
    started = time.perf_counter()
    if team is None:
        with log.counting(f"{plan.name}: forward passes", len(prompts), "prompt") as advance:
            act = engine.collect(
                model, prompts, batch_size, pad[0], example=example, padded=picks, max_positions=positions, on_batch=advance
            )
        prompts_per_rank = None
    else:  # this process's share of the batches, then every process's sums added up (engine/distributed.py)
        act, prompts_per_rank = engine.collect_shared(
            team,
            model,
            prompts,
            batch_size,
            pad[0],
            example=example,
            padded=picks,
            log=log,
            name=plan.name,
            max_positions=positions,
        )
    seconds = time.perf_counter() - started
    log(f"{plan.name}: {n_tokens} tokens in {seconds:.1f} s, {n_tokens / seconds:.0f} tokens/s")
    if team is not None and not team.leads:
        return None  # rank 0 measures the weights and writes the report

    with log.counting(f"{plan.name}: measuring the weights", cfg.n_layers, "layer") as advance:
        weight_stats = weight_measures.weight_measures(model, on_layer=advance) | as_trained
    # `act` holds the engine's running sums. Each number read from it is a plain definition of measures.py, computed
    # over every prompt: act.mean is measures.mean_over_positions, act.appendix1 measures.appendix1,
    # act.early_controls measures.early_controls, act.padding measures.padding_means; tests/test_engine.py checks
    # each against the plain definition run on every prompt alone.
    mean = {s: act.mean(s) for s in measures.streams(model)}  # every stream the model has
    centred = {s: act.mean(f"centred_{s}") for s in mean if f"centred_{s}" in act.summed}  # RMSNorm models only
    return ModelStudy(
        name=plan.name,
        slug=slug(plan.name),
        cfg=cfg,
        family=measures.family(model),
        nonlinearity=measures.nonlinearity(model),
        arch=arch,
        bos=bos,
        pad=pad,
        pad_embedding=pad_embedding,
        n_tokens=n_tokens,
        truncated=plan.truncated,
        source=model.source,
        example_text=example_text,
        act=act,
        mean=mean,
        centred=centred,
        rates=rates.growth_rate(mean["resid_post"], *plan.fit_layers),
        appendix=act.appendix1(),
        weight_stats=weight_stats | act.early_controls(),
        padding=act.padding,
        padding_prompts=picks or [],
        example=example,
        mlp_input=measures.mlp_input(model),
        prompts_per_rank=prompts_per_rank,
    )
