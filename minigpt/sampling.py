"""Continue a prompt one token at a time: greedy, with a temperature, or from the top k tokens.

Each step runs the whole sequence again (no key-value cache): slower, but the forward pass stays
the one a reader already knows, and demonstrations generate only a few dozen tokens.
"""

import torch

from .model import GPT2


@torch.no_grad()
def generate(
    model: GPT2,
    tokens: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int | None = None,
) -> list[int]:
    """Return tokens followed by max_new_tokens sampled ones. temperature=0 picks the most likely token.

    With a seed, the same call draws the same tokens every time; with seed=None each call draws afresh.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, found {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, found {top_k}")
    n_ctx = model.cfg.n_ctx
    if len(tokens) + max_new_tokens > n_ctx:
        raise ValueError(
            f"{len(tokens)} prompt tokens + {max_new_tokens} new tokens exceed the model's context of {n_ctx} tokens"
        )
    # A new torch.Generator starts from the same fixed seed every time, so without a seed of the
    # caller's it is seeded from the operating system's entropy: otherwise every "random" call repeats.
    generator = torch.Generator(device=model.W_E.device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    out = list(tokens)
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([out]))[0, -1].float()  # [d_vocab], the last position's prediction
        if temperature == 0:
            next_token = int(logits.argmax())
        else:
            logits = logits / temperature
            if top_k is not None:
                kth_largest = logits.topk(min(top_k, logits.numel())).values[-1]
                logits = logits.masked_fill(logits < kth_largest, float("-inf"))
            next_token = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
        out.append(next_token)
    return out
