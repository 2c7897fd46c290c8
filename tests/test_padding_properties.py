"""Property tests (hypothesis): for every attention kernel and every position encoding, any
padding pattern gives finite outputs, and what sits in the padded slots never reaches the
outputs at real tokens."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.attention import ATTENTIONS, get_attention
from model.config import ModelConfig
from model.encoder import Encoder
from model.positions import POSITIONS
from utils.errors import ConfigError

N, WIDTH = 12, 16


def _cfg(attention, position):
  return ModelConfig.from_dict(dict(vocab_size=40, width=WIDTH, num_heads=2, num_layers=1,
                                    mlp_dim=32, dropout=0.0, attention=attention,
                                    position=position, max_len=32, nystrom_landmarks=4,
                                    performer_features=32, relative_clip=4))


def _compatible(attention, position):
  try:
    _cfg(attention, position)
    return True
  except ConfigError:
    return False


# every kernel (with RoPE where it can apply it) and every position (with softmax)
CASES = sorted({(a, "rope" if _compatible(a, "rope") else "none") for a in ATTENTIONS} |
               {("softmax", p) for p in POSITIONS})


@functools.lru_cache(maxsize=None)
def _layer(attention, position):
  cfg = _cfg(attention, position)
  model = Encoder(cfg)
  tokens = jnp.zeros((2, N), jnp.int32)
  params = model.init(jax.random.PRNGKey(0), tokens, tokens >= 0)
  return jax.jit(lambda t, v: model.apply(params, t, v))


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(c))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid=st.lists(st.lists(st.booleans(), min_size=N, max_size=N), min_size=2, max_size=2),
       seed=st.integers(0, 2 ** 16))
def test_padding_never_leaks(case, valid, seed):
  apply = _layer(*case)
  valid = np.array(valid)
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, 40, (2, N))
  other = np.where(valid, tokens, rng.integers(5, 40, (2, N)))  # new content in padded slots
  a = np.asarray(apply(jnp.asarray(tokens), jnp.asarray(valid)))
  b = np.asarray(apply(jnp.asarray(other), jnp.asarray(valid)))
  assert np.all(np.isfinite(a)) and np.all(np.isfinite(b)), case
  np.testing.assert_allclose(a[valid], b[valid], rtol=1e-5, atol=1e-5, err_msg=str(case))


def test_cases_cover_every_registry_name():
  assert {a for a, _ in CASES} == set(ATTENTIONS)
  assert {p for _, p in CASES} == set(POSITIONS)
  assert get_attention("softmax") is ATTENTIONS["softmax"]
