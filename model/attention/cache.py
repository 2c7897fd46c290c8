"""A key/value cache for autoregressive decoding (generation/): one new token per step.

The cache holds, per attention layer, the keys (already rotated, for RoPE) and values of a
sequence of K slots in the flax collection 'cache'; slot s holds the token at position s.
It is filled by an ordinary forward pass over the K slots with 'cache' mutable (the prompt,
padded), after which a decoding step gives one token per sequence at a position `at` [b, 1]
(traced: sequences of one batch have prompts of different lengths). The step writes the
token's key and value at slot `at` and attends to the slots its mask allows.

Exactness: the position terms of a step are those of a forward pass over the K slots, taken
at the query's row. The rotation and the bias of the full pass are computed for every slot
from the same static tables (numpy positions 0..K-1, as the encoder's own forward pass) and
the query's row is selected, rather than recomputed from the traced position in float32:
so the step matches the full forward pass of the same sequence to float32 rounding.

What a step can express is what a row of the full [q, k] logits needs: a rotation of q and k,
a bias, a logit multiplier. Terms that need the other query rows or the probabilities of the
full matrix (content terms, ReRoPE's pairwise logits, Shaw's value term) and kernels that
never form the logits are refused before decoding starts (`decoding_refusal`).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from model.attention import ATTENTIONS
from model.positions import POSITIONS
from model.variants import non_default

# the RelativeTerms fields a step reproduces from the query's row of the full pass
STEP_TERMS = frozenset({"rotate", "bias", "logit_multiplier"})


def decoding_refusal(cfg) -> str | None:
  """Why cfg's model cannot decode with the cache (one line naming what can), or None."""
  kernel = ATTENTIONS.lookup(cfg.attention)
  if kernel.module is not None or not kernel.transforms_logits:
    able = "|".join(k.name for k in ATTENTIONS.values() if k.module is None and
                    k.transforms_logits)
    return (f"attention={cfg.attention} cannot decode with a key/value cache: a step takes one "
            f"query row of the full [q, k] logits, which only attention={able} forms")
  position = POSITIONS.lookup(cfg.position)
  extra = sorted(position.terms(cfg) - STEP_TERMS)
  if extra:
    # each encoding at its own defaults (rope can, rope with rope_scaling=rerope cannot)
    plain = dataclasses.replace(cfg, **{f.name: f.default for f in position.fields})
    able = "|".join(p.name for p in POSITIONS.values() if p.terms(plain) <= STEP_TERMS)
    return (f"position={cfg.position}{non_default(cfg, position)} cannot decode with a "
            f"key/value cache: its {extra[0]} needs the full [q, k] matrix; positions that "
            f"can: {able}")
  return None


def slots(mask) -> np.ndarray:
  """The cache's slot positions 0..K-1 (static), K read from a step's mask [b, 1, 1, K]."""
  return np.arange(mask.shape[-1])


def row(x, at, axis: int):
  """x's entry at position at[b, 1] along `axis` (the slots), per sequence b (the index
  [b, 1, .., 1] broadcasts over the other axes)."""
  return jnp.take_along_axis(x, at.reshape(at.shape[0], *([1] * (x.ndim - 1))), axis=axis)


def at_slots(fn, x, at, num_slots: int):
  """fn(x, positions) of a token x [b, 1, ...] at position at [b, 1], computed as fn over
  every slot's position (x broadcast to [b, K, ...], static positions 0..K-1) and the
  token's row selected: the same tables as the full forward pass."""
  wide = jnp.broadcast_to(x, (x.shape[0], num_slots, *x.shape[2:]))
  return row(fn(wide, np.arange(num_slots)), at, axis=1)


def step_mask(at, num_slots: int, window: int = 0):
  """[b, 1, 1, K]: the slots the token at position at [b, 1] attends to: every slot up to its
  own (the prompt, then the tokens decoded before it; model.window: the last `window`)."""
  s = np.arange(num_slots)[None, :]
  mask = s <= at
  if window > 0:
    mask = mask & (s > at - window)
  return mask[:, None, None, :]


def store(module, k, v, terms, positions) -> None:
  """A forward pass with 'cache' mutable: keep its keys (rotated as the kernel rotates them)
  and values [b, K, h, d] for the decoding steps."""
  if terms.rotate is not None:
    k = terms.rotate(k, positions)
  module.put_variable("cache", "key", k)
  module.put_variable("cache", "value", v)


def step(module, q, k, v, at, terms):
  """A decoding step of one attention layer: q, k, v [b, 1, h, d] of the new token at
  position at [b, 1]; terms over every slot. Writes its key and value at slot `at`; returns
  (q, the cached keys, the cached values, the terms of the query's row) for the kernel."""
  num_slots = module.get_variable("cache", "key").shape[1]
  if terms.rotate is not None:
    q, k = (at_slots(terms.rotate, x, at, num_slots) for x in (q, k))
  write = (np.arange(num_slots)[None, :] == at)[:, :, None, None]  # [b, K, 1, 1]
  keys = jnp.where(write, k, module.get_variable("cache", "key"))
  values = jnp.where(write, v, module.get_variable("cache", "value"))
  module.put_variable("cache", "key", keys)
  module.put_variable("cache", "value", values)
  bias = None if terms.bias is None else row(
      jnp.broadcast_to(terms.bias, (q.shape[0], *terms.bias.shape[1:])), at, axis=2)
  return q, keys, values, dataclasses.replace(terms, rotate=None, bias=bias)
