"""minigpt: GPT-2 written out to be read, with every intermediate tensor named."""

from .config import OFFICIAL, Config, config_for
from .model import GPT2, HookPoint, gelu_new
from .sampling import generate
from .tokenizer import Tokenizer

__all__ = ["GPT2", "Config", "HookPoint", "OFFICIAL", "Tokenizer", "config_for", "gelu_new", "generate"]
