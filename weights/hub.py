"""From a model name to a local directory holding its four files, downloading through huggingface_hub."""

from pathlib import Path

# The short names of the released checkpoints, and the hub repositories that hold them.
REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
FILES = ("config.json", "model.safetensors", "vocab.json", "merges.txt")

# The small GPT-2 trained by `python -m minigpt.train` and shipped inside this package.
BUNDLED_NAME = "bundled"
BUNDLED_DIR = Path(__file__).parent / "bundled"


class CheckpointError(ValueError):
    """A model could not be found or read. The message says what was wrong and what to do."""


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
        raise CheckpointError(f"{name!r}: {what}. Known names: {known}; or a hub id such as openai-community/gpt2; or a local directory")
    repo = REPOS.get(name, name)
    folder = _download(repo, revision)
    return folder, {"name": name, "repo": repo, "revision": folder.name, "path": str(folder)}


def _download(repo: str, revision: str | None) -> Path:
    """Fetch the four files into the Hugging Face cache (or find them there) and return their snapshot folder."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        folder = huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=list(FILES))
    except RepositoryNotFoundError:
        raise CheckpointError(f"{repo}: no such repository on the Hugging Face hub (or it is private)") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{repo}: the hub has no revision {revision!r}") from None
    except LocalEntryNotFoundError:  # raised both offline and when the hub does not answer
        raise CheckpointError(
            f"{repo} is not in the Hugging Face cache and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1). "
            f"Download it once with network access, or pass a local directory holding {', '.join(FILES)}; "
            f"'{BUNDLED_NAME}' names the small model shipped with minigpt"
        ) from None
    return Path(folder)
