"""Entropy normalisation (model/scales/entropy_norm.py): p^g / sum p^g with the target entropy,
checked in numpy (float64) from the definitions; scale=entropy_norm in an attention layer, and
the kernels that refuse it."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention import ATTENTIONS
from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig
from model.masks import padding_mask
from model.scales.entropy_norm import (entropy_normalize, normalize_logits, power_for_entropy)
from utils.errors import ConfigError


def entropy(p):
  p = np.asarray(p, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


N = 64  # every case padded to 64 entries (zeros: masked), so one program serves them all


def _cases():
  """Rows of n = 2 ... 64: Dirichlet draws at three concentrations, a peaked row, a nearly
  flat one, a row with two maxima; targets at 5%, 50% and 95% of log n."""
  rng = np.random.default_rng(0)
  rows = []
  for n in (2, 7, 64):
    for alpha in (0.1, 1.0, 10.0):
      rows.append(rng.dirichlet(np.full(n, alpha)))
    rows.append(np.r_[0.999, np.full(n - 1, 0.001 / (n - 1))])  # peaked
    rows.append(np.full(n, 1.0 / n) * (1 + 1e-2 * rng.standard_normal(n)))  # nearly flat
    rows.append(np.r_[0.3, 0.3, np.full(n - 2, 0.4 / (n - 2))] if n > 2 else np.r_[0.4, 0.6])
  return [(p / p.sum(), share * np.log(len(p))) for p in rows for share in (0.05, 0.5, 0.95)]


normalize = jax.jit(entropy_normalize)


def _padded(rows):
  return jnp.asarray(np.stack([np.r_[p, np.zeros(N - len(p))] for p in rows]), jnp.float32)


@pytest.fixture(scope="module")
def normalized():
  """(p, target, normalised p) of every case, in one call."""
  cases = _cases()
  q = np.asarray(normalize(_padded([p for p, _ in cases]),
                           jnp.asarray([[t] for _, t in cases], jnp.float32)), np.float64)
  return [(p, t, r[:len(p)]) for (p, t), r in zip(cases, q)]


def test_entropy_is_the_target(normalized):
  assert len(normalized) == 3 * 6 * 3
  for p, target, q in normalized:
    assert np.isclose(q.sum(), 1.0, atol=1e-5)
    if len(p) > 2 and p[0] == p[1] == p.max() and target < np.log(2):
      # two maxima: no power goes below log 2 (the limit is the uniform pair)
      assert abs(entropy(q) - np.log(2)) < 1e-4
    else:
      assert abs(entropy(q) - target) < 1e-4, (len(p), target, entropy(q))


def test_it_is_a_power_of_the_distribution_and_keeps_its_order(normalized):
  for p, _, q in normalized:
    keep = q > 1e-30  # entries that survived float32 (a power of 1e-6 can underflow)
    if len(np.unique(p[keep])) > 2:  # a line through two points says nothing
      # log q = g log p - log Z: a straight line through the points (log p, log q)
      g, intercept = np.polyfit(np.log(p[keep]), np.log(q[keep]), 1)
      assert g > 0
      np.testing.assert_allclose(np.log(q[keep]), g * np.log(p[keep]) + intercept,
                                 atol=1e-3 * max(1.0, g))
    # never reversed; strict where both entries survived
    order, after = np.sign(p[:, None] - p[None, :]), np.sign(q[:, None] - q[None, :])
    assert np.all(order * after >= 0)
    both = keep[:, None] & keep[None, :] & (order != 0)
    assert np.array_equal(order[both], after[both])


def test_power_one_when_the_entropy_is_already_the_target():
  p = np.random.default_rng(1).dirichlet(np.ones(N), size=3)
  log_p = jnp.log(jnp.asarray(p, jnp.float32))
  log_g = jax.jit(power_for_entropy)(log_p, jnp.ones_like(log_p, bool), entropy(p)[:, None])
  np.testing.assert_allclose(np.asarray(log_g), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(normalize(_padded(p), entropy(p)[:, None])), p,
                             atol=1e-6)


def test_masked_keys_get_nothing_and_change_nothing():
  z = np.random.default_rng(2).standard_normal(9).astype(np.float32)
  rows = np.stack([z, z, z])
  rows[1, 6:] = 50.0  # large logits on masked keys must not count
  mask = np.stack([np.arange(9) < 6] * 2 + [np.zeros(9, bool)])  # the last row: no valid key
  log_g = np.asarray(jax.jit(power_for_entropy)(jnp.asarray(rows), jnp.asarray(mask),
                                                jnp.float32(0.6 * np.log(6))))
  assert log_g[0] == log_g[1] and np.isfinite(log_g[2])
  kept = np.exp(np.exp(log_g[0]) * z[:6])
  assert abs(entropy(kept / kept.sum()) - 0.6 * np.log(6)) < 1e-4  # over the valid keys only
  # the same row without the masked keys
  alone = np.asarray(normalize(jnp.asarray(np.r_[np.exp(z[:6]), np.zeros(N - 6)][None]
                                           / np.exp(z[:6]).sum(), jnp.float32),
                               jnp.float32(0.6 * np.log(6))))[0, :6]
  np.testing.assert_allclose(alone, jax.nn.softmax(np.exp(log_g[0]) * z[:6]), atol=1e-6)


def test_gradient_is_finite_and_the_implicit_one():
  rng = np.random.default_rng(3)
  z = jnp.asarray(2.0 * rng.standard_normal((3, 10)), jnp.float32)
  mask = jnp.asarray(np.arange(10) < np.array([[10], [7], [4]]))
  target = jnp.asarray([[1.2], [0.9], [0.5]], jnp.float32)

  @jax.jit
  def grads(z):
    log_g = lambda z: jnp.sum(power_for_entropy(z, mask, target))

    def normalized_entropy(z):
      q = jax.nn.softmax(jnp.where(mask, jnp.exp(power_for_entropy(z, mask, target)) * z,
                                   -jnp.inf), axis=-1)
      return jnp.sum(-jnp.where(mask, q * jnp.log(jnp.where(mask, q, 1.0)), 0.0))
    return power_for_entropy(z, mask, target), jax.grad(log_g)(z), jax.grad(normalized_entropy)(z)

  log_g, d_log_g, d_entropy = (np.asarray(a, np.float64) for a in grads(z))
  assert np.all(np.isfinite(d_log_g)) and np.all(np.isfinite(d_entropy))
  # implicit function: H(g(z), z) = H*, so d log g / dz_j = -q_j (z_j - E_q z) / Var_q z with
  # q = softmax(g z) (docs/techniques.md section 1.1), written out in numpy
  zz, m = np.asarray(z, np.float64), np.asarray(mask)
  g = np.exp(log_g)
  q = np.where(m, np.exp(g * zz - np.max(np.where(m, g * zz, -np.inf), -1, keepdims=True)), 0)
  q /= q.sum(-1, keepdims=True)
  mean = np.sum(q * zz, -1, keepdims=True)
  var = np.sum(q * (zz - mean) ** 2, -1, keepdims=True)
  np.testing.assert_allclose(d_log_g, -q * (zz - mean) / var, atol=1e-4)
  assert np.all(d_log_g[~np.broadcast_to(m, d_log_g.shape)] == 0)
  # the entropy is held at the target whatever the logits do: its gradient vanishes
  np.testing.assert_allclose(d_entropy, 0.0, atol=1e-4)


# ----------------------------------------------------------------- the scale in a layer

def _cfg(**kw):
  base = dict(vocab_size=30, width=16, num_heads=2, num_layers=1, mlp_dim=32, dropout=0.0,
              position="rope", scale="entropy_norm", rope_original_length=6,
              entropy_norm_fraction=0.6)
  base.update(kw)
  return ModelConfig.from_dict(base)


def test_attention_rows_have_the_target_entropy():
  cfg = _cfg()
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, cfg.width))
  valid = jnp.asarray(np.arange(8)[None] < np.array([[8], [5]]))
  mask, pos = padding_mask(valid), jnp.arange(8)
  layer = MultiHeadAttention(cfg)
  plain = MultiHeadAttention(dataclasses.replace(cfg, scale="standard"))

  @jax.jit
  def entropies(key):
    params = layer.init(key, x, mask, pos)
    params = jax.tree_util.tree_map(lambda a: 3.0 * a, params)  # sharper than at init
    return [m.apply(params, x, mask, pos, mutable=["intermediates"])[1]["intermediates"]
            ["attention_entropy"][0] for m in (layer, plain)]

  (sums, rows), (plain_sums, _) = entropies(jax.random.PRNGKey(1))
  # every row of the first sequence (8 keys, past L0 = 6) at 0.6 log 6, of the second at
  # 0.6 log 5, for every query row (padded queries attend to the valid keys too); per head
  expected = 8 * 0.6 * np.log(6) + 8 * 0.6 * np.log(5)
  np.testing.assert_allclose(np.asarray(sums), expected, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(rows), 16)
  # the standard scale's rows have other entropies: the normalisation did the work
  assert np.all(np.abs(np.asarray(plain_sums) - expected) > 0.5)


def test_normalize_logits_reads_the_fields():
  logits = jax.random.normal(jax.random.PRNGKey(2), (1, 1, 1, 40))
  mask = jnp.ones((1, 1, 1, 40), bool)
  cases = ((0.3, 64, 40), (0.8, 10, 10))  # (fraction, L0, the n of the target)
  cfgs = [_cfg(entropy_norm_fraction=f, rope_original_length=length) for f, length, _ in cases]
  qs = jax.jit(lambda z: [jax.nn.softmax(normalize_logits(z, mask, c)) for c in cfgs])(logits)
  for (fraction, _, n), q in zip(cases, qs):
    assert abs(entropy(np.asarray(q, np.float64))[0, 0, 0] - fraction * np.log(n)) < 1e-4


def test_kernels_without_logits_refuse_it_in_one_line():
  refusing = [n for n, k in ATTENTIONS.items() if not k.transforms_logits]
  assert "softmax" not in refusing and {"linear", "performer", "nystrom"} <= set(refusing)
  for attention in refusing:
    position = "rope" if "rotate" in ATTENTIONS[attention].honours else "learned"
    with pytest.raises(ConfigError) as e:
      _cfg(attention=attention, position=position)
    assert str(e.value) == (f"attention={attention} cannot apply scale=entropy_norm: it forms "
                            "no [q, k] logits to normalise; use attention=softmax or another "
                            "scale")
  # the training length must be known (train.py and evaluate.py fill it in)
  layer = MultiHeadAttention(_cfg(rope_original_length=0))
  x = jnp.zeros((1, 4, 16))
  with pytest.raises(ConfigError, match="scale=entropy_norm needs the training length"):
    jax.eval_shape(layer.init, jax.random.PRNGKey(0), x,
                   padding_mask(jnp.ones((1, 4), bool)), jnp.arange(4))
