"""Masks (docs/techniques.md section 2): UniLM, sliding window, GlobalPointer spans, and the wiring
of the window and UniLM masks into the encoder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.encoder import Encoder
from model.masks import causal_mask, padding_mask, span_mask, unilm_mask, window_mask
from utils.errors import ConfigError


def test_unilm_mask_explicit_example():
  # segment A = 3 tokens, segment B = 2 tokens: c = cumsum(s) = [0, 0, 0, 1, 2]
  s = jnp.array([[0, 0, 0, 1, 1]])
  want = np.array([
      [1, 1, 1, 0, 0],  # A sees all of A, nothing of B
      [1, 1, 1, 0, 0],
      [1, 1, 1, 0, 0],
      [1, 1, 1, 1, 0],  # B sees A and its own past
      [1, 1, 1, 1, 1],
  ], bool)
  got = unilm_mask(s)
  assert got.shape == (1, 1, 5, 5)
  np.testing.assert_array_equal(got[0, 0], want)


def test_unilm_mask_rule():
  rng = np.random.default_rng(0)
  a_len = rng.integers(1, 9, size=4)
  s = (np.arange(10)[None, :] >= a_len[:, None]).astype(np.int32)  # A then B, per row
  got = np.asarray(unilm_mask(jnp.asarray(s)))
  for b in range(4):
    c = np.cumsum(s[b])
    for i in range(10):
      for j in range(10):
        assert got[b, 0, i, j] == (c[j] <= c[i])
        # the same rule in words: j in A, or j in B and not after i with i in B
        in_a = lambda t: t < a_len[b]
        assert got[b, 0, i, j] == (in_a(j) or (not in_a(i) and j <= i))


@pytest.mark.parametrize("causal", [False, True])
def test_window_mask_matches_loop(causal):
  for n, w in [(7, 1), (7, 3), (12, 4), (5, 9)]:
    want = np.zeros((n, n), bool)
    for i in range(n):
      for j in range(n):
        want[i, j] = (i - w < j <= i) if causal else abs(i - j) < w
    got = window_mask(n, w, causal)
    assert got.shape == (1, 1, n, n)
    np.testing.assert_array_equal(got[0, 0], want)


def test_span_mask_matches_loop():
  valid = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], bool)
  got = np.asarray(span_mask(jnp.asarray(valid)))
  for b in range(2):
    for i in range(6):
      for j in range(6):
        assert got[b, 0, i, j] == (i <= j and valid[b, i] and valid[b, j])


def _cfg(**kw):
  base = dict(vocab_size=30, width=16, num_heads=2, num_layers=1, mlp_dim=32, dropout=0.0)
  base.update(kw)
  return ModelConfig.from_dict(base)


def test_encoder_builds_window_and_unilm_masks():
  n = 10
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, n), 1, 30)
  valid = jnp.arange(n)[None, :] < jnp.array([[n], [8]])
  seg = (jnp.arange(n)[None, :] >= 4).astype(jnp.int32)
  windowed, plain = Encoder(_cfg(window=3, causal=True)), Encoder(_cfg())

  @jax.jit
  def run(key):
    params = plain.init(key, tokens, valid)
    explicit = padding_mask(valid) & causal_mask(n) & window_mask(n, 3, causal=True)
    return (windowed.apply(params, tokens, valid),
            plain.apply(params, tokens, valid, mask=explicit),
            plain.apply(params, tokens, valid, segment_ids=seg),
            plain.apply(params, tokens, valid, mask=padding_mask(valid) & unilm_mask(seg)))

  a, b, c, d = run(jax.random.PRNGKey(1))
  np.testing.assert_allclose(a, b, atol=1e-6)
  np.testing.assert_allclose(c, d, atol=1e-6)
  # an O(n) kernel cannot apply an arbitrary [q, k] mask: UniLM segments are refused
  linear = Encoder(_cfg(attention="linear"))
  with pytest.raises(ConfigError, match="cannot apply an arbitrary"):
    jax.eval_shape(lambda: linear.init(jax.random.PRNGKey(0), tokens, valid, segment_ids=seg))
