"""minigpt: GPT-2 written out to be read, with every intermediate tensor named."""

from .config import OFFICIAL, Config, config_for
from .gemma import Gemma, GemmaConfig
from .gpt_neo import GPTNeo, NeoConfig
from .gpt_neox import GPTNeoX, NeoXConfig
from .llama import Llama, LlamaConfig
from .model import GPT2, HookPoint, gelu_new
from .olmo2 import OLMo2, OLMo2Config
from .opt import OPT, OPTConfig
from .sampling import generate
from .tokenizer import Tokenizer

__all__ = [
    "GPT2",
    "OPT",
    "Config",
    "GPTNeo",
    "Gemma",
    "GemmaConfig",
    "GPTNeoX",
    "HookPoint",
    "Llama",
    "LlamaConfig",
    "NeoConfig",
    "NeoXConfig",
    "OLMo2",
    "OLMo2Config",
    "OFFICIAL",
    "OPTConfig",
    "Tokenizer",
    "config_for",
    "gelu_new",
    "generate",
]
