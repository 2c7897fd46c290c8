"""Relative position encodings and attention scales against explicit per-pair formulas.

Each reference below is a plain numpy loop over (batch, head, query, key) written from the
formulas of docs/techniques.md section 3, fed the layer's own parameters; the model must agree
to 1e-5.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig
from model.masks import causal_mask, num_valid_keys, padding_mask
from model.positions import POSITIONS
from model.positions.alibi import Alibi, alibi_slopes
from model.positions.rope import apply_rope, ntk_base, rerope_logits, scaled_rope
from model.positions.shaw import Shaw
from model.positions.t5 import T5Bias
from model.scales.logn_causal import logn_causal
from model.scales.standard import standard
from utils.errors import ConfigError

NEW = ["shaw", "xl", "t5", "deberta", "alibi"]


def _cfg(**kw):
  base = dict(vocab_size=50, width=16, num_heads=2, num_layers=1, mlp_dim=32, dropout=0.0,
              scale="standard", relative_clip=2)
  base.update(kw)
  return ModelConfig.from_dict(base)


def _params(module, *args, seed=1):
  """Random parameters of module's shapes, with no init to compile: std 1/sqrt(fan-in) for
  matrices (tables and kernels), 0.5 for vectors. Large enough that every term matters."""
  rng = np.random.default_rng(seed)
  std = lambda s: s.shape[0] ** -0.5 if len(s.shape) >= 2 else 0.5
  draw = lambda s: jnp.asarray(std(s) * rng.normal(size=s.shape), jnp.float32)
  return jax.tree_util.tree_map(draw, jax.eval_shape(module.init, jax.random.PRNGKey(0), *args))


def _mask(valid, causal):
  mask = padding_mask(valid)
  return mask & causal_mask(valid.shape[1]) if causal else mask


# ---------------------------------------------------------------------------------------------
# Per-pair references


def _sinusoid(t, width):
  """R_t: channel 2m is sin(t / 10000^(2m/D)), channel 2m+1 its cos."""
  out = np.zeros(width)
  for m in range(width // 2):
    out[2 * m] = math.sin(t / 10000 ** (2 * m / width))
    out[2 * m + 1] = math.cos(t / 10000 ** (2 * m / width))
  return out


def _reference_layer(name, params, x, valid, cfg):
  """The attention layer written as loops: projections, s_ij per pair, softmax, output."""
  p = jax.tree_util.tree_map(np.asarray, params["params"])
  rel = p.get("relative_position", {})
  proj = lambda w: np.einsum("bnw,whd->bnhd", x, w["kernel"]) + w["bias"]
  q, k, v = proj(p["query"]), proj(p["key"]), proj(p["value"])
  b, n, h, d = q.shape
  K = cfg.relative_clip
  clip = lambda t: min(max(t, -K), K) + K  # row of a 2K+1 table
  out = np.zeros((b, n, h, d))
  for bi in range(b):
    for hi in range(h):
      for i in range(n):
        qi = q[bi, i, hi]
        s, extra = np.full(n, -np.inf), np.zeros((n, d))
        for j in range(n):
          if not valid[bi, j] or (cfg.causal and j > i):
            continue
          kj = k[bi, j, hi]
          if name == "shaw":  # q_i.(k_j + r^K_{clip(j-i)}) / sqrt(d); value v_j + r^V
            s[j] = qi @ (kj + rel["key"][clip(j - i)]) / math.sqrt(d)
            extra[j] = rel["value"][clip(j - i)]
          elif name == "xl":  # q.k + q.W_R R_{i-j} + u.k + v.W_R R_{i-j}
            wr = np.einsum("w,whd->hd", _sinusoid(i - j, cfg.width), rel["w_r"]["kernel"])[hi]
            s[j] = (qi @ kj + qi @ wr + rel["u"][hi] @ kj + rel["v"][hi] @ wr) / math.sqrt(d)
          elif name == "t5":  # q.k/sqrt(d) + table[bucket(j - i)]; |j - i| < 8: exact
            off = j - i
            bucket = max(-off, 0) if cfg.causal else abs(off) + (16 if off > 0 else 0)
            s[j] = qi @ kj / math.sqrt(d) + rel["bias"][bucket, hi]
          elif name == "deberta":  # (q.k + q.K^r_{i-j} + k.Q^r_{i-j}) / sqrt(3d)
            c2p = qi @ rel["position_key"][clip(i - j), hi]
            p2c = kj @ rel["position_query"][clip(i - j), hi]
            s[j] = (qi @ kj + c2p + p2c) / math.sqrt(3 * d)
          elif name == "alibi":  # q.k/sqrt(d) - m_h |i - j|, m_h = 2^(-8h/H)
            s[j] = qi @ kj / math.sqrt(d) - 2.0 ** (-8 * (hi + 1) / h) * abs(i - j)
        a = np.exp(s - s.max())
        a /= a.sum()
        out[bi, i, hi] = a @ (v[bi, :, hi] + extra)
  return np.einsum("bnhd,hdw->bnw", out, p["out"]["kernel"]) + p["out"]["bias"]


@pytest.mark.parametrize("name", NEW)
def test_layer_matches_per_pair_formula(name):
  n = 7  # > relative_clip, so clipping is exercised
  x = jax.random.normal(jax.random.PRNGKey(0), (2, n, 16))
  valid = np.ones((2, n), bool)
  valid[1, 5:] = False  # padded keys must drop out of the sums
  for causal in (False, True):
    cfg = _cfg(position=name, causal=causal)
    mask = _mask(jnp.asarray(valid), causal)
    layer = MultiHeadAttention(cfg)
    params = _params(layer, x, mask, jnp.arange(n))
    got = jax.jit(layer.apply)(params, x, mask, jnp.arange(n))
    want = _reference_layer(name, params, np.asarray(x, np.float64), valid, cfg)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_alibi_slopes():
  np.testing.assert_allclose(alibi_slopes(8), [2.0 ** -k for k in range(1, 9)], rtol=0)


def _published_slopes(heads):
  """The ALiBi reference rule (as in its code and BLOOM), in float64: a geometric sequence
  from start = 2^(-2^-(log2(H) - 3)) with ratio start for a power of two; otherwise the slopes
  of the nearest lower power of two n, then every other slope of 2n heads."""
  def power_of_two(n):
    start = 2.0 ** (-2.0 ** -(math.log2(n) - 3))
    return [start * start ** i for i in range(n)]
  if math.log2(heads).is_integer():
    return power_of_two(heads)
  n = 2 ** math.floor(math.log2(heads))
  return power_of_two(n) + _published_slopes(2 * n)[0::2][:heads - n]


@pytest.mark.parametrize("heads", [1, 2, 3, 5, 6, 7, 8, 12, 16, 20, 24, 32])
def test_alibi_reference_slopes(heads):
  np.testing.assert_allclose(alibi_slopes(heads), _published_slopes(heads), rtol=1e-6)
  # and the option that keeps the closed form 2^(-8h/H) for every head count
  np.testing.assert_allclose(alibi_slopes(heads, "closed_form"),
                             [2.0 ** (-8 * h / heads) for h in range(1, heads + 1)], rtol=1e-6)


def test_alibi_reference_slopes_written_out():
  # 12 heads: the 8 slopes of 8 heads, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (from 16 heads)
  want12 = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -k for k in (0.5, 1.5, 2.5, 3.5)]
  np.testing.assert_allclose(alibi_slopes(12), want12, rtol=1e-6)
  # 6 heads: the 4 slopes of 4 heads (1/4 ... 1/256), then 1/2 and 1/8 (from 8 heads)
  np.testing.assert_allclose(alibi_slopes(6), [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8],
                             rtol=1e-6)
  # the largest difference between the two rules at 12 heads (the 0.69)
  gap = np.max(np.abs(np.asarray(alibi_slopes(12)) - np.asarray(alibi_slopes(12, "closed_form"))))
  assert gap == pytest.approx(0.69, abs=0.01)
  # a power of two: both rules are the same numbers, bit for bit
  np.testing.assert_array_equal(alibi_slopes(8), alibi_slopes(8, "closed_form"))


def test_alibi_layer_uses_the_configured_slopes():
  pos = jnp.arange(5)
  for rule in ("reference", "closed_form"):
    cfg = _cfg(position="alibi", width=24, num_heads=12, alibi_slopes=rule)
    bias = POSITIONS["alibi"].relative(cfg).apply({}, pos, pos).bias  # [1, H, q, k]
    # one step to the right costs exactly one slope per head
    np.testing.assert_allclose(-bias[0, :, 0, 1], alibi_slopes(12, rule), rtol=0)


# ---------------------------------------------------------------------------------------------
# Logits depend on i - j only


def _toeplitz(a):
  """True if a[..., i, j] depends on i - j only."""
  a = np.asarray(a)
  return all(np.allclose(np.diagonal(a, off, -2, -1), np.diagonal(a, off, -2, -1)[..., :1])
             for off in range(-a.shape[-2] + 1, a.shape[-1]))


def test_bias_encodings_depend_on_offset_only():
  pos = jnp.arange(40)
  t5 = T5Bias(num_heads=4)
  t5_params = _params(t5, pos, pos)
  for causal in (False, True):
    for module, params in [(Alibi(num_heads=4), {}), (t5, t5_params)]:
      bias = jax.jit(lambda p, pos, m=module, c=causal: m.apply(p, pos, pos, c).bias)
      assert _toeplitz(bias(params, pos))
      np.testing.assert_array_equal(bias(params, pos + 1000), bias(params, pos))
  assert not _toeplitz(np.random.default_rng(0).normal(size=(3, 3)))  # the check can fail


def test_shaw_logits_depend_on_offset_only():
  # the same q, k vectors at positions shifted by 100: identical content logits
  module = Shaw(clip=3, head_dim=8)
  pos = jnp.arange(10)
  params = _params(module, pos, pos)
  logits = jax.jit(lambda p, pos, q, k: module.apply(p, pos, pos).content_logits(q, k))
  q, k = jax.random.normal(jax.random.PRNGKey(1), (2, 1, 10, 2, 8))
  np.testing.assert_array_equal(logits(params, pos, q, k), logits(params, pos + 100, q, k))
  # with every q_i equal, the term is a function of j - i alone
  assert _toeplitz(logits(params, pos, jnp.broadcast_to(q[:, :1], q.shape), k))


# ---------------------------------------------------------------------------------------------
# RoPE extrapolation options


def _pair_angle(y, t):
  return np.arctan2(float(y[2 * t + 1]), float(y[2 * t]))


def test_rope_pi_is_rope_at_divided_positions():
  d, factor = 16, 4.0
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 2, d))
  pos = jnp.arange(9) * 5
  pi = scaled_rope(x, pos, base=10000.0, layout="interleaved", scaling="pi", factor=factor)
  np.testing.assert_allclose(pi, apply_rope(x, pos / factor), rtol=1e-6, atol=1e-6)
  # and the angle of pair t at position m is (m / factor) * base^(-2t/d)
  e = jnp.zeros((1, 1, 1, d)).at[..., 2].set(1.0)  # unit vector on pair t = 1
  y = scaled_rope(e, jnp.array([6]), base=10000.0, layout="interleaved", scaling="pi",
                  factor=factor)[0, 0, 0]
  np.testing.assert_allclose(_pair_angle(y, 1), 6 / factor * 10000 ** (-2 / d), rtol=1e-5)


def test_rope_ntk_base():
  d, factor, base = 16, 8.0, 10000.0
  assert ntk_base(base, factor, d) == pytest.approx(base * factor ** (d / (d - 2)), rel=1e-12)
  m, slow = 3, d // 2 - 1
  e = jnp.zeros((1, 1, 1, d)).at[..., 2 * slow].set(1.0)
  y = scaled_rope(e, jnp.array([m]), base=base, layout="interleaved", scaling="ntk",
                  factor=factor)[0, 0, 0]
  # the slowest pair is interpolated by exactly `factor`; the fastest (t = 0) is unchanged
  np.testing.assert_allclose(_pair_angle(y, slow), m * base ** (-2 * slow / d) / factor,
                             rtol=1e-5)
  e0 = jnp.zeros((1, 1, 1, d)).at[..., 0].set(1.0)
  y0 = scaled_rope(e0, jnp.array([m]), base=base, layout="interleaved", scaling="ntk",
                   factor=factor)[0, 0, 0]
  np.testing.assert_allclose(_pair_angle(y0, 0), m, rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
def test_rerope_window(causal):
  n, w, d = 12, 4, 8
  q, k = jax.random.normal(jax.random.PRNGKey(0), (2, 1, n, 1, d))
  pos = jnp.arange(n)
  got = np.asarray(rerope_logits(q, k, pos, pos, window=w, base=10000.0, layout="interleaved",
                                 causal=causal))[0, 0]
  plain = np.einsum("qd,kd->qk", apply_rope(q, pos)[0, :, 0], apply_rope(k, pos)[0, :, 0])
  # every query rotated to +w and to -w, keys unrotated: relative position i - j = +-w
  q_left, q_right = (np.asarray(apply_rope(q, jnp.full((n,), r)))[0, :, 0] for r in (w, -w))
  k = np.asarray(k)[0, :, 0]
  for i in range(n):
    for j in range(n):
      if causal and j > i:
        continue
      if abs(i - j) < w:
        want = plain[i, j]  # exact RoPE inside the window
      else:  # relative position clamped to +-w
        want = (q_left[i] if i > j else q_right[i]) @ k[j]
      np.testing.assert_allclose(got[i, j], want, rtol=1e-5, atol=1e-5)


def test_rerope_with_a_wide_window_is_rope():
  # a window wider than the sequence changes nothing: the whole layer equals plain RoPE
  n = 10
  x = jax.random.normal(jax.random.PRNGKey(0), (2, n, 16))
  mask = padding_mask(jnp.ones((2, n), bool))
  plain = MultiHeadAttention(_cfg(position="rope"))
  params = _params(plain, x, mask, jnp.arange(n))
  wide = MultiHeadAttention(_cfg(position="rope", rope_scaling="rerope", rerope_window=n))
  narrow = MultiHeadAttention(_cfg(position="rope", rope_scaling="rerope", rerope_window=2))
  run = lambda layer: jax.jit(layer.apply)(params, x, mask, jnp.arange(n))
  want = run(plain)
  np.testing.assert_allclose(run(wide), want, atol=1e-5)
  assert not np.allclose(run(narrow), want, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Every new encoding in the model: jit, gradients, padding, masked rows, causal, long inputs


@pytest.mark.parametrize("position", NEW + ["rope:rerope"])
def test_encoding_in_a_layer(position):
  # on one attention layer, every call jitted (a tiny jit compiles faster than eager
  # op-by-op) and checks batched so that few shapes are compiled
  position, _, scaling = position.partition(":")
  kw = dict(position=position, rope_scaling=scaling or "none", rerope_window=4)
  layer, train_len = MultiHeadAttention(_cfg(**kw)), 8
  apply = jax.jit(layer.apply)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16 * train_len, 16))
  valid = jnp.ones((2, train_len), bool).at[1].set(False)  # second sequence: all padding
  mask, pos = _mask(valid, False), jnp.arange(train_len)
  xs = x[:, :train_len]
  params = _params(layer, xs, mask, pos)
  # fully masked rows finite, and so are the gradients through them
  loss = lambda p: (jnp.sum(layer.apply(p, xs, mask, pos) ** 2), layer.apply(p, xs, mask, pos))
  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert bool(jnp.isfinite(value)) and bool(jnp.all(jnp.isfinite(out)))
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  # 2x the training length: row 0 right-padded (real positions unchanged), row 1 all real
  n = 2 * train_len
  two = apply(params, x[:, :n], _mask(jnp.arange(n)[None] < jnp.array([[train_len], [n]]),
                                       False), jnp.arange(n))
  np.testing.assert_allclose(two[0, :train_len], out[0], rtol=2e-5, atol=2e-5)
  # 16x the training length
  n = 16 * train_len
  long = apply(params, x, _mask(jnp.ones((2, n), bool), False), jnp.arange(n))
  assert bool(jnp.all(jnp.isfinite(two))) and bool(jnp.all(jnp.isfinite(long)))
  # causal=True is checked against the per-pair formulas above (and for ReRoPE below)


def test_config_refuses_bad_position_fields():
  for bad, match in [(dict(rope_scaling="longrope"), "valid names"),
                     (dict(position="alibi", rope_scaling="pi"), "position=rope only"),
                     (dict(rope_scaling_factor=0.0), "positive"),
                     (dict(relative_clip=0), "relative_clip"),
                     (dict(t5_num_buckets=31), "t5_num_buckets"),
                     (dict(t5_max_distance=8), "t5_max_distance"),
                     (dict(rerope_window=0), "rerope_window")]:
    with pytest.raises(ConfigError, match=match):
      _cfg(**bad)


# ---------------------------------------------------------------------------------------------
# Scales


def test_logn_causal_per_query():
  n0, n, d = 4, 12, 16
  n_keys = num_valid_keys(causal_mask(n))  # i + 1 for query i
  got = np.asarray(logn_causal(n_keys, d, n0=n0))[0, 0, :, 0]
  want = [max(1.0, math.log(i + 1) / math.log(n0)) / math.sqrt(d) for i in range(n)]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # up to n0 keys it is the standard scale exactly
  np.testing.assert_array_equal(got[:n0], np.asarray(standard(n_keys, d))[0, 0, :n0, 0])
  # with right padding, the real queries of a causal model still get i + 1
  mask = padding_mask(jnp.arange(n)[None] < 9) & causal_mask(n)
  np.testing.assert_allclose(np.asarray(logn_causal(num_valid_keys(mask), d, n0=n0))[0, 0, :9, 0],
                             want[:9], rtol=1e-6)


def test_logn_causal_layer_is_standard_below_n0():
  kw = dict(causal=True, logn_n0=16, position="rope")
  std = MultiHeadAttention(_cfg(scale="standard", **kw))
  lc = MultiHeadAttention(_cfg(scale="logn_causal", **kw))
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 16))
  mask = causal_mask(32)
  params = _params(std, x, mask, jnp.arange(32))
  a, b = (jax.jit(m.apply)(params, x, mask, jnp.arange(32)) for m in (std, lc))
  np.testing.assert_array_equal(a[:, :16], b[:, :16])  # queries with <= n0 keys: identical
  assert not np.allclose(a[:, 16:], b[:, 16:])  # past n0 the later queries are scaled up


def test_scale_none_is_unscaled_with_t5_query_init():
  width, heads = 256, 4
  d = width // heads
  cfg = _cfg(scale="none", width=width, num_heads=heads, position="none")
  layer = MultiHeadAttention(cfg)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 6, width))
  mask = padding_mask(jnp.ones((1, 6), bool))
  params = jax.jit(layer.init)(jax.random.PRNGKey(1), x, mask, jnp.arange(6))
  # W_q drawn with std 1/sqrt(width * d); W_k keeps the default 1/sqrt(width)
  assert np.std(params["params"]["query"]["kernel"]) == pytest.approx((width * d) ** -0.5,
                                                                      rel=0.03)
  assert np.std(params["params"]["key"]["kernel"]) == pytest.approx(width ** -0.5, rel=0.15)
  # lambda = 1: scale=none with W_q, b_q equals scale=standard with sqrt(d) W_q, sqrt(d) b_q
  std_layer = MultiHeadAttention(_cfg(scale="standard", width=width, num_heads=heads,
                                      position="none"))
  big_q = jax.tree_util.tree_map(lambda a: a * math.sqrt(d), params["params"]["query"])
  std_params = {"params": {**params["params"], "query": big_q}}
  np.testing.assert_allclose(jax.jit(layer.apply)(params, x, mask, jnp.arange(6)),
                             jax.jit(std_layer.apply)(std_params, x, mask, jnp.arange(6)),
                             rtol=1e-5, atol=1e-5)
