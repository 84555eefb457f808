"""The shape of a GPT-2: five official sizes by name, or any custom size."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Config:
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_head: int = 64
    d_mlp: int = 3072
    d_vocab: int = 50257
    n_ctx: int = 1024
    ln_eps: float = 1e-5

    def __post_init__(self):
        check_positive(self)
        if self.n_heads * self.d_head != self.d_model:
            raise ValueError(f"n_heads * d_head must equal d_model, found {self.n_heads} * {self.d_head} != {self.d_model}")

    @classmethod
    def sized(cls, n_layers: int, d_model: int, n_heads: int, **rest) -> "Config":
        """A GPT-2 of any size, with GPT-2's rules d_head = d_model / n_heads and d_mlp = 4 * d_model."""
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        rest.setdefault("d_mlp", 4 * d_model)
        return cls(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads, **rest)


def check_positive(cfg: "Config") -> None:
    """Every size a positive integer and LayerNorm's ε a positive number, or a ValueError naming the field."""
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, found {value!r}")
    if not isinstance(cfg.ln_eps, (int, float)) or not 0 < cfg.ln_eps < float("inf"):  # NaN fails both
        raise ValueError(f"ln_eps, LayerNorm's epsilon, must be a positive number, found {cfg.ln_eps!r}")


# (n_layers, d_model, n_heads) of the released checkpoints; the others follow from them (d_head = 64, d_mlp =
# 4·d_model) or are shared (d_vocab 50257, n_ctx 1024, LayerNorm's ε 1e-5).
OFFICIAL = {
    "gpt2": Config.sized(12, 768, 12),
    "gpt2-medium": Config.sized(24, 1024, 16),
    "gpt2-large": Config.sized(36, 1280, 20),
    "gpt2-xl": Config.sized(48, 1600, 25),
    "distilgpt2": Config.sized(6, 768, 12),
}


def config_for(name: str) -> Config:
    if name not in OFFICIAL:
        raise ValueError(f"unknown model name {name!r}; known: {', '.join(OFFICIAL)}")
    return OFFICIAL[name]
