"""Inference-time extrapolation: dynamic NTK, YaRN, Qwen's log-n, and the training length L0
they read (docs/techniques.md section 8.1).

Checked against the published formulas written out here in numpy (frequencies, per-query
scale, and one attention layer recomputed from its own parameters), against HF transformers'
ROPE_INIT_FUNCTIONS ("dynamic", "yarn": inv_freq and attention_factor; the hf extra), and end
to end through train.py and evaluate.py --model_override.
"""
import dataclasses
import math
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import contrastive_batch, mlm_extrapolation
from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig, eval_time_fields
from model.masks import padding_mask
from model.positions.rope_scaling import (dynamic_ntk_base, rope_inv_freq,
                                          yarn_attention_factor, yarn_gamma_rounded,
                                          yarn_inv_freq)
from model.scales.logn_qwen import logn_qwen
from training import contrastive, mlm
from utils.errors import ConfigError

# ------------------------------------------------------------------------- numpy references


def _np_rotate(x, inv_freq):
  """RoPE, interleaved pairs, written out: pair t of position m rotated by m * inv_freq[t]."""
  m = np.arange(x.shape[1], dtype=np.float64)[:, None]
  angle = (m * inv_freq)[None, :, None, :]  # [1, n, 1, d/2]
  even, odd = x[..., 0::2], x[..., 1::2]
  out = np.empty_like(x)
  out[..., 0::2] = even * np.cos(angle) - odd * np.sin(angle)
  out[..., 1::2] = even * np.sin(angle) + odd * np.cos(angle)
  return out


def _np_layer(params, x, valid, inv_freq, lam, logit_factor=1.0):
  """The attention layer recomputed in float64: projections, rotation, logits
  lam_q * logit_factor * q.k over the valid keys, softmax, output projection.

  lam: the scale per query, [1|b, 1, q, 1]."""
  p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} for k, d in params.items()}
  x = np.asarray(x, np.float64)
  proj = lambda name: np.einsum("bnw,whd->bnhd", x, p[name]["kernel"]) + p[name]["bias"]
  q, k, v = _np_rotate(proj("query"), inv_freq), _np_rotate(proj("key"), inv_freq), proj("value")
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) * lam * logit_factor
  logits = np.where(np.asarray(valid)[:, None, None, :], logits, -np.inf)
  a = np.exp(logits - logits.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  o = np.einsum("bhqk,bkhd->bqhd", a, v)
  return np.einsum("bqhd,hdw->bqw", o, p["out"]["kernel"]) + p["out"]["bias"]


def _cfg(**kw):
  base = dict(vocab_size=30, width=16, num_heads=2, num_layers=1, mlp_dim=32, dropout=0.0,
              position="rope", scale="standard", rope_original_length=8)
  return ModelConfig.from_dict(dict(base, **kw))


N = 12  # > L0 = 8, so that every method acts


def _layer_case(cfg, n=N):
  """(layer outputs, numpy inputs): a jitted layer with random parameters; row 1 padded."""
  layer = MultiHeadAttention(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, n, cfg.width))
  valid = np.arange(n)[None] < np.array([[n], [n - 3]])
  mask, pos = padding_mask(jnp.asarray(valid)), np.arange(n)
  shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(1), x, mask, pos)
  rng = np.random.default_rng(1)
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), jnp.float32), shapes)
  out = jax.jit(lambda p: layer.apply(p, x, mask, pos))(params)
  return np.asarray(out, np.float64), (params["params"], np.asarray(x), valid)


def _standard(d, n):
  return np.full((1, 1, n, 1), 1 / math.sqrt(d))


# --------------------------------------------------------------------------------- dynamic NTK

def test_dynamic_ntk_base_formula():
  # a hand case: base 10^4, s = 4, d = 16, L0 = 32, L = 64: base (4 * 2 - 3)^(16/14)
  assert dynamic_ntk_base(1e4, 4.0, 16, 64, 32) == pytest.approx(1e4 * 5 ** (8 / 7), rel=1e-12)
  for s, d, length, l0 in [(2.0, 64, 4096, 2048), (8.0, 128, 10000, 4096), (1.0, 16, 96, 32)]:
    want = 1e4 * (s * length / l0 - (s - 1)) ** (d / (d - 2))
    assert dynamic_ntk_base(1e4, s, d, length, l0) == pytest.approx(want, rel=1e-12)
  for length in (1, 31, 32):  # up to L0: plain RoPE, exactly
    assert dynamic_ntk_base(1e4, 4.0, 16, length, 32) == 1e4


def test_dynamic_ntk_layer_uses_the_padded_length():
  d, s = 8, 4.0
  cfg = _cfg(rope_scaling="dynamic_ntk", rope_scaling_factor=s)
  out, (params, x, valid) = _layer_case(cfg)
  base = 1e4 * (s * N / 8 - (s - 1)) ** (d / (d - 2))  # L = 12, the padded length, both rows
  want = _np_layer(params, x, valid, rope_inv_freq(d, base), _standard(d, N))
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  # at L = L0 it is plain RoPE, bit for bit
  short, _ = _layer_case(cfg, n=8)
  plain, _ = _layer_case(_cfg(), n=8)
  np.testing.assert_array_equal(short, plain)


# ------------------------------------------------------------------------------------- YaRN

def _np_yarn_continuous(d, base, s, l0):
  """The paper's YaRN: r = L0 / wavelength, gamma = clip((r - 1) / (32 - 1), 0, 1)."""
  inv = base ** (-np.arange(0, d, 2) / d)
  r = l0 / (2 * np.pi / inv)
  gamma = np.clip((r - 1) / (32 - 1), 0, 1)
  return inv * ((1 - gamma) / s + gamma)


def test_yarn_rounded_ramp_by_hand():
  # d = 16, base 10^4, L0 = 32: r = 32 / (2 pi) = 5.09 turns at t = 0, so the ends are
  # t = floor(-1.60) -> 0 (r = 32) and t = ceil(1.41) = 2 (r = 1): gamma = 1, 1/2, then 0
  np.testing.assert_allclose(yarn_gamma_rounded(16, 1e4, 32), [1, 0.5, 0, 0, 0, 0, 0, 0])
  inv = 1e4 ** (-np.arange(0, 16, 2) / 16)
  np.testing.assert_allclose(yarn_inv_freq(16, 1e4, 4.0, 32),
                             inv * np.array([1, 0.625] + [0.25] * 6), rtol=1e-12)


@pytest.mark.parametrize("d,base,s,l0", [(16, 1e4, 4.0, 32), (64, 1e4, 8.0, 2048),
                                         (128, 5e5, 4.0, 8192)])
def test_yarn_continuous_is_the_papers_formula(d, base, s, l0):
  got = yarn_inv_freq(d, base, s, l0, ramp="continuous")
  np.testing.assert_allclose(got, _np_yarn_continuous(d, base, s, l0), rtol=1e-12)
  inv = rope_inv_freq(d, base)
  if l0 >= 2048:  # the fastest pair turns more than 32 times over L0: unscaled
    assert got[0] == pytest.approx(inv[0], rel=1e-12)
  else:  # L0 = 32: even the fastest pair turns 32 / (2 pi) = 5.09 times, gamma = 4.09 / 31
    gamma = (32 / (2 * math.pi) - 1) / 31
    assert got[0] == pytest.approx((1 - gamma) / s + gamma, rel=1e-12)
  assert got[-1] == pytest.approx(inv[-1] / s, rel=1e-12)  # slowest: r < 1, interpolated by s
  # the rounded ramp (the default) differs from the paper's somewhere between the ends
  assert not np.allclose(yarn_inv_freq(d, base, s, l0), got, rtol=1e-6)


def test_yarn_attention_factor():
  assert yarn_attention_factor(4.0) == pytest.approx(0.1 * math.log(4) + 1, rel=1e-15)
  assert yarn_attention_factor(1.0) == yarn_attention_factor(0.5) == 1.0  # HF: 1 for s <= 1


@pytest.mark.parametrize("ramp", ["rounded", "continuous"])
def test_yarn_layer_interpolates_and_scales_q_and_k(ramp):
  d, s = 8, 8.0
  cfg = _cfg(rope_scaling="yarn", rope_scaling_factor=s, rope_yarn_ramp=ramp)
  out, (params, x, valid) = _layer_case(cfg)
  inv = (yarn_inv_freq(d, 1e4, s, 8) if ramp == "rounded" else
         _np_yarn_continuous(d, 1e4, s, 8))
  m = 0.1 * math.log(s) + 1  # on q and on k: m^2 on the logits
  want = _np_layer(params, x, valid, inv, _standard(d, N), logit_factor=m * m)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


def test_yarn_refused_by_kernels_without_a_logit_matrix():
  for attention in ("linear", "performer", "nystrom"):
    with pytest.raises(ConfigError, match=r"cannot apply position=rope with rope_scaling=yarn.*"
                       r"logit_multiplier"):
      _cfg(rope_scaling="yarn", attention=attention, nystrom_landmarks=4, performer_features=8)
    _cfg(rope_scaling="dynamic_ntk", attention=attention, nystrom_landmarks=4,
         performer_features=8)  # a plain rotation: accepted


# --------------------------------------------------------------------------------- logn_qwen

def test_logn_qwen_by_hand():
  # n_train = 8, d = 16 (1/sqrt(d) = 1/4): positions below, at and above n_train
  i = jnp.array([1, 4, 7, 8, 9, 16, 64]).reshape(1, 1, 7, 1)
  got = np.asarray(logn_qwen(i, 16, n_train=8))[0, 0, :, 0]
  want = [0.25, 0.25, 0.25, 0.25, math.log(9) / math.log(8) / 4, (4 / 3) / 4, 2 / 4]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert np.all(got[:4] == np.float32(0.25))  # exactly standard up to n_train


def _np_logn_qwen(d, n, n_train):
  i = np.arange(1, n + 1, dtype=np.float64)
  ratio = np.where(i > n_train, np.log(i) / np.log(n_train), 1.0)
  return (ratio / math.sqrt(d)).reshape(1, 1, n, 1)


@pytest.mark.parametrize("scaling", ["none", "ntk"])
def test_logn_qwen_layer_scales_by_query_position(scaling):
  # row 1 is padded: a key count (log-n's n) would differ between rows, the position does not
  d, n_train = 8, 5
  factor = 4.0 if scaling == "ntk" else 1.0
  cfg = _cfg(scale="logn_qwen", rope_original_length=n_train, rope_scaling=scaling,
             rope_scaling_factor=factor)
  out, (params, x, valid) = _layer_case(cfg)
  base = 1e4 * factor ** (d / (d - 2))
  want = _np_layer(params, x, valid, rope_inv_freq(d, base), _np_logn_qwen(d, N, n_train))
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
  standard, _ = _layer_case(dataclasses.replace(cfg, scale="standard"))
  np.testing.assert_array_equal(out[:, :n_train], standard[:, :n_train])  # identity there
  assert not np.allclose(out[:, n_train:], standard[:, n_train:], rtol=1e-3)


def test_ntk_with_logn_in_a_layer():
  d, n0 = 8, 4
  cfg = _cfg(scale="logn", logn_n0=n0, logn_floor=1, rope_scaling="ntk", rope_scaling_factor=4.0)
  out, (params, x, valid) = _layer_case(cfg)
  keys = valid.sum(-1).astype(np.float64).reshape(2, 1, 1, 1)  # valid keys per row
  lam = np.log(keys) / np.log(n0) / math.sqrt(d)
  want = _np_layer(params, x, valid, rope_inv_freq(d, 1e4 * 4.0 ** (d / (d - 2))), lam)
  np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------- the training length L0

@pytest.mark.parametrize("fields", [dict(rope_scaling="dynamic_ntk"), dict(rope_scaling="yarn"),
                                    dict(scale="logn_qwen")], ids=str)
def test_unresolved_training_length_refused_when_the_model_is_built(fields):
  cfg = _cfg(rope_original_length=0, **fields)  # a valid config: the task fills L0 in
  layer = MultiHeadAttention(cfg)
  x = jnp.zeros((1, 4, 16))
  with pytest.raises(ConfigError) as e:
    jax.eval_shape(layer.init, jax.random.PRNGKey(0), x, padding_mask(jnp.ones((1, 4), bool)),
                   np.arange(4))
  message = str(e.value)
  assert message.startswith("model.rope_original_length=0: ") and "\n" not in message
  name = "scale=logn_qwen" if "scale" in fields else f"rope_scaling={fields['rope_scaling']}"
  assert name in message


def test_tasks_fill_the_training_length():
  config = mlm_extrapolation.get_config("smoke")
  assert config.model.rope_original_length == 0
  assert mlm.model_config(config, 30).rope_original_length == config.data.train_length == 32
  with config.unlocked():
    config.model.rope_original_length = 100
  assert mlm.model_config(config, 30).rope_original_length == 100  # an explicit L0 is kept
  # an override at evaluation time, like the methods that read it
  assert "rope_original_length" in eval_time_fields() and "rope_yarn_ramp" in eval_time_fields()
  changed = mlm.apply_overrides(mlm_extrapolation.get_config("smoke"),
                                ["rope_scaling=yarn", "rope_original_length=48"])
  assert mlm.model_config(changed, 30).rope_original_length == 48


def test_contrastive_task_fills_the_training_length(tmp_path):
  config = contrastive_batch.get_config("smoke")
  _, model_cfg, _ = contrastive.prepare_model(config, str(tmp_path),
                                              contrastive.training_pairs(config))
  assert model_cfg.rope_original_length == config.data.max_len == 24


def test_factor_accepted_by_the_new_methods_and_bad_values_refused():
  for scaling in ("dynamic_ntk", "yarn"):
    assert _cfg(rope_scaling=scaling, rope_scaling_factor=4.0).rope_scaling_factor == 4.0
  with pytest.raises(ConfigError, match=re.escape("rope_scaling=pi|ntk|dynamic_ntk|yarn use")):
    _cfg(rope_scaling="none", rope_scaling_factor=4.0)
  for bad in (dict(rope_original_length=1), dict(rope_original_length=-1),
              dict(rope_yarn_ramp="linear"), dict(rope_scaling="longrope")):
    with pytest.raises(ConfigError, match=f"model.{list(bad)[0]}="):
      _cfg(**bad)


# ------------------------------------------------------------------ HF transformers (hf extra)

class _Tensor(np.ndarray):
  """A numpy array with torch's .to(device=, dtype=)."""

  def to(self, device=None, dtype=None):
    del device
    return (self if dtype is None else self.astype(dtype)).view(_Tensor)


# HF's rope functions use torch for arange, clamp and a dtype cast only; where torch is not
# installed (the hf extra does not bring it) they run on these numpy equivalents, so the
# arithmetic checked (the formula, the rounded ends, the attention factor) is HF's own.
_TORCH_STAND_IN = types.SimpleNamespace(
    Tensor=_Tensor, float=np.float32, float32=np.float32, int64=np.int64,
    arange=lambda *a, dtype=None: np.arange(*a, dtype=dtype).view(_Tensor),
    clamp=lambda x, low, high: np.clip(x, low, high).view(_Tensor))


@pytest.fixture
def hf_rope(monkeypatch):
  """kind, LlamaConfig kwargs, seq_len -> (inv_freq float64, attention_factor) from HF."""
  pytest.importorskip("transformers")
  from transformers import LlamaConfig
  from transformers import modeling_rope_utils as rope_utils
  try:
    import torch  # noqa: F401
  except ImportError:
    monkeypatch.setattr(rope_utils, "torch", _TORCH_STAND_IN, raising=False)

  def compute(kind, seq_len=None, **config):
    inv, factor = rope_utils.ROPE_INIT_FUNCTIONS[kind](LlamaConfig(**config), "cpu",
                                                       seq_len=seq_len)
    return np.asarray(inv, np.float64), factor
  return compute


def _llama(d, base, l0, heads=4, **scaling):
  return dict(hidden_size=d * heads, num_attention_heads=heads, rope_theta=base,
              max_position_embeddings=l0, rope_scaling=scaling)


@pytest.mark.parametrize("d,base,s,l0", [(16, 1e4, 4.0, 32), (64, 1e4, 2.0, 2048),
                                         (128, 5e5, 8.0, 8192), (32, 1e4, 1.0, 64)])
def test_dynamic_ntk_matches_hf(hf_rope, d, base, s, l0):
  for length in (l0 // 2, l0, l0 + 1, 2 * l0, 5 * l0 + 3):
    want, factor = hf_rope("dynamic", seq_len=length,
                           **_llama(d, base, l0, rope_type="dynamic", factor=s))
    got = rope_inv_freq(d, dynamic_ntk_base(base, s, d, length, l0))
    np.testing.assert_allclose(got, want, rtol=2e-6)
    assert factor == 1.0


@pytest.mark.parametrize("d,base,s,l0", [(16, 1e4, 4.0, 32), (64, 1e4, 4.0, 2048),
                                         (128, 5e5, 8.0, 8192), (32, 1e4, 2.5, 64),
                                         (64, 1e4, 16.0, 4096), (16, 1e4, 1.0, 32),
                                         # the ramp's upper end past pair d/2 - 1 (HF clips
                                         # at d - 1), and both ends at 0 (a 0.001-wide ramp)
                                         (16, 500.0, 4.0, 4096), (16, 1e4, 4.0, 4)])
def test_yarn_matches_hf(hf_rope, d, base, s, l0):
  kw = _llama(d, base, l0, rope_type="yarn", factor=s, original_max_position_embeddings=l0)
  kw["max_position_embeddings"] = int(l0 * s)  # HF's convention: the extended length
  want, factor = hf_rope("yarn", **kw)
  np.testing.assert_allclose(yarn_inv_freq(d, base, s, l0), want, rtol=2e-6)
  assert yarn_attention_factor(s) == factor
