"""Mean attention entropy by sequence length (docs/techniques.md section 1's check).

With the standard scale the entropy of each attention row grows like log n, so a model trained
at 64 attends more diffusely at 1024; the log-n scale is meant to keep it flat. This measures
it on the validation text for a trained model (or any parameters), per layer and overall.
"""
from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import numpy as np

from data.mlm import eval_sequences
from data.tokenizers import PAD


def make_entropy_step(model):
  @jax.jit
  def step(params, tokens):
    _, state = model.apply({"params": params}, tokens, tokens != PAD, deterministic=True,
                           mutable=["intermediates"])
    sown = jax.tree_util.tree_leaves_with_path(state["intermediates"])
    # one (sums, counts) pair per layer, in layer order (block_2 before block_10)
    order = lambda kv: [int(t) if t.isdigit() else t
                        for t in re.split(r"(\d+)", jax.tree_util.keystr(kv[0]))]
    return [leaf for _, leaf in sorted(sown, key=order)]
  return step


def entropy_by_length(model, params, valid_stream, lengths, *, max_tokens: int,
                      batch_tokens: int) -> dict:
  """{n: {'entropy': mean over layers, heads and real rows, 'per_layer': [...], 'log_n'}}."""
  step = make_entropy_step(model)
  out = {}
  for n in lengths:
    seqs = eval_sequences(valid_stream, n, max_tokens)
    bs = max(1, min(len(seqs), batch_tokens // n))
    sums = None
    for i in range(0, len(seqs) - bs + 1, bs):  # whole batches only: no padding rows
      leaves = jax.device_get(step(params, jnp.asarray(seqs[i:i + bs])))
      # leaves alternate per layer: sums [h], counts [h] (sow stores tuples as leaves)
      pairs = np.array([np.asarray(x, np.float64) for x in leaves]).reshape(-1, 2, leaves[0].shape[-1])
      sums = pairs if sums is None else sums + pairs
    per_layer = (sums[:, 0].sum(-1) / sums[:, 1].sum(-1)).tolist()
    out[n] = {"entropy": float(np.mean(per_layer)), "per_layer": per_layer,
              "log_n": math.log(n)}
  return out
