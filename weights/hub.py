"""From a model name to a local directory holding its four files, downloading through huggingface_hub."""

import sys
from pathlib import Path

from .formats import CheckpointError

# The short names of the released checkpoints, and the hub repositories that hold them.
REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")

# The small GPT-2 trained by `python -m training` and shipped inside this package.
BUNDLED_NAME = "bundled"
BUNDLED_DIR = Path(__file__).parent / "bundled"


def pickle_only(where: str) -> CheckpointError:
    return CheckpointError(
        f"{where} has only pytorch_model.bin, a pickle, which can run arbitrary code when loaded; minigpt reads "
        "only model.safetensors. Convert it once, e.g. transformers' GPT2LMHeadModel.from_pretrained(dir)"
        ".save_pretrained(dir), which writes model.safetensors"
    )


def locate(name_or_path: str, revision: str | None = None) -> tuple[Path, dict]:
    """The directory holding a model's files, and where they came from (repo and resolved revision).

    Accepts a short name ("gpt2", ...), "bundled", a hub id ("owner/name"), or a local directory.
    """
    name = str(name_or_path)
    if name == BUNDLED_NAME:
        return BUNDLED_DIR, {"name": name, "repo": None, "revision": "bundled", "path": str(BUNDLED_DIR)}
    path = Path(name).expanduser()
    if path.is_dir():
        return path, {"name": name, "repo": None, "revision": "local", "path": str(path.resolve())}
    looks_like_path = name.startswith(("/", ".", "~")) or path.exists()
    is_hub_id = name.count("/") == 1 and not looks_like_path and all(name.split("/"))
    if name not in REPOS and not is_hub_id:
        known = ", ".join([*REPOS, BUNDLED_NAME])
        what = "no such directory" if looks_like_path or "/" in name else "not a known model name"
        raise CheckpointError(
            f"{name!r}: {what}. Known names: {known}; or a hub id such as openai-community/gpt2; or a local directory"
        )
    repo = REPOS.get(name, name)
    folder = _download(repo, revision)
    source = {"name": name, "repo": repo, "revision": folder.name, "path": str(folder)}
    return folder, source | ({"requested_revision": revision} if revision else {})


def is_hub_name(name_or_path: str) -> bool:
    """Whether `locate` would look this name up on the hub (rather than in the package or on disk)."""
    name = str(name_or_path)
    return name != BUNDLED_NAME and not Path(name).expanduser().is_dir()


def _download(repo: str, revision: str | None) -> Path:
    """Fetch the four files into the Hugging Face cache (or find them there) and return their snapshot folder,
    named by the resolved commit. When the hub cannot be reached, the cache answers for what it holds."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # huggingface_hub's own progress bars are for terminals; in a log they are lines of noise.
    quiet = not sys.stderr.isatty() and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        folder = Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=list(FILES)))
    except (RevisionNotFoundError, RepositoryNotFoundError) as error:
        # Some servers (mirrors among them) answer an unknown revision as an unknown repository: ask which it is.
        refs = _refs(repo) if revision is not None else None
        if isinstance(error, RepositoryNotFoundError) and refs is None:
            raise CheckpointError(f"{repo}: no such repository on the Hugging Face hub (or it is private)") from None
        known = f"; it has branches {', '.join(refs['branches'])} and tags {', '.join(refs['tags']) or '(none)'}" if refs else ""
        raise CheckpointError(
            f"{repo}: the hub has no revision {revision!r} (a branch, tag or commit of that repository){known}"
        ) from None
    except LocalEntryNotFoundError:  # raised both offline and when the hub does not answer
        at = f" at revision {revision!r}" if revision else ""
        raise CheckpointError(
            f"{repo}{at} is not in the Hugging Face cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1). "
            f"Download it once with network access, or pass a local directory holding {', '.join(FILES)}; "
            f"'{BUNDLED_NAME}' names the small model shipped with minigpt"
        ) from None
    finally:
        if quiet:
            enable_progress_bars()
    if not (folder / "model.safetensors").exists() and "pytorch_model.bin" in _repo_files(repo, folder.name):
        raise pickle_only(f"{repo} (revision {folder.name})")
    return folder


def _refs(repo: str) -> dict[str, list[str]] | None:
    """The repository's branch and tag names, or None if the hub does not know it (or cannot be asked)."""
    import huggingface_hub

    try:
        refs = huggingface_hub.list_repo_refs(repo)
    except Exception:  # not found, unreachable, refused: we cannot tell
        return None
    return {"branches": [ref.name for ref in refs.branches], "tags": [ref.name for ref in refs.tags]}


def _repo_files(repo: str, revision: str) -> list[str]:
    import huggingface_hub

    try:
        return huggingface_hub.list_repo_files(repo, revision=revision)
    except Exception:  # offline: the listing is unknown, and the missing file is reported when it is read
        return []
