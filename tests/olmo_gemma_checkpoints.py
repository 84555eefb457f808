"""Tiny OLMo 2, Gemma 2 and Gemma 3 checkpoints in the form their released repositories hold, built by
transformers' own classes (Olmo2ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM), for the tests.

Each directory holds config.json with the fields of the released one (allenai/OLMo-2-0425-1B, google/gemma-2-2b,
google/gemma-3-1b-pt, as transformers 4 wrote them) at a tiny size, and model.safetensors under the released keys
("model."-prefixed, OLMo 2's lm_head.weight beside them, no lm_head for the tied Gemmas), in the released dtype
(float32 for OLMo-2-0425-1B and gemma-2-2b, bfloat16 for gemma-3-1b-pt). Where the tiny one differs from the
released config, on purpose:
  - 2 key-value heads of 4 (Gemma 3: 1, as gemma-3-1b-pt), so that grouped-query attention is exercised;
  - heads of 24 with d_model 64, and Gemma 2's query_pre_attn_scalar 32, so that neither d_head = d_model / n_heads
    nor query_pre_attn_scalar = d_head is assumed;
  - Gemma 2's soft caps at 5 and 5 instead of 50 and 30, so that random weights reach them and a missing or
    misplaced cap shows;
  - a window of 8, shorter than the test prompts; Gemma 3 with 6 layers, so that sliding_window_pattern 6 gives it
    one global layer;
  - OLMo 2's vocabulary 50304 (HF's default) and GPT-2's vocab.json and merges.txt, for the tokenizer (the released
    100352-token tokenizer.json is tok29's work); the Gemmas' 1024 tokens and no tokenizer (Gemma's SentencePiece
    tokenizer is refused by minigpt's reader: their tests feed token ids to weights.read_model).
Every weight is random, each norm gain too (around 1 for OLMo 2; stored around 0 for Gemma, which multiplies by
1 + w), so that a norm read or placed wrongly cannot pass.
"""

import json
import re
import shutil
from pathlib import Path

import torch
from torch import nn
from transformers import Gemma2ForCausalLM, Gemma3ForCausalLM, Olmo2ForCausalLM

from benchmarks.checkpoints import gpt2_vocab_files, save_weights

N_LAYERS = {"olmo2": 4, "gemma2": 4, "gemma3_text": 6}
D_MODEL, N_CTX, WINDOW = 64, 64, 8
D_VOCAB = {"olmo2": 50304, "gemma2": 1024, "gemma3_text": 1024}
HF_CLASSES = {"olmo2": Olmo2ForCausalLM, "gemma2": Gemma2ForCausalLM, "gemma3_text": Gemma3ForCausalLM}
RELEASED_DTYPE = {"olmo2": torch.float32, "gemma2": torch.float32, "gemma3_text": torch.bfloat16}


def released_config(family: str) -> dict:
    """config.json as allenai/OLMo-2-0425-1B, google/gemma-2-2b and google/gemma-3-1b-pt carry it, at a tiny size."""
    common = {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "hidden_size": D_MODEL,
        "initializer_range": 0.02,
        "max_position_embeddings": N_CTX,
        "model_type": family,
        "num_attention_heads": 4,
        "num_hidden_layers": N_LAYERS[family],
        "use_cache": True,
        "vocab_size": D_VOCAB[family],
    }
    if family == "olmo2":
        return common | {
            "architectures": ["Olmo2ForCausalLM"],
            "eos_token_id": 50256,
            "hidden_act": "silu",
            "intermediate_size": 96,
            "num_key_value_heads": 2,
            "pad_token_id": 50256,
            "rms_norm_eps": 1e-06,
            "rope_scaling": None,
            "rope_theta": 500000,
            "tie_word_embeddings": False,
            "torch_dtype": "float32",
            "transformers_version": "4.48.3",
        }
    gemma = common | {
        "bos_token_id": 2,
        "cache_implementation": "hybrid",
        "eos_token_id": 1,
        "head_dim": 24,
        "hidden_activation": "gelu_pytorch_tanh",
        "intermediate_size": 128,
        "pad_token_id": 0,
        "rms_norm_eps": 1e-06,
        "sliding_window": WINDOW,
    }
    if family == "gemma2":
        return gemma | {
            "architectures": ["Gemma2ForCausalLM"],
            "attn_logit_softcapping": 5.0,
            "final_logit_softcapping": 5.0,
            "hidden_act": "gelu_pytorch_tanh",
            "num_key_value_heads": 2,
            "query_pre_attn_scalar": 32,
            "rope_theta": 10000.0,
            "torch_dtype": "float32",
            "transformers_version": "4.42.4",
        }
    return gemma | {
        "architectures": ["Gemma3ForCausalLM"],
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "num_key_value_heads": 1,
        "query_pre_attn_scalar": 24,
        "rope_local_base_freq": 10000,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window_pattern": 6,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.50.0.dev0",
    }


@torch.no_grad()
def randomise(model: nn.Module, family: str, seed: int) -> None:
    """Every weight random and large enough to reach Gemma 2's caps; norm gains around 1 as the model applies them."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if re.search(r"norm\.weight$", name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (family == "olmo2"))  # Gemma's are stored as w − 1
        elif "embed_tokens" in name or "lm_head" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.15)


def write_released(directory: Path, family: str, *, seed: int = 0, change: dict | None = None) -> Path:
    """A tiny random checkpoint of the family, as its released repository holds one (module docstring); `change`
    is merged into config.json before the model is built."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(released_config(family) | (change or {}), indent=2))
    hf_cfg = HF_CLASSES[family].config_class.from_pretrained(directory)
    torch.manual_seed(seed)
    hf_model = HF_CLASSES[family](hf_cfg).eval()
    randomise(hf_model, family, seed)
    state = {key: t.detach().to(RELEASED_DTYPE[family]).contiguous() for key, t in hf_model.state_dict().items()}
    if family != "olmo2":
        del state["lm_head.weight"]  # tied to the embedding: the released files do not carry it
    save_weights(state, directory)
    if family == "olmo2":
        vocab, merges = gpt2_vocab_files()
        shutil.copy(vocab, directory / "vocab.json")
        shutil.copy(merges, directory / "merges.txt")
    return directory


def hf_reference(directory: Path, family: str) -> nn.Module:
    """HF's model from the directory, in float32, eager attention, every tensor read from the files."""
    model, info = HF_CLASSES[family].from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["mismatched_keys"] and not info["unexpected_keys"], info
    return model.eval()


@torch.no_grad()
def hf_run(directory: Path, family: str, tokens: torch.Tensor):
    """HF's logits, the residual entering layer 0 and every decoder layer's output (forward hooks on its layers)."""
    hf = hf_reference(directory, family)
    outputs = []
    handles = [
        layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
        for layer in hf.model.layers
    ]
    result = hf(tokens, output_hidden_states=True)
    for handle in handles:
        handle.remove()
    return result.logits, result.hidden_states[0], outputs
