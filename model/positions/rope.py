"""Rotary position embedding (RoPE; docs/techniques.md sections 3 and 8).

Each pair of features of q and k is rotated by angle m * theta_t with
theta_t = base^(-2t/d), so (R_m q).(R_n k) = q.(R_{n-m} k): logits depend on m - n only.

Two pair layouts, not interchangeable when loading weights:
  interleaved: pairs (x0, x1), (x2, x3), ...        (RoFormer, bert4keras; default)
  half:        pairs (x_t, x_{t + d/2})             (GPT-NeoX / LLaMA)

Extrapolation options (`rope_scaling`), for running past the training length:
  pi:     position interpolation, positions / factor (angles stay in the trained range);
  ntk:    NTK-aware scaling, base * factor^(d/(d-2)) (the lowest frequency is interpolated by
          `factor`, the highest kept as trained);
  rerope: exact relative positions inside `window`, clamped to +-window beyond it (ReRoPE).
          A clamped logit is not a rotation of q and k by their own positions, so the logits
          are computed twice (exact and clamped) and selected per pair.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from model.positions.base import RelativeTerms
from model.variants import Field, PositionVariant, at_least, one_of, positive, unbounded
from utils.errors import ConfigError

LAYOUTS = ("interleaved", "half")
SCALINGS = ("none", "pi", "ntk", "rerope")


def rope_cos_sin(positions, head_dim: int, base: float = 10000.0):
  """cos and sin of the angles m * theta_t, theta_t = base^(-2t/d): [..., n, d/2] float32.

  Static positions (a numpy array: the encoder's 0..n-1) give constant tables computed here
  in float64. Inside a jitted step, traced tables would be fused into the rotation and their
  cos and sin recomputed for every element of q and k. Traced positions (float for PI) take
  the float32 path.
  """
  if head_dim % 2:
    raise ConfigError(f"RoPE needs an even head dimension, got {head_dim}")
  inv_freq = float(base) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
  if isinstance(positions, np.ndarray):
    ang = positions.astype(np.float64)[..., None] * inv_freq
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
  ang = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)
  return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x, positions, *, base: float = 10000.0, layout: str = "interleaved"):
  """Rotate x[..., n, h, d] by the angles of positions[n] (or [b, n])."""
  d = x.shape[-1]
  cos, sin = (t[..., None, :] for t in rope_cos_sin(positions, d, base))  # [.., n, 1, d/2]
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


def ntk_base(base: float, factor: float, head_dim: int) -> float:
  """NTK-aware base: base * factor^(d/(d-2)), so that the slowest pair's angle is divided by
  `factor` (interpolated) while the fastest pairs keep their trained resolution."""
  return base * factor ** (head_dim / (head_dim - 2))


def scaled_rope(x, positions, *, base: float, layout: str, scaling: str = "none",
                factor: float = 1.0):
  """apply_rope with the pi or ntk extrapolation option ('none': plain RoPE)."""
  if scaling == "pi":
    positions = positions / factor
  elif scaling == "ntk":
    base = ntk_base(base, factor, x.shape[-1])
  elif scaling != "none":
    raise ConfigError(f"rope_scaling {scaling!r} is not a rotation; valid names here: "
                      "['none', 'ntk', 'pi']")
  return apply_rope(x, positions, base=base, layout=layout)


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

  def __call__(self, q_pos, k_pos, causal: bool = False):
    if self.scaling == "rerope":
      return RelativeTerms(qk_logits=functools.partial(
          rerope_logits, q_pos=q_pos, k_pos=k_pos, window=self.window, base=self.base,
          layout=self.layout, causal=causal))
    # q and k are rotated by their own positions inside the kernel
    return RelativeTerms(rotate=functools.partial(
        scaled_rope, base=self.base, layout=self.layout, scaling=self.scaling,
        factor=self.factor))


def _scaling_check(value, cfg):
  if value not in SCALINGS:
    return f"unknown rope_scaling; valid names: {sorted(SCALINGS)}"
  if value != "none" and cfg.position != "rope":
    return f"applies to position=rope only, not position={cfg.position}; use rope_scaling=none"
  return None


def _factor_check(value, cfg):
  if value <= 0:
    return "must be positive"
  if value != 1.0 and cfg.rope_scaling not in ("pi", "ntk"):
    # only pi and ntk read the factor: anything else would silently ignore it
    return (f"only rope_scaling=pi or ntk use a factor, not rope_scaling={cfg.rope_scaling}; "
            "set model.rope_scaling=pi|ntk or leave the factor at 1")
  return None


FIELDS = (
    Field("rope_base", 10000.0, "base of the angles theta_t = base^(-2t/d)", positive,
          eval_time=True, bad=(0.0,)),
    Field("rope_layout", "interleaved", "feature pairs: interleaved (RoFormer) or half "
          "(GPT-NeoX); not interchangeable when loading weights", one_of(LAYOUTS),
          bad=("neox",)),
    Field("rope_scaling", "none", "extrapolation past the training length: none | pi | ntk | "
          "rerope", _scaling_check, eval_time=True, bad=("yarn",)),
    Field("rope_scaling_factor", 1.0, "pi: positions / factor; ntk: base scaled for factor",
          _factor_check, eval_time=True, bad=(0.0,)),
    Field("rerope_window", 64, "rerope: exact relative positions inside the window, clamped "
          "beyond", at_least(1), eval_time=True, bad=(0,)),
)


def _check(cfg) -> None:
  if cfg.head_dim % 2:
    raise ConfigError(f"position=rope needs an even head dimension, got {cfg.head_dim}")
  if cfg.rope_scaling == "ntk" and cfg.head_dim <= 2:
    raise ConfigError("rope_scaling=ntk needs a head dimension above 2 (base^(d/(d-2)))")


def _terms(cfg) -> frozenset:
  # ReRoPE's clamped logits are not one rotation of q and k: it forms q.k itself
  return frozenset({"qk_logits"}) if cfg.rope_scaling == "rerope" else frozenset({"rotate"})


VARIANT = PositionVariant(
    name="rope", doc="rotary position embedding: q and k rotated by their positions",
    fields=FIELDS, check=_check, terms=_terms, max_length=unbounded,
    relative=lambda cfg: Rope(base=cfg.rope_base, layout=cfg.rope_layout,
                              scaling=cfg.rope_scaling, factor=cfg.rope_scaling_factor,
                              window=cfg.rerope_window))
