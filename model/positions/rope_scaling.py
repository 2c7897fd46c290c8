"""RoPE frequencies for running past the training length: dynamic NTK and YaRN
(docs/techniques.md section 8.1), and the training length L0 they are defined against.

Pure functions of (head dim d, base, extension factor s, L0) returning Python floats or float64
numpy arrays, so that the rotation tables stay compile-time constants (model/positions/rope.py
applies them). Pair t (0 <= t < d/2) turns at inv_t = base^(-2t/d) radians per position; over
L0 positions it makes r_t = L0 inv_t / (2 pi) = L0 / wavelength_t turns.

  dynamic NTK: for a sequence of length L > L0, base' = base (s L / L0 - (s - 1))^(d/(d-2));
               plain RoPE for L <= L0. L is the padded length of the batch (a static shape).
  YaRN:        inv_t ((1 - gamma_t) / s + gamma_t): pairs that turn many times over L0 keep
               their frequency (gamma = 1), slow pairs are interpolated by s (gamma = 0), a ramp
               in between; q and k are each multiplied by 0.1 ln s + 1.
"""
from __future__ import annotations

import math

import numpy as np

from model.variants import Field
from utils.errors import ConfigError

# YaRN's ramp ends, in turns over L0: alpha and beta of the paper (its values for LLaMA), which
# are HF transformers' beta_slow = 1 and beta_fast = 32. Constants: no experiment here varies
# them, and two more fields would be two more things to keep consistent (alpha < beta).
YARN_ALPHA, YARN_BETA = 1.0, 32.0
YARN_RAMPS = ("rounded", "continuous")


def _original_length_check(value, cfg):
  del cfg
  if value == 0 or value >= 2:
    return None
  return "must be 0 (the run's training length) or a length >= 2"


# read by rope_scaling=dynamic_ntk and yarn (rope.py) and by scale=logn_qwen
ORIGINAL_LENGTH = Field(
    "rope_original_length", 0, "dynamic_ntk, yarn, logn_qwen: the training length L0 (0: the "
    "run's data.train_length, filled in by the task)", _original_length_check, eval_time=True,
    bad=(-1, 1))


def require_original_length(cfg, user: str) -> int:
  """cfg.rope_original_length, refused in one line while it is still 0 (unresolved).

  The tasks fill it from the training length when they build the model config; a model
  config made by hand must set it.
  """
  if cfg.rope_original_length == 0:
    raise ConfigError(f"model.rope_original_length=0: {user} needs the training length L0; "
                      "set model.rope_original_length to it (train.py and evaluate.py fill it "
                      "from data.train_length)")
  return cfg.rope_original_length


def rope_inv_freq(head_dim: int, base: float) -> np.ndarray:
  """inv_t = base^(-2t/d) for t = 0 .. d/2 - 1, float64 (the plain RoPE frequencies)."""
  return float(base) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)


def ntk_base(base: float, factor: float, head_dim: int) -> float:
  """NTK-aware base: base * factor^(d/(d-2)), so that the slowest pair's angle is divided by
  `factor` (interpolated) while the fastest pairs keep their trained resolution."""
  return base * factor ** (head_dim / (head_dim - 2))


def dynamic_ntk_base(base: float, factor: float, head_dim: int, length: int,
                     original_length: int) -> float:
  """NTK's base for the factor s L / L0 - (s - 1) when L > L0, else base itself (plain RoPE).

  At L = L0 the factor is 1; it grows linearly with L, so the NTK factor is chosen for the
  length actually run rather than fixed in advance.
  """
  if length <= original_length:
    return base
  return ntk_base(base, factor * length / original_length - (factor - 1), head_dim)


def _turning_pair(turns: float, head_dim: int, base: float, original_length: int) -> float:
  """The (fractional) pair index t at which r_t = turns: d ln(L0 / (2 pi turns)) / (2 ln base)."""
  return head_dim * math.log(original_length / (turns * 2 * math.pi)) / (2 * math.log(base))


def yarn_gamma_rounded(head_dim: int, base: float, original_length: int) -> np.ndarray:
  """gamma_t with the ramp's ends rounded outwards to whole pairs, as HF transformers does.

  The ramp runs linearly in the pair index from floor(t at r = beta) (gamma = 1 up to there) to
  ceil(t at r = alpha) (gamma = 0 from there on), the ends clipped to [0, d - 1] as HF clips
  them; equal ends get a ramp of width 0.001, as in HF, instead of a division by zero.
  """
  low = max(math.floor(_turning_pair(YARN_BETA, head_dim, base, original_length)), 0)
  high = min(math.ceil(_turning_pair(YARN_ALPHA, head_dim, base, original_length)),
             head_dim - 1)
  if low == high:
    high += 0.001
  ramp = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
  return 1.0 - ramp


def yarn_gamma_continuous(head_dim: int, base: float, original_length: int) -> np.ndarray:
  """gamma_t = clip((r_t - alpha) / (beta - alpha), 0, 1): the paper's ramp, linear in r_t."""
  turns = original_length * rope_inv_freq(head_dim, base) / (2 * math.pi)
  return np.clip((turns - YARN_ALPHA) / (YARN_BETA - YARN_ALPHA), 0.0, 1.0)


def yarn_inv_freq(head_dim: int, base: float, factor: float, original_length: int,
                  ramp: str = "rounded") -> np.ndarray:
  """YaRN's frequencies inv_t ((1 - gamma_t) / s + gamma_t), float64."""
  if ramp == "rounded":
    gamma = yarn_gamma_rounded(head_dim, base, original_length)
  elif ramp == "continuous":
    gamma = yarn_gamma_continuous(head_dim, base, original_length)
  else:
    raise ConfigError(f"unknown rope_yarn_ramp {ramp!r}; valid names: {list(YARN_RAMPS)}")
  return rope_inv_freq(head_dim, base) * ((1.0 - gamma) / factor + gamma)


def yarn_attention_factor(factor: float) -> float:
  """0.1 ln s + 1, the factor on q and on k (the logits get its square); 1 for s <= 1, as in
  HF transformers (nothing is interpolated then)."""
  return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
