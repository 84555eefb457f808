# %% [markdown]
# # Lesson 4: hooks, interventions, and the post's theories
#
# Lesson 3 measured that residual norms grow. The post also argues *why* that matters and how a model
# might use it:
#
# - LayerNorm ignores the scale of its input, so a later layer reads the residual's direction only;
# - a feature written into the stream at layer l is then **diluted** by the growth: after k more layers,
#   grown by g per layer, its share of the norm has fallen by gᵏ;
# - so a model can make old information irrelevant by **overshadowing** it (writing larger things)
#   rather than **deleting** it (writing its negative);
# - and the BOS position, which every query may attend to, plays a part of its own.
#
# Each can be tested by changing the forward pass while it runs. This lesson teaches minigpt's
# hooks for reading and replacing any tensor by name, then you write one intervention per theory.
# `check.hint("feature_left")` gives a nudge when you are stuck.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch

import instrument
import lessons
import weights
from analysis.measures import norms_per_prompt
from analysis.rates import default_fit_layers, growth_rate
from lessons import figures
from lessons.check import lesson4 as check

torch.set_grad_enabled(False)
model, tokenizer = weights.load("bundled")  # processed, as in lesson 3
L = model.cfg.n_layers
prompts = [[tokenizer.eot, *tokenizer.encode(text)] for text in lessons.prompts()]  # lesson 3's, BOS first
tokens = torch.tensor([prompt[:20] for prompt in prompts if len(prompt) >= 20][:8])  # 8 of them, 20 tokens each
print(f"tokens {tuple(tokens.shape)} = [batch, pos], BOS first; {L} layers")

# %% [markdown]
# ## 1. Hooks: reading a tensor
#
# Every intermediate tensor of minigpt's forward pass goes through a `HookPoint`, an identity module
# whose module path is its name: `blocks.3.hook_resid_pre`, `blocks.3.ln1.hook_normalized`,
# `blocks.3.attn.hook_pattern`, `blocks.3.hook_mlp_out`, … (the names TransformerLens uses).
# `instrument.hooks(model, {name: fn})` calls `fn(tensor, name)` at each named point while the `with`
# block runs. A hook that returns `None` leaves the tensor as it is, so it can simply keep it. (With
# `unembed=False` the model skips the final LayerNorm and the 50257-wide unembedding, and returns the
# last residual stream: much faster when you need no logits, as in every exercise here.)

# %%
print(len(instrument.hook_points(model)), "hook points; the first few:", list(instrument.hook_points(model))[:5])
kept = {}


def keep(tensor, name):
    kept[name] = tensor


with instrument.hooks(model, {"blocks.3.hook_resid_pre": keep, "blocks.3.ln1.hook_normalized": keep}):
    model(tokens, unembed=False)
x, x_hat = kept["blocks.3.hook_resid_pre"], kept["blocks.3.ln1.hook_normalized"]
print("resid_pre:", tuple(x.shape), "mean norm", f"{float(x.norm(dim=-1).mean()):.1f}")
print(
    "ln1 output:",
    tuple(x_hat.shape),
    "mean norm",
    f"{float(x_hat.norm(dim=-1).mean()):.2f}",
    "(√d_model =",
    f"{model.cfg.d_model**0.5:.2f})",
)

# %% [markdown]
# `instrument.run_with_cache(model, tokens, names=…)` is the same thing packaged: it returns the
# logits (or, with `unembed=False`, the last residual) and a dictionary of the tensors you named.
#
# ## 2. Hooks: replacing a tensor
#
# A hook that returns a tensor replaces the original: everything after it in the forward pass sees
# the new one. The hooks are removed when the `with` block ends, also if it raises. Here, doubling
# block 0's attention output changes the logits of the first two prompts:

# %%
logits = model(tokens[:2])
with instrument.hooks(model, {"blocks.0.hook_attn_out": lambda t, name: 2 * t}):
    doubled = model(tokens[:2])
print(f"largest change of a logit: {float((doubled - logits).abs().max()):.2f}")
print(f"and after the with block, nothing: {float((model(tokens[:2]) - logits).abs().max()):.1e}")

# %% [markdown]
# ## 3. LayerNorm's scale invariance, LN(c·x) = LN(x)
#
# LayerNorm subtracts the mean and divides by the standard deviation, so multiplying its input by
# any c > 0 changes nothing, except through ε, the small number inside the square root:
# `√(c² · variance + ε)`. Test it on the model: scale block `layer`'s input by c, and read what its
# first LayerNorm makes of it.


# %% [exercise]
def normalized_after_scaling(model, tokens, layer, c):
    """blocks.{layer}.ln1's output [batch, pos, d_model] when blocks.{layer}.hook_resid_pre is multiplied by c."""
    # BEGIN SOLUTION
    read = f"blocks.{layer}.ln1.hook_normalized"
    seen = {}
    edits = {
        f"blocks.{layer}.hook_resid_pre": lambda tensor, name: c * tensor,
        read: lambda tensor, name: seen.setdefault(name, tensor),
    }
    with instrument.hooks(model, edits):
        model(tokens, unembed=False)
    return seen[read]
    # END SOLUTION


# %%
check.normalized_after_scaling(normalized_after_scaling)
layer = 3
clean = normalized_after_scaling(model, tokens, layer, 1.0)
cs = [c for c in np.logspace(-4, 2, 13) if c != 1.0]  # c = 1 is the clean run itself
change = [float((normalized_after_scaling(model, tokens, layer, c) - clean).abs().max()) for c in cs]
variance = float(x[:, 1:].var(-1, correction=0).min())  # the smallest variance of a non-BOS input to block 3
figures.ln_scale_invariance(cs, change, variance)
plt.show()
print(
    f"c = 10: largest change {change[list(cs).index(10.0)]:.1e}; "
    f"c = 0.01: {float((normalized_after_scaling(model, tokens, layer, 0.01) - clean).abs().max()):.1e}"
)

# %% [markdown]
# For c ≥ 1 LayerNorm's output moves only by float32 rounding. Below 1, ε's part of
# √(c² · variance + ε) grows like 1/c², and near c² · variance = ε (the dashed line, for the input
# of smallest variance) LayerNorm no longer normalises. The model's residuals have variances of
# about 1 to 10 (norms of 13 to 40 over 160 entries), far above ε = 1e-5: for them LN(c·x) = LN(x),
# and block 3 reads the residual's direction, not its size. So the growth does not blow up the model;
# but a small thing written early is a smaller and smaller part of the direction as the stream grows.
#
# ## 4. A feature diluted by gᵏ
#
# Write a feature into the stream: add a vector `direction` to `blocks.{layer}.hook_resid_post` at
# every position, and follow it. At each later layer, how much of it is still there? Measure the
# component of (patched − clean) residual along the unit vector `direction / ‖direction‖`, averaged
# over the batch and positions 1 onwards.


# %% [exercise]
def feature_left(model, tokens, layer, direction):
    """[n_layers − layer]: at layers layer, layer + 1, …, the mean component along direction / ‖direction‖
    of resid_post with direction added at blocks.{layer}.hook_resid_post, minus resid_post without it."""
    # BEGIN SOLUTION
    names = [f"blocks.{l}.hook_resid_post" for l in range(layer, model.cfg.n_layers)]

    def run(added):
        seen = {}

        def hook(tensor, name):
            if name == names[0]:
                tensor = tensor + added
            seen[name] = tensor
            return tensor

        with instrument.hooks(model, dict.fromkeys(names, hook)):
            model(tokens, unembed=False)
        return torch.stack([seen[name] for name in names])  # [n_later, batch, pos, d_model]

    change = run(direction) - run(torch.zeros_like(direction))
    return (change @ (direction / direction.norm()))[:, :, 1:].mean((1, 2))
    # END SOLUTION


# %%
check.feature_left(feature_left)
clean_post = torch.stack(
    [
        t.norm(dim=-1)[:, 1:].mean()
        for t in instrument.run_with_cache(model, tokens, names=lambda n: n.endswith("resid_post"), unembed=False)[1].values()
    ]
)  # [n_layers]: mean ‖resid_post‖, BOS excluded
layer, alpha = 2, 10.0
direction = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
direction = alpha * (direction - direction.mean()) / (direction - direction.mean()).norm()  # mean-free, norm α
left = feature_left(model, tokens, layer, direction)
later = np.arange(layer, L)
print("component left along d̂, by layer:", np.round(left.numpy(), 2), f"(α = {alpha})")
figures.dilution(later, (left / clean_post[layer:]).numpy(), (alpha / clean_post[layer:]).numpy())
plt.show()
grown = float(clean_post[-1] / clean_post[layer])
print(f"the stream's mean norm grew ×{grown:.3f} from layer {layer} to layer {L - 1}, the layers the feature crossed")
first, last = default_fit_layers(L)
g = growth_rate(clean_post.numpy(), first, last)["fit_rate"]
print(
    f"(the least-squares rate, ×{g:.3f} per layer over layers {first}–{last}, would say ×{g ** (L - 1 - layer):.2f}: "
    "a fit over other layers)"
)

# %% [markdown]
# Does the component stay near α (nothing removes the feature, its share falls only because the stream
# grows around it) or fall towards 0 (later blocks delete it)? Compare the two lines in the figure, and
# compare the share's fall with the stream's growth over the same layers (the ratio printed first).
#
# ## 5. Overshadowing or deleting?
#
# A feature the model wrote itself: scale block `layer`'s MLP output `o` by s. The stream now holds
# an extra `(s − 1) · o`. If later blocks ignore it, all of it is still there at the last layer
# (fraction 1: it can only be overshadowed); if they delete it, less is (fraction < 1).


# %% [exercise]
def kept_fraction(model, tokens, layer, s):
    """The fraction of the extra (s − 1) · o still in the last layer's resid_post, along o / ‖o‖, when block `layer`'s
    mlp_out o is scaled by s: (change along ô) / ((s − 1) · ‖o‖), per position, averaged over positions ≥ 1."""
    # BEGIN SOLUTION
    out, final = f"blocks.{layer}.hook_mlp_out", f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    _, clean = instrument.run_with_cache(model, tokens, names=[out, final], unembed=False)
    kept = {}
    with instrument.hooks(model, {out: lambda t, name: s * t, final: lambda t, name: kept.setdefault(name, t)}):
        model(tokens, unembed=False)
    o = clean[out]  # [batch, pos, d_model]
    along = ((kept[final] - clean[final]) * o).sum(-1) / o.norm(dim=-1)  # [batch, pos]
    return (along / ((s - 1) * o.norm(dim=-1)))[:, 1:].mean()
    # END SOLUTION


# %%
check.kept_fraction(kept_fraction)
kept_by_block = [float(kept_fraction(model, tokens, l, 2.0)) for l in range(L - 1)]
print("fraction kept at the last layer, blocks 0 … 8:", np.round(kept_by_block, 2))
figures.kept_by_layer(kept_by_block)
plt.show()

# %% [markdown]
# ## 6. Ablating attention to BOS
#
# In GPT-2 many heads put most of their weight on the first position when they have nothing better to
# read. Remove that option: a hook on every layer's `attn.hook_pattern` that gives key 0 no weight
# (for queries 1 onwards; BOS itself can only read itself) and renormalises each row.


# %% [exercise]
def no_attention_to_bos(pattern, name):
    """pattern [batch, n_heads, query_pos, key_pos] → the same with no weight on key 0 for queries ≥ 1, rows summing to 1."""
    # BEGIN SOLUTION
    pattern = pattern.clone()
    pattern[..., 1:, 0] = 0
    return torch.cat([pattern[..., :1, :], pattern[..., 1:, :] / pattern[..., 1:, :].sum(-1, keepdim=True)], dim=-2)
    # END SOLUTION


# %%
check.no_attention_to_bos(no_attention_to_bos)
_, patterns = instrument.run_with_cache(model, tokens, names=lambda n: n.endswith("hook_pattern"), unembed=False)
to_bos = [float(patterns[f"blocks.{l}.attn.hook_pattern"][:, :, 1:, 0].mean()) for l in range(L)]
print("mean attention to BOS, by layer:", np.round(to_bos, 2))
before = norms_per_prompt(model, prompts, tokenizer.eot)
ablation = {f"blocks.{l}.attn.hook_pattern": no_attention_to_bos for l in range(L)}
with instrument.hooks(model, ablation):
    after = norms_per_prompt(model, prompts, tokenizer.eot)
    ablated_logits = model(tokens)


def mean_without_bos(norms):
    return np.concatenate([n[:, 1:] for n in norms], axis=1).mean(axis=1)


def loss(logits, targets=tokens):
    """The mean next-token loss of logits [batch, pos, d_vocab] for the tokens that follow in targets [batch, pos]."""
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten()))


figures.norms_by_layer(
    {"as trained": mean_without_bos(before), "no attention to BOS": mean_without_bos(after)}, "bundled: ablating attention to BOS"
)
plt.show()
print(f"next-token loss on 8 prompts: {loss(model(tokens)):.3f} as trained, {loss(ablated_logits):.3f} without attention to BOS")
text = tokens[:, 1:]  # the same prompts without BOS in front; compare the predictions both runs make
with_bos, without_bos = loss(model(tokens)[:, 1:], text), loss(model(text), text)
print(f"the same predictions: {with_bos:.3f} with BOS first, {without_bos:.3f} without; BOS costs {with_bos - without_bos:.3f}")

# %% [markdown]
# A surprise: without attention to BOS, the loss goes *down*. BOS itself is the reason: the bundled model
# was trained on windows of 256 tokens cut at random offsets of its corpus (`training/train.py`,
# `random_windows`), and few of them start with `<|endoftext|>`. For this model a BOS in position 0 is
# unusual input, and putting it in front of a prompt makes the predictions worse: the line above measures
# what it costs. A model trained with BOS in front of its texts can learn to use it as a resting place for
# heads with nothing to read (TransformerLens puts BOS first by default for that reason), and would lose by
# the ablation; this one has little to lose. The study puts BOS first all the same, as the post did, and
# leaves it out of every mean.

# %% [markdown]
# ## What you found
#
# Answer in the cell below (double-click it).

# %% [markdown]
# 1. Over which range of c is LayerNorm's output unchanged, and what breaks the invariance below it?
# 2. Does the feature you added stay (component ≈ α) or go? By how much did its share fall, and is that
#    the stream's growth over those layers?
# 3. Do later blocks delete a scaled MLP output, or leave it to be overshadowed? Which blocks differ?
# 4. How much do heads attend to BOS here, and what does removing it do to the norms and the loss? Why can
#    the loss fall, and what would you expect of a model trained with BOS in front of every text?
