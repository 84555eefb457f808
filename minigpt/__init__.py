"""minigpt: GPT-2 written out to be read, with every intermediate tensor named."""

from .config import OFFICIAL, Config, config_for
from .model import GPT2, HookPoint, gelu_new
from .sampling import generate


def __getattr__(name: str):
    # Tokenizer is imported on first use, so that `python -m minigpt.tokenizer` runs that module once (as
    # __main__) rather than after an import by this package, which Python warns about.
    if name == "Tokenizer":
        from .tokenizer import Tokenizer

        return Tokenizer
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")


__all__ = ["GPT2", "Config", "HookPoint", "OFFICIAL", "Tokenizer", "config_for", "gelu_new", "generate"]
