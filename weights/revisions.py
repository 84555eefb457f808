"""The training checkpoints a hub repository publishes as revisions: branches or tags step<N>, as Pythia
publishes its 154 (step0, step1, step2, step4, … step512, step1000, step2000, … step143000).

`step_revisions` asks the hub for them (or, offline, the Hugging Face cache); `choose` picks the ones to
measure, checking every name asked for before anything is downloaded. `python -m analysis.dynamics --model`
is their user; `locate(repo, "step512")` then downloads one like any other revision.
"""

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .formats import CheckpointError
from .hub import _hub_unreachable, in_cache

# No leading zeros: step01 is not step 1.
STEP_REVISION = re.compile(r"step(0|[1-9][0-9]*)")
DEFAULT_REVISIONS = 12  # how many step revisions the default picks


class StepRevisions(NamedTuple):
    steps: dict[int, str]  # {N: "stepN"}, in step order
    others: list[str]  # the branches and tags not named step<N>
    from_cache: bool  # the hub could not be reached: these are the revisions the cache holds whole


def step_revisions(repo: str) -> StepRevisions:
    """The revisions of a repository named step<N> (branches or tags), asked of the hub without downloading
    anything. When the hub cannot be reached (offline, or HF_HUB_OFFLINE=1) the Hugging Face cache answers
    with the revisions it holds whole: those `locate` can load offline. An unknown repository, or any other
    refusal of the hub's (an HTTP 4xx: it answered, and not with the refs), is a CheckpointError."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        if _hub_unreachable():
            raise ConnectionError(f"nothing answers at {huggingface_hub.constants.ENDPOINT}")
        refs = huggingface_hub.list_repo_refs(repo)
        names, from_cache = [ref.name for ref in (*refs.branches, *refs.tags)], False
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo}: no such repository on the Hugging Face hub (or it is private)") from None
    except Exception as error:
        response = getattr(error, "response", None) if isinstance(error, HfHubHTTPError) else None
        if response is not None and 400 <= response.status_code < 500:
            reason = response.headers.get("x-error-message") or response.reason_phrase
            raise CheckpointError(
                f"{repo}: the hub did not list its branches and tags (HTTP {response.status_code}: {reason})"
            ) from None
        # offline, unreachable, a server error: the cache answers instead
        names, from_cache = [name for name in _cached_refs(repo) if in_cache(repo, name)], True
    steps = {int(match[1]): name for name in names if (match := STEP_REVISION.fullmatch(name))}
    others = sorted(set(names) - set(steps.values()))
    return StepRevisions(dict(sorted(steps.items())), others, from_cache)


def _cached_refs(repo: str) -> list[str]:
    """The branch and tag names that earlier downloads of the repository resolved: the files of its refs/ folder,
    in the cache layout huggingface_hub documents (HF_HUB_CACHE/models--OWNER--NAME/refs/NAME holds a commit)."""
    from huggingface_hub import constants

    refs = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "refs"
    return sorted(path.name for path in refs.iterdir() if path.is_file()) if refs.is_dir() else []


def log_spaced(steps: list[int], n: int) -> list[int]:
    """About n of the (sorted) steps, evenly spaced in log(step + 1), which gives step 0 a place: for each of n
    evenly spaced targets from the first step to the last, the step nearest to it. The first and last are
    always in; where the steps are sparser than the targets (Pythia's 1, 2, 4 …), two targets can share one."""
    if len(steps) <= n:
        return list(steps)
    logs = np.log1p(steps)
    return sorted({steps[int(np.argmin(np.abs(logs - target)))] for target in np.linspace(logs[0], logs[-1], n)})


def listed(revisions, most: int = 8) -> str:
    """Revision names for a message: all of them, or the first and last few."""
    revisions = list(revisions)
    if len(revisions) <= most:
        return ", ".join(revisions) or "none"
    return ", ".join(revisions[: most // 2]) + f", … ({len(revisions) - most} more), " + ", ".join(revisions[-most // 2 :])


def choose(repo: str, asked: dict[int, str] | None, log) -> dict[int, str]:
    """The revisions to measure, {step: name}: those asked for, each checked against the repository's step
    revisions before anything is downloaded, or by default about DEFAULT_REVISIONS of them, log-spaced."""
    found = step_revisions(repo)
    where = "in the Hugging Face cache (the hub cannot be reached)" if found.from_cache else "on the hub"
    if not found.steps:
        other = f" (its revisions: {listed(found.others)})" if found.others else ""
        if found.from_cache:
            raise CheckpointError(
                f"{repo}: the hub cannot be reached (offline, or HF_HUB_OFFLINE=1) and the Hugging Face cache holds "
                f"none of its step<N> revisions whole{other}; run once with network access to download them"
            )
        raise CheckpointError(
            f"{repo} has no branches or tags named step<N>{other}: no training checkpoints this command can measure, "
            "and --revisions can only name such revisions (Pythia's repositories have them: EleutherAI/pythia-160m)"
        )
    if asked is None:
        picked = log_spaced(list(found.steps), DEFAULT_REVISIONS)
        log(
            f"no --revisions: {len(picked)} of the {len(found.steps)} step revisions of {repo} {where}, log-spaced in "
            f"step as training changes fastest early (the first and last always): {', '.join(found.steps[s] for s in picked)}"
        )
        return {step: found.steps[step] for step in picked}
    missing = {step: name for step, name in asked.items() if found.steps.get(step) != name}
    if missing:
        first = next(iter(missing))  # the two revisions nearest to it, in log(step + 1) as the default picks
        nearest = sorted(sorted(found.steps, key=lambda step: abs(np.log1p(step) - np.log1p(first)))[:2])
        what = ", ".join(missing.values())
        known = f"{listed(found.steps.values())}; nearest to {missing[first]}: {', '.join(found.steps[s] for s in nearest)}"
        if found.from_cache:
            raise CheckpointError(
                f"{repo}: {what} not in the Hugging Face cache, and the hub cannot be reached (offline, or "
                f"HF_HUB_OFFLINE=1) to download {'it' if len(missing) == 1 else 'them'}; the cache holds {known}"
            )
        raise CheckpointError(f"{repo} has no revision {what}; its {len(found.steps)} step revisions: {known}")
    return asked
