"""RoPE: relative property, identity at 0, norm preservation, the two pair layouts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.positions.rope import apply_rope


def _rot(x, pos, layout):
  # apply_rope works on [..., n, h, d]; a single vector at one position
  return apply_rope(x[None, None, :], jnp.array([pos]), layout=layout)[0, 0]


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_relative_property(layout):
  rng = np.random.default_rng(0)
  for _ in range(20):
    q, k = rng.normal(size=(2, 64)).astype(np.float32)
    m, n = rng.integers(0, 5000, size=2)
    norm = np.linalg.norm(q) * np.linalg.norm(k)  # errors relative to the logit's scale
    lhs = float(jnp.dot(_rot(q, m, layout), _rot(k, n, layout)))
    rhs = float(jnp.dot(q, _rot(k, n - m, layout)))  # q . R_{n-m} k
    assert abs(lhs - rhs) / norm < 1e-5
    # and shifting both positions leaves the logit unchanged
    shifted = float(jnp.dot(_rot(q, m + 17, layout), _rot(k, n + 17, layout)))
    assert abs(lhs - shifted) / norm < 1e-5


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_identity_at_zero_and_norm(layout):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 3, 16))
  pos = jnp.arange(8)
  y = apply_rope(x, pos, layout=layout)
  np.testing.assert_array_equal(y[:, 0], x[:, 0])
  np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_layouts_agree_up_to_channel_permutation():
  d = 16
  x = jax.random.normal(jax.random.PRNGKey(1), (1, 10, 2, d))
  pos = jnp.arange(10) * 7
  # interleaved pair t is channels (2t, 2t+1); half-split pair t is (t, t + d/2)
  perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
  inter = apply_rope(x, pos, layout="interleaved")
  half = apply_rope(x[..., perm], pos, layout="half")
  np.testing.assert_allclose(inter[..., perm], half, rtol=1e-6, atol=1e-6)


def test_angles_match_formula():
  d, m = 8, 3
  x = jnp.zeros((1, 4, 1, d)).at[0, m, 0, 2].set(1.0)  # unit vector on pair t=1, first channel
  y = apply_rope(x, jnp.arange(4))[0, m, 0]
  theta = 10000.0 ** (-2 * 1 / d)
  np.testing.assert_allclose(y[2:4], [np.cos(m * theta), np.sin(m * theta)], rtol=1e-6)


def test_static_positions_give_the_same_rotation():
  # the encoder passes numpy positions (constant tables, angles in float64); anything else
  # takes the traced float32 path. Both against a float64 per-pair rotation:
  n, d = 3000, 32
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (1, n, 1, d)), np.float64)
  ang = np.arange(n)[:, None] * 10000.0 ** (-np.arange(0, d, 2) / d)  # [n, d/2]
  x0, x1 = x[0, :, 0, 0::2], x[0, :, 0, 1::2]
  want = np.stack([x0 * np.cos(ang) - x1 * np.sin(ang), x0 * np.sin(ang) + x1 * np.cos(ang)],
                  axis=-1).reshape(n, d)
  xf = jnp.asarray(x, jnp.float32)
  static = np.asarray(apply_rope(xf, np.arange(n)))[0, :, 0]
  traced = np.asarray(jax.jit(apply_rope)(xf, jnp.arange(n)))[0, :, 0]
  assert np.max(np.abs(static - want)) < 2e-6  # float32 rounding of the result only
  assert np.max(np.abs(traced - want)) < 1e-3  # plus float32 angles m * theta at m < 3000
