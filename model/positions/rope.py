"""Rotary position embedding (RoPE; docs/techniques.md sections 3 and 8).

Each pair of features of q and k is rotated by angle m * theta_t with
theta_t = base^(-2t/d), so (R_m q).(R_n k) = q.(R_{n-m} k): logits depend on m - n only.

Two pair layouts, not interchangeable when loading weights:
  interleaved: pairs (x0, x1), (x2, x3), ...        (RoFormer, bert4keras; default)
  half:        pairs (x_t, x_{t + d/2})             (GPT-NeoX / LLaMA)

Extrapolation options (`rope_scaling`), for running past the training length:
  pi:          position interpolation, positions / factor (angles stay in the trained range);
  ntk:         NTK-aware scaling, base * factor^(d/(d-2)) (the lowest frequency is
               interpolated by `factor`, the highest kept as trained);
  dynamic_ntk: ntk with the factor chosen for the batch's padded length L against the
               training length L0, plain RoPE up to L0 (rope_scaling.py);
  yarn:        per-pair blend of interpolation and no scaling, q and k scaled up by
               0.1 ln(factor) + 1 (rope_scaling.py); declared as a logit multiplier, so
               kernels without a logit matrix refuse it;
  rerope:      exact relative positions inside `window`, clamped to +-window beyond it
               (ReRoPE). A clamped logit is not a rotation of q and k by their own positions,
               so the logits are computed twice (exact and clamped) and selected per pair.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from model.positions.base import RelativeTerms
from model.positions.rope_scaling import (ORIGINAL_LENGTH, YARN_RAMPS, dynamic_ntk_base,
                                          ntk_base, require_original_length, rope_inv_freq,
                                          yarn_attention_factor, yarn_inv_freq)
from model.variants import Field, PositionVariant, at_least, one_of, positive, unbounded
from utils.errors import ConfigError

LAYOUTS = ("interleaved", "half")
SCALINGS = ("none", "pi", "ntk", "dynamic_ntk", "yarn", "rerope")
FACTOR_SCALINGS = ("pi", "ntk", "dynamic_ntk", "yarn")  # the options that read the factor
NEEDS_LENGTH = ("dynamic_ntk", "yarn")  # the options defined against the training length


def rope_cos_sin(positions, head_dim: int, base: float = 10000.0, inv_freq=None):
  """cos and sin of the angles m * theta_t, theta_t = base^(-2t/d): [..., n, d/2] float32.

  inv_freq: other frequencies theta_t (float64 [d/2], YaRN's), instead of base's.
  Static positions (a numpy array: the encoder's 0..n-1) give constant tables computed here
  in float64. Inside a jitted step, traced tables would be fused into the rotation and their
  cos and sin recomputed for every element of q and k. Traced positions (float for PI) take
  the float32 path.
  """
  if head_dim % 2:
    raise ConfigError(f"RoPE needs an even head dimension, got {head_dim}")
  if inv_freq is None:
    inv_freq = rope_inv_freq(head_dim, base)
  if isinstance(positions, np.ndarray):
    ang = positions.astype(np.float64)[..., None] * inv_freq
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
  ang = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x, positions, *, base: float = 10000.0, layout: str = "interleaved",
               inv_freq=None):
  """Rotate x[..., n, h, d] by the angles of positions[n] (or [b, n])."""
  d = x.shape[-1]
  tables = rope_cos_sin(positions, d, base, inv_freq)
  cos, sin = (t[..., None, :] for t in tables)  # [.., n, 1, d/2]
  xf = x.astype(jnp.float32)
  if layout == "interleaved":
    # x * cos + swap(x) * (-sin, sin) with swap(x0, x1) = (x1, x0): one elementwise fusion.
    # (Rotating strided slices and stacking them costs a materialised copy per q and k.)
    cos2 = jnp.repeat(cos, 2, axis=-1)
    sin2 = jnp.stack([-sin, sin], axis=-1).reshape(cos2.shape)
    swapped = xf.reshape(xf.shape[:-1] + (d // 2, 2))[..., ::-1].reshape(xf.shape)
    out = xf * cos2 + swapped * sin2
  elif layout == "half":
    x1, x2 = xf[..., : d // 2], xf[..., d // 2:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
  else:
    raise ConfigError(f"unknown rope_layout {layout!r}; valid names: {list(LAYOUTS)}")
  return out.astype(x.dtype)


def scaled_rope(x, positions, *, base: float, layout: str, scaling: str = "none",
                factor: float = 1.0, length: int = 0, original_length: int = 0,
                ramp: str = "rounded"):
  """apply_rope with an extrapolation option that is a rotation ('none': plain RoPE).

  length: the padded sequence length L (dynamic_ntk); original_length: the training length
  L0 (dynamic_ntk, yarn); ramp: YaRN's ramp (rope_scaling.py). YaRN's factor on q and k is
  not applied here: Rope declares it as a logit multiplier.
  """
  d, inv_freq = x.shape[-1], None
  if scaling == "pi":
    positions = positions / factor
  elif scaling == "ntk":
    base = ntk_base(base, factor, d)
  elif scaling == "dynamic_ntk":
    base = dynamic_ntk_base(base, factor, d, length, original_length)
  elif scaling == "yarn":
    inv_freq = yarn_inv_freq(d, base, factor, original_length, ramp)
  elif scaling != "none":
    raise ConfigError(f"rope_scaling {scaling!r} is not a rotation; valid names here: "
                      "['dynamic_ntk', 'none', 'ntk', 'pi', 'yarn']")
  return apply_rope(x, positions, base=base, layout=layout, inv_freq=inv_freq)


def _dot(q, k):
  return jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)


def rerope_logits(q, k, q_pos, k_pos, *, window: int, base: float, layout: str,
                  causal: bool = False):
  """q.k [b,h,q,k] with RoPE at relative position clip(i - j, -window, window).

  Inside the window this is plain RoPE; beyond it the relative position is `window`
  (key on the left) or `-window` (key on the right), i.e. (R_{+-w} q).k with k unrotated.
  """
  rot = functools.partial(apply_rope, base=base, layout=layout)
  rel = q_pos[:, None] - k_pos[None, :]  # i - j
  exact = _dot(rot(q, q_pos), rot(k, k_pos))
  far_left = _dot(rot(q, jnp.full_like(q_pos, window)), k)
  out = jnp.where(rel >= window, far_left, exact)
  if not causal:  # a causal mask hides every key on the right: skip that third product
    far_right = _dot(rot(q, jnp.full_like(q_pos, -window)), k)
    out = jnp.where(rel <= -window, far_right, out)
  return out


class Rope(nn.Module):
  base: float = 10000.0
  layout: str = "interleaved"
  scaling: str = "none"
  factor: float = 1.0
  window: int = 64
  original_length: int = 0
  ramp: str = "rounded"

  def __call__(self, q_pos, k_pos, causal: bool = False):
    if self.scaling == "rerope":
      return RelativeTerms(qk_logits=functools.partial(
          rerope_logits, q_pos=q_pos, k_pos=k_pos, window=self.window, base=self.base,
          layout=self.layout, causal=causal))
    # q and k are rotated by their own positions inside the kernel; dynamic_ntk's L is the
    # keys' (padded) length, one base for q and k
    rotate = functools.partial(
        scaled_rope, base=self.base, layout=self.layout, scaling=self.scaling,
        factor=self.factor, length=k_pos.shape[-1], original_length=self.original_length,
        ramp=self.ramp)
    if self.scaling == "yarn":
      # q and k each times yarn_attention_factor: the logits times its square
      return RelativeTerms(rotate=rotate,
                           logit_multiplier=yarn_attention_factor(self.factor) ** 2)
    return RelativeTerms(rotate=rotate)


def _scaling_check(value, cfg):
  if value not in SCALINGS:
    return f"unknown rope_scaling; valid names: {sorted(SCALINGS)}"
  if value != "none" and cfg.position != "rope":
    return f"applies to position=rope only, not position={cfg.position}; use rope_scaling=none"
  return None


def _factor_check(value, cfg):
  if value <= 0:
    return "must be positive"
  if value != 1.0 and cfg.rope_scaling not in FACTOR_SCALINGS:
    # only these read the factor: anything else would silently ignore it
    names = "|".join(FACTOR_SCALINGS)
    return (f"only rope_scaling={names} use a factor, not rope_scaling={cfg.rope_scaling}; "
            f"set model.rope_scaling={names} or leave the factor at 1")
  return None


FIELDS = (
    Field("rope_base", 10000.0, "base of the angles theta_t = base^(-2t/d)", positive,
          eval_time=True, bad=(0.0,)),
    Field("rope_layout", "interleaved", "feature pairs: interleaved (RoFormer) or half "
          "(GPT-NeoX); not interchangeable when loading weights", one_of(LAYOUTS),
          bad=("neox",)),
    Field("rope_scaling", "none", "extrapolation past the training length: none | pi | ntk | "
          "dynamic_ntk | yarn | rerope", _scaling_check, eval_time=True, bad=("longrope",)),
    Field("rope_scaling_factor", 1.0, "pi: positions / factor; ntk, dynamic_ntk: base scaled "
          "for factor; yarn: the slow pairs interpolated by factor", _factor_check,
          eval_time=True, bad=(0.0,)),
    Field("rerope_window", 64, "rerope: exact relative positions inside the window, clamped "
          "beyond", at_least(1), eval_time=True, bad=(0,)),
    ORIGINAL_LENGTH,
    Field("rope_yarn_ramp", "rounded", "yarn: ramp ends rounded to whole pairs (rounded, as HF "
          "transformers) or the paper's ramp linear in turns (continuous)", one_of(YARN_RAMPS),
          eval_time=True, bad=("linear",)),
)


def _check(cfg) -> None:
  if cfg.head_dim % 2:
    raise ConfigError(f"position=rope needs an even head dimension, got {cfg.head_dim}")
  if cfg.rope_scaling in ("ntk", "dynamic_ntk") and cfg.head_dim <= 2:
    raise ConfigError(f"rope_scaling={cfg.rope_scaling} needs a head dimension above 2 "
                      "(base^(d/(d-2)))")


def _build_check(cfg) -> None:
  # the training length is filled in by the task, after the config file is validated
  if cfg.rope_scaling in NEEDS_LENGTH:
    require_original_length(cfg, f"rope_scaling={cfg.rope_scaling}")


def _terms(cfg) -> frozenset:
  # ReRoPE's clamped logits are not one rotation of q and k: it forms q.k itself
  if cfg.rope_scaling == "rerope":
    return frozenset({"qk_logits"})
  if cfg.rope_scaling == "yarn":  # its factor on q and k, as a factor on the logits
    return frozenset({"rotate", "logit_multiplier"})
  return frozenset({"rotate"})


VARIANT = PositionVariant(
    name="rope", doc="rotary position embedding: q and k rotated by their positions",
    fields=FIELDS, check=_check, build_check=_build_check, terms=_terms,
    max_length=unbounded,
    relative=lambda cfg: Rope(base=cfg.rope_base, layout=cfg.rope_layout,
                              scaling=cfg.rope_scaling, factor=cfg.rope_scaling_factor,
                              window=cfg.rerope_window,
                              original_length=cfg.rope_original_length,
                              ramp=cfg.rope_yarn_ramp))
