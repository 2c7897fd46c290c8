"""Efficient attention kernels against independent references (docs/techniques.md section 4).

linear: equals its quadratic formula written out in numpy; performer and nystrom: error to
exact softmax attention falls as features / landmarks grow; synthesizers: length-bound and
position-refusing. Then the properties every kernel must have inside the model.
"""
import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention import ATTENTIONS
from model.attention.base import AttentionInputs
from model.attention.layer import MultiHeadAttention
from model.attention.linear import linear_attention
from model.attention.nystrom import nystrom_attention
from model.attention.performer import orthogonal_features, performer_attention
from model.attention.softmax import softmax_attention
from model.config import ModelConfig
from model.encoder import MlmModel
from model.masks import causal_mask, padding_mask
from model.positions import POSITIONS, LengthBoundError
from model.positions.base import NO_TERMS, RelativeTerms
from model.positions.rope import apply_rope
from utils.errors import ConfigError

NEW = ["linear", "performer", "nystrom", "synthesizer_dense", "synthesizer_random",
       "synthesizer_factorized"]
SYNTHESIZERS = [a for a in NEW if a.startswith("synthesizer")]


def _inputs(valid, causal=False, rotate=None, scale=None):
  """AttentionInputs for self-attention over valid [b, n] with the standard scale."""
  b, n = valid.shape
  mask = padding_mask(jnp.asarray(valid))
  if causal:
    mask = mask & causal_mask(n)
  scale = jnp.full((b, 1, 1, 1), scale, jnp.float32)
  return AttentionInputs(mask=mask, scale=scale, terms=RelativeTerms(rotate=rotate),
                         q_pos=jnp.arange(n), k_pos=jnp.arange(n), causal=causal)


def _qkv(seed, b, n, h, d, std=1.0):
  rng = np.random.default_rng(seed)
  return [rng.normal(size=(b, n, h, d)).astype(np.float32) * s for s in (std, std, 1.0)]


def _exact(q, k, v, inputs):
  return np.asarray(softmax_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), inputs))


def _rel_error(got, want):
  return float(np.linalg.norm(np.asarray(got) - want) / np.linalg.norm(want))


# ---------------------------------------------------------------- linear: the quadratic formula

def _np_rotate(x, pos):
  """Interleaved RoPE written out: pair (x_2t, x_2t+1) turned by pos * 10000^(-2t/f)."""
  f = x.shape[-1]
  ang = pos[:, None] * 10000.0 ** (-np.arange(0, f, 2) / f)  # [n, f/2]
  c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]  # [n, 1, f/2]: broadcast over heads
  out = np.empty_like(x)
  out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
  out[..., 1::2] = x[..., 0::2] * s + x[..., 1::2] * c
  return out


def _np_linear(q, k, v, valid, causal, rope):
  """out_i = sum_j m_ij (R phi(q_i) . R phi(k_j)) v_j / sum_j m_ij phi(q_i) . phi(k_j)."""
  phi = lambda x: np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))
  b, n, h, _ = q.shape
  pq, pk = phi(q.astype(np.float64)), phi(k.astype(np.float64))
  out = np.zeros(v.shape)
  for bi in range(b):
    m = np.tile(valid[bi][None, :], (n, 1))
    if causal:
      m &= np.tri(n, dtype=bool)
    nq = _np_rotate(pq[bi], np.arange(n)) if rope else pq[bi]
    nk = _np_rotate(pk[bi], np.arange(n)) if rope else pk[bi]
    for hi in range(h):
      num = (nq[:, hi] @ nk[:, hi].T) * m
      den = ((pq[bi, :, hi] @ pk[bi, :, hi].T) * m).sum(-1, keepdims=True)
      out[bi, :, hi] = num @ v[bi, :, hi] / den
  return out


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_equals_quadratic_formula(causal, rope):
  # n = 150 spans three causal chunks of 64 (the last one padded): the chunked prefix sums
  # must agree with the plain quadratic sum at every boundary
  b, n, h, d = 2, 150, 2, 8
  q, k, v = _qkv(0, b, n, h, d)
  valid = np.ones((b, n), bool)
  valid[1, 97:] = False  # second sequence padded
  rotate = functools.partial(apply_rope, layout="interleaved") if rope else None
  got = linear_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                         _inputs(valid, causal, rotate, scale=0.3))
  want = _np_linear(q, k, v, valid, causal, rope)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


# ------------------------------------------------------------ performer: error falls with m

def test_orthogonal_features_blocks():
  w = np.asarray(jax.jit(orthogonal_features, static_argnums=(1, 2))(jax.random.PRNGKey(0), 40,
                                                                      16))
  assert w.shape == (40, 16)
  for block in (w[:16], w[16:32], w[32:]):  # rows inside a block are orthogonal
    gram = block @ block.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-3)
  # chi(d) norms: mean squared norm d (a loose check on 40 rows)
  assert 8 < np.mean(np.sum(w * w, axis=1)) < 24


def test_performer_error_falls_with_features():
  b, n, h, d = 1, 64, 2, 16
  valid = np.ones((b, n), bool)
  inputs = _inputs(valid, scale=1 / math.sqrt(d))
  features = [16, 64, 256, 1024]
  errors = np.zeros(len(features))
  seeds = 4
  estimate = jax.jit(lambda q, k, v, key, m: performer_attention(
      q, k, v, inputs, orthogonal_features(key, m, d)), static_argnums=4)
  for s in range(seeds):
    # q, k entries of std 0.5 (logits of std 0.5): the variance of positive random features
    # grows like exp(|q + k|^2 / sqrt(d)), so much larger logits need far more features
    q, k, v = _qkv(s, b, n, h, d, std=0.5)
    exact = _exact(q, k, v, inputs)
    for i, m in enumerate(features):
      got = estimate(q, k, v, jax.random.PRNGKey(100 + s), m)
      errors[i] += _rel_error(got, exact) / seeds
  # Monte Carlo error ~ 1/sqrt(m): each 4x more features should roughly halve it
  # (measured: about 0.42, 0.30, 0.15, 0.08)
  assert np.all(errors[1:] < errors[:-1] * 1.05), errors
  assert errors[-1] < errors[0] / 3, errors


# ------------------------------------------------------------- nystrom: error falls as m -> n

def _smooth_qkv(seed, n, h, d):
  """Inputs that vary smoothly along the sequence plus noise: attention of low numerical rank,
  which is what landmarks can capture (segment means of i.i.d. noise carry no information)."""
  rng = np.random.default_rng(seed)
  t = np.arange(n)[:, None] / n
  basis = np.concatenate([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t),
                          np.sin(4 * np.pi * t), np.cos(4 * np.pi * t)], axis=1)
  out = []
  for _ in range(3):
    x = (basis @ rng.normal(size=(4, h * d))).reshape(n, h, d)
    out.append((x + 0.1 * rng.normal(size=(n, h, d)))[None].astype(np.float32))
  return out


@functools.partial(jax.jit, static_argnums=4)
def _nystrom_jit(q, k, v, mask, m, iterations):  # iterations traced: one compile per m
  n = q.shape[1]
  inputs = AttentionInputs(mask=mask, scale=jnp.full((1, 1, 1, 1), q.shape[-1] ** -0.5),
                           terms=NO_TERMS, q_pos=jnp.arange(n), k_pos=jnp.arange(n))
  cfg = types.SimpleNamespace(nystrom_landmarks=m, nystrom_iterations=iterations)
  return nystrom_attention(q, k, v, inputs, cfg)


def _nystrom(q, k, v, inputs, m, iterations=6):
  """Nystrom attention with the standard scale (what `inputs` of these tests carry)."""
  return _nystrom_jit(q, k, v, inputs.mask, m, iterations)


def test_nystrom_error_falls_with_landmarks():
  n, h, d = 64, 2, 16
  q, k, v = _smooth_qkv(0, n, h, d)
  inputs = _inputs(np.ones((1, n), bool), scale=1 / math.sqrt(d))
  exact = _exact(q, k, v, inputs)
  errors = [_rel_error(_nystrom(q, k, v, inputs, m), exact) for m in (4, 8, 16, 32, 64)]
  assert all(b < a for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < errors[0] / 50, errors
  # at m = n every landmark is one token: exact once the iterative inverse has converged
  # (the default 6 iterations are a deliberately truncated inverse)
  assert _rel_error(_nystrom(q, k, v, inputs, n, iterations=12), exact) < 1e-3


def test_nystrom_lengths_not_divisible_and_padding():
  n, h, d = 50, 2, 16
  q, k, v = _smooth_qkv(1, n, h, d)
  inputs = _inputs(np.ones((1, n), bool), scale=1 / math.sqrt(d))
  exact = _exact(q, k, v, inputs)
  for m in (7, 16):  # 50 = 7*7 + 1 = 16*3 + 2: segments of unequal sizes
    assert _rel_error(_nystrom(q, k, v, inputs, m), exact) < 0.1
  assert _rel_error(_nystrom(q, k, v, inputs, n, iterations=12), exact) < 1e-3
  # padding 50 -> 64 leaves the segments, hence the outputs at real tokens, unchanged
  pad = lambda x: np.concatenate([x, np.ones((1, 14, h, d), np.float32)], axis=1)
  valid = np.arange(64)[None] < n
  padded = _nystrom(pad(q), pad(k), pad(v), _inputs(valid, scale=1 / math.sqrt(d)), 7)
  np.testing.assert_allclose(padded[:, :n], _nystrom(q, k, v, inputs, 7), atol=1e-5)
  # fewer valid tokens than landmarks: empty landmarks are masked out, result exact again
  short = _inputs(np.arange(n)[None] < 5, scale=1 / math.sqrt(d))
  np.testing.assert_allclose(_nystrom(q, k, v, short, 16, iterations=12)[:, :5],
                             _exact(q, k, v, short)[:, :5], atol=1e-3)


# ----------------------------------------------------------- registry: what each kernel refuses

def _cfg(**kw):
  base = dict(vocab_size=50, width=16, num_heads=2, num_layers=1, mlp_dim=32, dropout=0.0,
              max_len=32, performer_features=16, nystrom_landmarks=4, synthesizer_rank=4)
  base.update(kw)
  return ModelConfig.from_dict(base)


def test_position_terms_refused_at_config_time():
  # Only softmax forms the [q, k] logits, so only it can add content terms, biases or value
  # terms; linear, performer and nystrom rotate; synthesizers ignore q.k entirely.
  default = _cfg()
  relative = {name: p.terms(default) for name, p in POSITIONS.items() if p.relative}
  for attention in ["softmax"] + NEW:
    supports = ATTENTIONS[attention].honours
    for position, terms in relative.items():
      ok = terms <= supports
      assert ok == (attention == "softmax" or (terms == {"rotate"} and
                                               attention in ("linear", "performer", "nystrom")))
      if ok:
        _cfg(attention=attention, position=position)
      else:
        with pytest.raises(ConfigError, match=f"cannot apply position={position}"):
          _cfg(attention=attention, position=position)
  for attention in ("linear", "performer", "nystrom"):  # ReRoPE needs the [q, k] logits
    with pytest.raises(ConfigError, match="rope_scaling=rerope"):
      _cfg(attention=attention, position="rope", rope_scaling="rerope")
  for attention in SYNTHESIZERS:  # absolute encodings contribute no terms: accepted
    for position in ("none", "learned", "sinusoidal"):
      _cfg(attention=attention, position=position)


def test_masks_refused_at_config_time():
  with pytest.raises(ConfigError, match="cannot apply a causal mask"):
    _cfg(attention="nystrom", causal=True)
  for attention in ("linear", "performer", "nystrom"):
    with pytest.raises(ConfigError, match="cannot apply a window mask"):
      _cfg(attention=attention, window=4)
  with pytest.raises(ConfigError, match="valid names"):
    _cfg(attention="lineer")
  with pytest.raises(ConfigError, match="performer_features"):
    _cfg(attention="performer", performer_features=0)


@pytest.mark.parametrize("attention", SYNTHESIZERS)
def test_synthesizer_length_bound(attention):
  cfg = _cfg(attention=attention, position="none")
  assert cfg.max_length() == 32
  model = MlmModel(cfg)
  # shapes only (nothing compiled): the error is raised while tracing
  seq = lambda n: (jax.ShapeDtypeStruct((1, n), jnp.int32), jax.ShapeDtypeStruct((1, n), bool))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), *seq(16))
  jax.eval_shape(model.apply, params, *seq(32))  # up to max_len
  with pytest.raises(LengthBoundError, match=f"attention={attention} .* at most "
                     "model.max_len=32 positions .* length 33"):
    jax.eval_shape(model.apply, params, *seq(33))


# ------------------------------------------------- properties of every kernel inside the layer

TRAIN_LEN = 16


def _layer_cfg(attention, causal=False):
  position = "none" if attention.startswith("synthesizer") else "rope"
  return _cfg(attention=attention, position=position, causal=causal)


@pytest.mark.parametrize("attention", NEW)
def test_kernel_in_layer(attention):
  """jit, finite gradients, padding invariance, fully masked rows, causal, 2x and 16x length.

  One attention layer (projections, position terms, scale, kernel) in one jitted function
  per kernel: compiling dominates at these sizes.
  """
  layer = MultiHeadAttention(_layer_cfg(attention))
  bidirectional = attention == "nystrom"
  causal_layer = layer if bidirectional else MultiHeadAttention(_layer_cfg(attention, True))
  if bidirectional:
    with pytest.raises(ConfigError, match="cannot apply a causal mask"):
      _layer_cfg(attention, causal=True)
  width = layer.cfg.width
  # rows: a full sequence, one padded after 11 tokens, one that is all padding
  valid = jnp.arange(TRAIN_LEN)[None, :] < jnp.array([[TRAIN_LEN], [11], [0]])
  x = jax.random.normal(jax.random.PRNGKey(0), (3, TRAIN_LEN, width))
  # 2x the training length: the same rows padded further (row 2 a full sequence instead)
  n2, n16 = 2 * TRAIN_LEN, 16 * TRAIN_LEN
  x2 = jnp.pad(x, ((0, 0), (0, n2 - TRAIN_LEN), (0, 0)))
  x2 = x2.at[2].set(jax.random.normal(jax.random.PRNGKey(2), (n2, width)))
  valid2 = (jnp.arange(n2)[None, :] < jnp.array([[TRAIN_LEN], [11], [n2]]))
  x16 = jax.random.normal(jax.random.PRNGKey(3), (1, n16, width))
  length_bound = attention.startswith("synthesizer")  # max_len = 32: 16x is refused
  attend = lambda lay, p, x, valid, causal=False: lay.apply(
      p, x, padding_mask(valid) & (causal_mask(x.shape[1]) if causal else True),
      jnp.arange(x.shape[1]))

  @jax.jit
  def run(key):
    params = layer.init(key, x, padding_mask(valid), jnp.arange(TRAIN_LEN))
    loss = lambda p: (jnp.sum(attend(layer, p, x, valid) ** 2), attend(layer, p, x, valid))
    grads, out = jax.grad(loss, has_aux=True)(params)
    res = dict(grads=grads, out=out, out2=attend(layer, params, x2, valid2),
               causal=attend(causal_layer, params, x, valid, True),
               changed=attend(causal_layer, params, x.at[:, 10].add(1.0), valid, True))
    if not length_bound:
      res["out16"] = attend(layer, params, x16, jnp.ones((1, n16), bool))
    return params, res

  params, res = run(jax.random.PRNGKey(1))
  finite = lambda t: all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree_util.tree_leaves(t))
  # outputs and gradients finite, including the fully masked (all padding) row
  assert finite(res)
  # padding: outputs at real tokens unchanged by more padding
  out, out2 = res["out"], res["out2"]
  np.testing.assert_allclose(out2[0, :TRAIN_LEN], out[0], rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(out2[1, :11], out[1, :11], rtol=1e-4, atol=1e-5)
  # causal: changing token 10 leaves the outputs before it alone, changes those after
  if not bidirectional:
    np.testing.assert_allclose(res["changed"][:2, :10], res["causal"][:2, :10], rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(res["changed"][0, 10:], res["causal"][0, 10:])
  if length_bound:
    with pytest.raises(LengthBoundError, match="max_len"):
      jax.eval_shape(lambda p: attend(layer, p, x16, jnp.ones((1, n16), bool)), params)


def test_performer_fixed_per_layer_or_redrawn():
  n = 12
  x = jax.random.normal(jax.random.PRNGKey(0), (1, n, 16))
  mask, positions = padding_mask(jnp.ones((1, n), bool)), jnp.arange(n)
  fixed = MultiHeadAttention(_cfg(attention="performer"))
  redraw = MultiHeadAttention(_cfg(attention="performer", performer_redraw=True))

  @jax.jit
  def run(key):
    params = fixed.init(key, x, mask, positions)
    # a training step (a dropout rng is present) draws new features from its key
    step = lambda k: redraw.apply(params, x, mask, positions, rngs={"dropout": k})
    return (params, fixed.apply(params, x, mask, positions),
            redraw.apply(params, x, mask, positions), step(jax.random.PRNGKey(2)),
            step(jax.random.PRNGKey(3)))

  params, fixed_out, redraw_eval, step2, step3 = run(jax.random.PRNGKey(1))
  # the random matrix is not a parameter: nothing for the optimizer to train or decay
  assert set(params["params"]) == {"query", "key", "value", "out"}
  assert not np.allclose(step2, step3)
  # evaluation (no rng) uses the fixed W, as the non-redrawing layer does
  np.testing.assert_allclose(redraw_eval, fixed_out, atol=1e-6)
