"""A model written back as an official GPT-2 checkpoint (config.json, model.safetensors, vocab.json, merges.txt):
what `python -m training` saves, and what transformers' GPT2LMHeadModel reads. The inverse of
weights/checkpoint.py's key map."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from minigpt import GPT2, Config


def hf_config(cfg: Config) -> dict:
    """A config.json that Hugging Face's GPT2LMHeadModel and `read_config` both read as cfg."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "n_layer": cfg.n_layers,
        "n_embd": cfg.d_model,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_mlp,
        "vocab_size": cfg.d_vocab,
        "n_positions": cfg.n_ctx,
        "n_ctx": cfg.n_ctx,
        "layer_norm_epsilon": cfg.ln_eps,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "resid_pdrop": 0.0,
        "embd_pdrop": 0.0,
        "attn_pdrop": 0.0,
    }


def official_state_dict(model: GPT2) -> dict[str, torch.Tensor]:
    """The model's weights under the official keys and shapes (without mask buffers): the inverse of read_model."""
    if type(model) is not GPT2:
        raise ValueError(f"only GPT-2 is written in GPT-2's official layout; this model is {type(model).__name__}")
    if model.W_U is not None or model.ln_final.w is None:
        raise ValueError("only unprocessed weights have the official layout; save the model before weights.process")
    cfg = model.cfg
    state = {"wte.weight": model.W_E, "wpe.weight": model.W_pos}
    for i, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        state |= {
            f"h.{i}.ln_1.weight": block.ln1.w,
            f"h.{i}.ln_1.bias": block.ln1.b,
            f"h.{i}.attn.c_attn.weight": torch.cat(
                [W.permute(1, 0, 2).reshape(cfg.d_model, -1) for W in (attn.W_Q, attn.W_K, attn.W_V)], 1
            ),
            f"h.{i}.attn.c_attn.bias": torch.cat([b.reshape(-1) for b in (attn.b_Q, attn.b_K, attn.b_V)]),
            f"h.{i}.attn.c_proj.weight": attn.W_O.reshape(-1, cfg.d_model),
            f"h.{i}.attn.c_proj.bias": attn.b_O,
            f"h.{i}.ln_2.weight": block.ln2.w,
            f"h.{i}.ln_2.bias": block.ln2.b,
            f"h.{i}.mlp.c_fc.weight": mlp.W_in,
            f"h.{i}.mlp.c_fc.bias": mlp.b_in,
            f"h.{i}.mlp.c_proj.weight": mlp.W_out,
            f"h.{i}.mlp.c_proj.bias": mlp.b_out,
        }
    state |= {"ln_f.weight": model.ln_final.w, "ln_f.bias": model.ln_final.b}
    return {key: tensor.detach().contiguous() for key, tensor in state.items()}


def save(model: GPT2, directory, *, vocab_json: Path, merges_txt: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write model.safetensors, config.json and the tokenizer files so that `weights.load(directory)` reads them.

    The mask buffers are left out, as `save_pretrained` does; dtype=torch.bfloat16 halves the file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.to(device="cpu", dtype=dtype) for key, tensor in official_state_dict(model).items()}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(model.cfg), indent=2) + "\n")
    for source, name in ((vocab_json, "vocab.json"), (merges_txt, "merges.txt")):
        (directory / name).write_bytes(Path(source).read_bytes())
    return directory
