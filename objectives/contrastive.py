"""Contrastive objectives as pure functions of a score matrix (docs/techniques.md section 6).

Every loss takes `logits` [r, c] (row i scores candidate j), integer `targets` [r] (the column of
row i's positive) and an optional boolean `allowed` [r, c] (False removes a candidate entirely,
e.g. a sentence scored against itself), and returns (mean loss over rows, per-row metrics).

- infonce: -log softmax_j(s_ij) at j = t_i (in-batch negatives).
- flatnce: with xi_i = sum_{j != t_i} exp(s_ij - s_it) the loss is xi/stop_grad(xi): its value
  is 1 and its gradient is that of log xi = logsumexp_{j != t} s_ij - s_it. The positive is
  masked out of the log-sum-exp; leaving it in would make the gradient that of
  log(1 + xi), which is exactly InfoNCE's (the test suite guards this).
- amsoftmax: additive margin on the target cosine: s (cos_it - m) against s cos_ij.

`contrastive_loss` turns embeddings into scores (loss.similarity: cosine, or the dot product
without normalisation, SimCSE's table D.1 last column), multiplies them by the logit scale
(1 / temperature, for both similarities) and applies a loss by name.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from utils.errors import ConfigError

_NEG = -1e9  # a finite "minus infinity": exp underflows to 0 and gradients stay finite


def _masked(logits, allowed):
  logits = logits.astype(jnp.float32)
  return logits if allowed is None else jnp.where(allowed, logits, _NEG)


def _target_logit(logits, targets):
  return jnp.take_along_axis(logits, targets[:, None], axis=1)[:, 0]


def log_xi(logits, targets, allowed=None):
  """Per row log xi_i = logsumexp_{j != t_i} s_ij - s_it: FlatNCE's logit gap."""
  logits = _masked(logits, allowed)
  positive = jax.nn.one_hot(targets, logits.shape[1], dtype=bool)
  negatives = jnp.where(positive, _NEG, logits)  # the positive leaves the log-sum-exp
  return jax.nn.logsumexp(negatives, axis=1) - _target_logit(logits, targets)


# InfoNCE's positive-logit gradient 1 / (1 + xi) - 1 is exactly 0 in float32 once 1 + xi
# rounds to 1, i.e. xi < 2^-24 (docs/results/flatnce_mechanism.md): FlatNCE's "easy row"
XI_UNDERFLOW = 2.0 ** -24


def _row_metrics(logits, targets, allowed, gap=None):
  """Accuracy, the mean log xi and the fraction of rows whose xi is below XI_UNDERFLOW: what
  FlatNCE's argument is about, logged for every loss so that runs show how often it happens."""
  gap = log_xi(logits, targets, allowed) if gap is None else gap
  logits = _masked(logits, allowed)
  return {"accuracy": jnp.mean(jnp.argmax(logits, axis=1) == targets),
          "log_xi": jnp.mean(gap),
          "xi_underflow": jnp.mean(gap < jnp.log(XI_UNDERFLOW))}


def infonce(logits, targets, allowed=None):
  masked = _masked(logits, allowed)
  per_row = jax.nn.logsumexp(masked, axis=1) - _target_logit(masked, targets)
  return jnp.mean(per_row), _row_metrics(logits, targets, allowed)


def flatnce(logits, targets, allowed=None):
  gap = log_xi(logits, targets, allowed)
  # xi / stop_grad(xi) written as exp(l - stop_grad(l)): the same value (1) and gradient
  # (grad l), without ever forming exp(l), which overflows for confident rows.
  per_row = jnp.exp(gap - jax.lax.stop_gradient(gap))
  metrics = _row_metrics(logits, targets, allowed, gap)
  # the InfoNCE value log(1 + xi) is what FlatNCE implicitly minimises; log it for comparison
  metrics.update(infonce=jnp.mean(jax.nn.softplus(gap)))
  return jnp.mean(per_row), metrics


def amsoftmax(cosines, targets, allowed=None, *, scale: float, margin: float):
  """AM-Softmax on cosines [r, c]: target logit scale (cos - margin), others scale cos."""
  positive = jax.nn.one_hot(targets, cosines.shape[1], dtype=cosines.dtype)
  return infonce(scale * (cosines - margin * positive), targets, allowed)


# each takes the unscaled similarities (cosines for amsoftmax, whose margin is on the cosine)
LOSSES = {
    "infonce": lambda sim, t, allowed, c: infonce(c.scale * sim, t, allowed),
    "flatnce": lambda sim, t, allowed, c: flatnce(c.scale * sim, t, allowed),
    "amsoftmax": lambda sim, t, allowed, c: amsoftmax(sim, t, allowed, scale=c.scale,
                                                      margin=c.margin),
}


def get_loss(name: str):
  if name not in LOSSES:
    raise ConfigError(f"unknown contrastive loss {name!r}; valid names: {sorted(LOSSES)}")
  return LOSSES[name]


def cosine_matrix(a, b):
  """[r, D] x [c, D] -> cosines [r, c] (float32)."""
  a = a.astype(jnp.float32)
  b = b.astype(jnp.float32)
  a = a * jax.lax.rsqrt(jnp.sum(a * a, axis=-1, keepdims=True) + 1e-12)
  b = b * jax.lax.rsqrt(jnp.sum(b * b, axis=-1, keepdims=True) + 1e-12)
  return a @ b.T


def dot_matrix(a, b):
  """[r, D] x [c, D] -> dot products [r, c] (float32), no normalisation."""
  return a.astype(jnp.float32) @ b.astype(jnp.float32).T


SIMILARITIES = {"cosine": cosine_matrix, "dot": dot_matrix}


# How the two views of each example are scored against each other.
#   cross: view 0 of row i against view 1 of every row (SimCSE, supervised pairs); r = c = b.
#   all: all 2b embeddings against each other, self excluded (SimBERT, bert4keras SimCSE).
PAIRINGS = ("cross", "all")


def contrastive_loss(h, c):
  """h [b, 2, D] (two views per example) -> (loss, metrics) under config section c.

  c: name (a key of LOSSES), scale, margin, pairing (a PAIRINGS name), symmetric (cross only:
  average with the loss of view 1 against view 0), similarity (a key of SIMILARITIES).
  """
  loss_fn = get_loss(c.name)
  similarity = SIMILARITIES[c.similarity]
  b = h.shape[0]
  if c.pairing == "cross":
    sim = similarity(h[:, 0], h[:, 1])
    targets = jnp.arange(b)
    loss, metrics = loss_fn(sim, targets, None, c)
    if c.symmetric:
      loss_t, _ = loss_fn(sim.T, targets, None, c)
      loss = (loss + loss_t) / 2
    return loss, metrics
  if c.pairing == "all":
    flat = h.reshape(2 * b, h.shape[-1])  # rows 2i and 2i+1 are a positive pair
    sim = similarity(flat, flat)
    targets = jnp.arange(2 * b) ^ 1
    return loss_fn(sim, targets, ~jnp.eye(2 * b, dtype=bool), c)
  raise ConfigError(f"unknown contrastive pairing {c.pairing!r}; valid names: {list(PAIRINGS)}")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """config.loss, resolved: hashable, so a jitted function can close over it."""
  name: str = "infonce"
  scale: float = 20.0  # logit scale, 1 / temperature
  margin: float = 0.0  # amsoftmax only
  pairing: str = "cross"
  symmetric: bool = False
  similarity: str = "cosine"

  @classmethod
  def from_config(cls, c) -> "LossConfig":
    """c: name, scale, temperature, margin, pairing, symmetric, similarity (optional, cosine
    by default); scale wins when > 0."""
    get_loss(c.name)
    if c.pairing not in PAIRINGS:
      raise ConfigError(f"unknown loss.pairing {c.pairing!r}; valid names: {list(PAIRINGS)}")
    similarity = getattr(c, "similarity", "cosine")  # configs from before the option: cosine
    if similarity not in SIMILARITIES:
      raise ConfigError(f"unknown loss.similarity {similarity!r}; valid names: "
                        f"{sorted(SIMILARITIES)}")
    if similarity != "cosine" and c.name == "amsoftmax":
      raise ConfigError("loss.name=amsoftmax puts its margin on a cosine; it needs "
                        "loss.similarity=cosine")
    if c.scale > 0:
      scale = float(c.scale)
    elif c.temperature > 0:
      scale = 1.0 / float(c.temperature)
    else:
      raise ConfigError("set loss.scale > 0 or loss.temperature > 0 (scale = 1/temperature)")
    if c.symmetric and c.pairing != "cross":
      raise ConfigError("loss.symmetric applies to loss.pairing=cross only (pairing=all "
                        "already scores every view against every other)")
    return cls(c.name, scale, float(c.margin), c.pairing, bool(c.symmetric), similarity)
