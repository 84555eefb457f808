"""From a model name to a local directory holding its files, downloading through huggingface_hub."""

import os
import stat
import sys
from pathlib import Path

from .formats import SPECIAL_TOKEN_FILES, WEIGHT_FILES, CheckpointError, shard_names

# The short names of the released checkpoints, and the hub repositories that hold them.
REPOS = {
    "gpt2": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
}
# What a download fetches, of the files a repository has: config.json, the first of WEIGHT_FILES it holds (and,
# for a sharded checkpoint, the shards its index names), and the tokenizer: vocab.json and merges.txt, and
# tokenizer.json, where the repository has them (tokenizer_files.tokenizer_json_to_read picks what is read), and
# the files naming its BOS and padding tokens where it has them (SPECIAL_TOKEN_FILES).
# Repositories carry much else (the same weights for TensorFlow, Flax, ONNX…), left behind.
TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))

# The small GPT-2 trained by `python -m training` and shipped inside this package.
BUNDLED_NAME = "bundled"
BUNDLED_DIR = Path(__file__).parent / "bundled"


def locate(name_or_path: str, revision: str | None = None) -> tuple[Path, dict]:
    """The directory holding a model's files, and where they came from (repo and resolved revision).

    Accepts a short name ("gpt2", ...), "bundled", a hub id ("owner/name"), or a local directory.
    """
    name = str(name_or_path)
    if name == BUNDLED_NAME:
        return BUNDLED_DIR, {"name": name, "repo": None, "revision": "bundled", "path": str(BUNDLED_DIR)}
    path = Path(name).expanduser()
    if on_disk(path, directory=True):
        return path, {"name": name, "repo": None, "revision": "local", "path": str(path.resolve())}
    is_hub_id = name.count("/") == 1 and all(name.split("/"))
    if looks_like_path(name) or (name not in REPOS and not is_hub_id):
        known = ", ".join([*REPOS, BUNDLED_NAME])
        if on_disk(path):
            what = "not a directory"
        elif looks_like_path(name) or "/" in name:
            what = "no such directory"
        else:
            what = "not a known model name"
        raise CheckpointError(
            f"{name!r}: {what}. Known names: {known}; or a hub id such as openai-community/gpt2; or a local directory"
        )
    repo = REPOS.get(name, name)
    check_hub_id(repo)
    folder = _download(repo, revision)
    source = {"name": name, "repo": repo, "revision": folder.name, "path": str(folder)}
    return folder, source | ({"requested_revision": revision} if revision else {})


def looks_like_path(name: str) -> bool:
    """A name that means a place on disk, whether or not anything is there: it starts with /, ., or ~, or it
    exists. No hub id starts so, and a file or folder of that name in the working directory wins over one."""
    return name.startswith(("/", ".", "~")) or on_disk(Path(name).expanduser())


def on_disk(path: Path, directory: bool = False) -> bool:
    """Whether path exists (and, if told, is a directory), where a name the file system cannot look up is one
    line: os.stat, since pathlib's exists() and is_dir() answer some such names False and raise for others."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:  # ENAMETOOLONG above all: a part of the name over 255 bytes, or the whole over 4096
        shown = f"{str(path)[:60]!r}… ({len(str(path))} characters)" if len(str(path)) > 60 else repr(str(path))
        raise CheckpointError(f"{shown}: cannot be looked up ({error.strerror})") from None
    return stat.S_ISDIR(info.st_mode) or not directory


def check_hub_id(repo: str) -> None:
    """huggingface_hub's rules for a repository id, checked before it is asked for, as one line."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        raise CheckpointError(
            f"{repo!r}: no such directory, and not a hub id: a hub id is owner/name, each of ASCII letters, digits, "
            "'-', '_' and '.' (neither starting nor ending with '-' or '.', no '--' or '..', no .git at the end), "
            "at most 96 characters"
        ) from None


def is_hub_name(name_or_path: str) -> bool:
    """Whether `locate` would look this name up on the hub (rather than in the package or on disk)."""
    name = str(name_or_path)
    return name != BUNDLED_NAME and not looks_like_path(name)


def _download(repo: str, revision: str | None) -> Path:
    """Fetch the files the model needs (`files_to_fetch`) into the Hugging Face cache, or find them there, and
    return their snapshot folder, named by the resolved commit. When the hub cannot be reached, the cache
    answers for what it holds."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # huggingface_hub's own progress bars are for terminals; in a log they are lines of noise.
    quiet = not sys.stderr.isatty() and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        listing = _repo_files(repo, revision)
        if listing is None:
            folder = _cached_folder(repo, revision)
        else:
            files = files_to_fetch(listing, f"{repo} (revision {revision or 'main'})")
            folder = Path(huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=files))
            index = next((name for name in files if name.endswith(".index.json")), None)
            if index is not None:  # the shards are known once the index is here: fetch them at the same commit
                shards = shard_names(folder / index)
                missing = sorted(set(shards) - set(listing))
                if missing:
                    raise CheckpointError(
                        f"{repo} (revision {folder.name}): {index} names {len(missing)} shard(s) the repository does "
                        f"not have: {', '.join(missing[:6])}"
                    )
                folder = Path(huggingface_hub.snapshot_download(repo, revision=folder.name, allow_patterns=files + shards))
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
            "Download it once with network access, or pass a local directory holding config.json, the weights and "
            f"the tokenizer's files; '{BUNDLED_NAME}' names the small model shipped with minigpt"
        ) from None
    finally:
        if quiet:
            enable_progress_bars()
    return folder


def files_to_fetch(listing: list[str], where: str) -> list[str]:
    """Of a repository's files, those a model needs: config.json, the first of WEIGHT_FILES present (a
    sharded index without its shards, which only the index names), and the tokenizer's files."""
    have = set(listing)
    weights = next((name for name in WEIGHT_FILES if name in have), None)
    if weights is None:
        shown = ", ".join(sorted(have)[:12]) + (" …" if len(have) > 12 else "")
        raise CheckpointError(f"{where} has none of the weight files minigpt reads ({', '.join(WEIGHT_FILES)}); it has {shown}")
    tokenizer = [name for names in TOKENIZER_FILES if have.issuperset(names) for name in names]
    return ["config.json", weights, *tokenizer, *(name for name in SPECIAL_TOKEN_FILES if name in have)]


def _cached_folder(repo: str, revision: str | None) -> Path:
    """The cached snapshot of that revision (a branch or tag as the last download resolved it), found
    without the network; its files are what earlier downloads left there."""
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    config = huggingface_hub.try_to_load_from_cache(repo, "config.json", revision=revision)
    if not isinstance(config, str):
        raise LocalEntryNotFoundError(f"{repo}: no cached snapshot")
    return Path(config).parent


def _refs(repo: str) -> dict[str, list[str]] | None:
    """The repository's branch and tag names, or None if the hub does not know it (or cannot be asked)."""
    import huggingface_hub

    if _hub_unreachable():
        return None
    try:
        refs = huggingface_hub.list_repo_refs(repo)
    except Exception:  # not found, unreachable, refused: we cannot tell
        return None
    return {"branches": [ref.name for ref in refs.branches], "tags": [ref.name for ref in refs.tags]}


def _hub_unreachable() -> bool:
    """Whether nothing answers at the hub's address (HF_ENDPOINT), found by one TCP connection of at most 3 s.
    huggingface_hub retries a refused connection five times with back-off, 24 s in all, before it gives up;
    a user without network would wait that long for the cache to answer. Behind a proxy (HTTPS_PROXY and the
    like) the address itself may be unreachable while the proxy reaches it: there huggingface_hub is asked."""
    import os
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    proxies = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
    if constants.HF_HUB_OFFLINE or any(os.environ.get(name) for name in proxies):
        return False  # offline mode fails at once by itself; a proxy is for huggingface_hub to use
    address = urlsplit(constants.ENDPOINT)
    port = address.port or (443 if address.scheme == "https" else 80)
    try:
        socket.create_connection((address.hostname, port), timeout=3).close()
    except OSError:  # refused, no route, no name (no DNS offline), or no answer in 3 s
        return True
    return False


def _repo_files(repo: str, revision: str | None) -> list[str] | None:
    """The repository's files at that revision, or None if the hub cannot be reached (or asked)."""
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    if _hub_unreachable():
        return None
    try:
        return huggingface_hub.list_repo_files(repo, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except Exception:  # offline, unreachable, a server error: the cache answers instead
        return None


def in_cache(repo: str, revision: str | None) -> bool:
    """Whether the cache holds that revision whole (as the last download resolved it): config.json, a weights
    file (with every shard its index names) and the tokenizer's files, found without the network. What the hub
    holds now may differ (a branch moved on, a weights format added), and `locate` checks that when online."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = _cached_folder(repo, revision)
    except LocalEntryNotFoundError:
        return False
    have = {path.name for path in folder.iterdir()}
    weights = next((name for name in WEIGHT_FILES if name in have), None)
    if weights is None or not any(have.issuperset(names) for names in TOKENIZER_FILES):
        return False
    return not weights.endswith(".index.json") or have.issuperset(shard_names(folder / weights))
