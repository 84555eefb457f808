"""Tiny random Llama, Mistral and Qwen checkpoints, built by transformers' own classes and written as the hub's
releases hold them: config.json in the release's form (transformers 4.x's rope_theta and rope_scaling), one
model.safetensors with every key under "model." but lm_head.weight (absent when tied), bfloat16 where the release
is. Importable by any test (tests/ is on sys.path): `write_llama(directory, kind)`.

Kinds, each the shape of a released model at d_model 64 and 4 layers:
  llama3        meta-llama/Llama-3.2-1B: llama3 rope_scaling, rope_theta 500000, head_dim given, tied, bfloat16
  llama         TinyLlama/TinyLlama_v1.1 (SmolLM2 is the same but tied): default rope, untied, float32
  mistral       mistralai/Mistral-7B-v0.1: sliding_window on every layer, untied, bfloat16
  qwen2         Qwen/Qwen2.5-0.5B: q, k and v biases, tied, use_sliding_window false, bfloat16
  qwen2-window  the same with use_sliding_window true: the layers from max_window_layers on are local
  qwen3         Qwen/Qwen3-0.6B: per-head q and k norms, head_dim 32 ≠ 64 / 4, tied, bfloat16

Every RMSNorm gain is random around 1 and every bias random around 0, as tests/test_families.py randomises
LayerNorms, so that folding them is tested. The windows (8) are shorter than the tests' prompts (40 tokens), and
llama3's original_max_position_embeddings (32) makes its stretched band cover half the pairs of a 16-wide head.
The tokenizer is GPT-2's vocab.json and merges.txt (vocab_size 50257), until tokenizer.json builders in the
released forms of Llama 3 and Qwen exist.
"""

import json
import shutil

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM

from benchmarks.checkpoints import gpt2_vocab_files

N_LAYERS, D_MODEL, N_HEADS, N_KV_HEADS, D_MLP, N_CTX, WINDOW = 4, 64, 4, 2, 96, 64, 8
KINDS = ("llama3", "llama", "mistral", "qwen2", "qwen2-window", "qwen3")
HF_CLASSES = {"llama": LlamaForCausalLM, "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM, "qwen3": Qwen3ForCausalLM}


def released_config(kind: str, *, n_layers=N_LAYERS, d_model=D_MODEL, vocab_size=50257) -> dict:
    """config.json as the release of `kind` carries it, at this size."""
    sizes = {
        "hidden_size": d_model,
        "intermediate_size": D_MLP,
        "num_attention_heads": N_HEADS,
        "num_hidden_layers": n_layers,
        "num_key_value_heads": N_KV_HEADS,
        "vocab_size": vocab_size,
    }
    common = {"attention_dropout": 0.0, "hidden_act": "silu", "initializer_range": 0.02, "use_cache": True}
    if kind == "llama3":
        return (
            common
            | sizes
            | {
                "architectures": ["LlamaForCausalLM"],
                "attention_bias": False,
                "bos_token_id": 128000,
                "eos_token_id": 128001,
                "head_dim": d_model // N_HEADS,
                "max_position_embeddings": 131072,
                "mlp_bias": False,
                "model_type": "llama",
                "pretraining_tp": 1,
                "rms_norm_eps": 1e-05,
                "rope_scaling": {
                    "factor": 32.0,
                    "high_freq_factor": 4.0,
                    "low_freq_factor": 1.0,
                    "original_max_position_embeddings": 32,
                    "rope_type": "llama3",
                },
                "rope_theta": 500000.0,
                "tie_word_embeddings": True,
                "torch_dtype": "bfloat16",
                "transformers_version": "4.45.0.dev0",
            }
        )
    if kind == "llama":
        return (
            common
            | sizes
            | {
                "architectures": ["LlamaForCausalLM"],
                "attention_bias": False,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "max_position_embeddings": 2048,
                "mlp_bias": False,
                "model_type": "llama",
                "pretraining_tp": 1,
                "rms_norm_eps": 1e-05,
                "rope_scaling": None,
                "rope_theta": 10000.0,
                "tie_word_embeddings": False,
                "torch_dtype": "float32",
                "transformers_version": "4.31.0.dev0",
            }
        )
    if kind == "mistral":
        return (
            common
            | sizes
            | {
                "architectures": ["MistralForCausalLM"],
                "bos_token_id": 1,
                "eos_token_id": 2,
                "max_position_embeddings": 32768,
                "model_type": "mistral",
                "rms_norm_eps": 1e-05,
                "rope_theta": 10000.0,
                "sliding_window": WINDOW,
                "tie_word_embeddings": False,
                "torch_dtype": "bfloat16",
                "transformers_version": "4.34.0.dev0",
            }
        )
    if kind in ("qwen2", "qwen2-window"):
        return (
            common
            | sizes
            | {
                "architectures": ["Qwen2ForCausalLM"],
                "bos_token_id": 151643,
                "eos_token_id": 151643,
                "max_position_embeddings": 32768,
                "max_window_layers": n_layers // 2 if kind == "qwen2-window" else n_layers,
                "model_type": "qwen2",
                "rms_norm_eps": 1e-06,
                "rope_theta": 1000000.0,
                "sliding_window": WINDOW if kind == "qwen2-window" else 32768,
                "tie_word_embeddings": True,
                "torch_dtype": "bfloat16",
                "transformers_version": "4.40.1",
                "use_mrope": False,
                "use_sliding_window": kind == "qwen2-window",
            }
        )
    assert kind == "qwen3", kind
    return (
        common
        | sizes
        | {
            "architectures": ["Qwen3ForCausalLM"],
            "attention_bias": False,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "head_dim": 32,
            "max_position_embeddings": 40960,
            "max_window_layers": 28,
            "model_type": "qwen3",
            "rms_norm_eps": 1e-06,
            "rope_scaling": None,
            "rope_theta": 1000000,
            "sliding_window": None,
            "tie_word_embeddings": True,
            "torch_dtype": "bfloat16",
            "transformers_version": "4.51.0",
            "use_sliding_window": False,
        }
    )


def hf_class(config: dict) -> type:
    return HF_CLASSES[config["model_type"]]


@torch.no_grad()
def randomise(model: nn.Module, seed: int, gain_growth: float = 1.0) -> None:
    """Every weight random; RMSNorm gains around 1 (those of layer l times gain_growth**l: growth stored in the
    gains, as a known answer) and every bias around 0 but not at it."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            layer = int(name.split(".")[2]) if name.startswith("model.layers.") else 0
            p.copy_((torch.randn(p.shape, generator=g) * 0.2 + 1) * gain_growth**layer)
        elif name.endswith("bias"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def write_llama(directory, kind: str, *, seed=0, gain_growth=1.0, with_tied_lm_head=False, **size):
    """A tiny random checkpoint of `kind` (see the module's docstring) in `directory`, as its release holds one,
    with GPT-2's vocab.json and merges.txt. with_tied_lm_head: a tied model's file carries lm_head.weight too
    (a copy of the embedding), as some conversions write it."""
    directory.mkdir(parents=True, exist_ok=True)
    # GPT-2's tokenizer stands in for the release's: its <|endoftext|> is BOS and EOS (config.json names them).
    config = released_config(kind, **size) | {"bos_token_id": 50256, "eos_token_id": 50256}
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    torch.manual_seed(seed)
    cls = hf_class(config)
    hf_model = cls(cls.config_class.from_pretrained(directory)).eval()
    randomise(hf_model, seed, gain_growth)
    dtype = torch.bfloat16 if config["torch_dtype"] == "bfloat16" else torch.float32
    tied = config["tie_word_embeddings"]
    state = {
        key: t.detach().to(dtype).contiguous()
        for key, t in hf_model.state_dict().items()
        if key != "lm_head.weight" or not tied or with_tied_lm_head
    }
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    vocab, merges = gpt2_vocab_files()
    shutil.copy(vocab, directory / "vocab.json")
    shutil.copy(merges, directory / "merges.txt")
    return directory
