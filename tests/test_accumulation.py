"""Exact contrastive gradient accumulation equals the full-batch gradient (dropout on)."""
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.sentence import SentenceEncoder
from objectives.accumulation import example_keys, make_grad_fn, num_micro_batches
from objectives.contrastive import LossConfig, contrastive_loss
from training.contrastive import init_params, make_embed
from utils.errors import ConfigError

B, MICRO, N = 16, 4, 10
# XLA's CPU backend spends most of these tests optimising code it then runs once; unoptimised
# code compiles faster (this file: 30 s instead of 42 s) and computes the same values, which is
# all these tests need.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _init(model):
  return jit(lambda key: init_params(model, key, N))(jax.random.PRNGKey(0))


def _model(lm_head=False):
  cfg = ModelConfig.from_dict(dict(vocab_size=40, width=32, num_layers=1, num_heads=2,
                                   mlp_dim=64, dropout=0.1, attention_dropout=0.1))
  return SentenceEncoder(cfg, pooling="mean", projection=16, lm_head=lm_head)


def _batch(seed=0, segments=False):
  tokens = np.array(jax.random.randint(jax.random.PRNGKey(seed), (B, 2, N), 5, 40), np.int32)
  lengths = np.asarray(jax.random.randint(jax.random.PRNGKey(seed + 1), (B, 2), 4, N + 1))
  tokens[np.arange(N)[None, None] >= lengths[..., None]] = 0  # padding of varied length
  tokens[::2, 1] = tokens[::2, 0]  # even examples as in SimCSE: one sentence, two dropout views
  batch = {"tokens": tokens}
  if segments:  # the second half of each sequence is segment B (SimBERT)
    batch["segments"] = np.broadcast_to((np.arange(N) >= N // 2).astype(np.int32), tokens.shape)
  return batch


def _loss(name, pairing="cross"):
  c = LossConfig.from_config(types.SimpleNamespace(
      name=name, scale=0.0, temperature=0.05, margin=0.0, pairing=pairing, symmetric=False))
  return lambda h: contrastive_loss(h, c)


@functools.lru_cache(maxsize=None)
def _grads(mode, loss_name, signal="supervised", micro=MICRO):
  model = _model(lm_head=signal == "simbert")
  params = _init(model)
  embed = make_embed(model, signal)
  loss = _loss(loss_name, "all" if signal == "simbert" else "cross")
  batch = _batch(segments=signal == "simbert")
  key = jax.random.PRNGKey(7)
  if mode == "reference":
    # the independent reference: plain autodiff of the loss of the whole batch at once
    def full(p):
      h, aux = embed(p, batch, example_keys(key, B))
      value = loss(h)[0]
      return (value if aux is None else value + aux / B), h
    (value, h), grads = jit(jax.value_and_grad(full, has_aux=True))(params)
    return value, grads, h
  (value, _), grads = jit(make_grad_fn(mode, embed, loss, micro))(params, batch, key)
  return value, grads


def _rel_error(a, b):
  a, b = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)]) for t in (a, b))
  return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize("loss_name", ["infonce", "flatnce"])
def test_exact_equals_full_batch_gradient_and_naive_does_not(loss_name):
  ref_value, ref, _ = _grads("reference", loss_name)
  exact_value, exact = _grads("exact", loss_name)
  naive_value, naive = _grads("naive", loss_name)
  np.testing.assert_allclose(exact_value, ref_value, rtol=1e-6)
  assert _rel_error(exact, ref) <= 1e-5
  for leaf_exact, leaf_ref in zip(jax.tree_util.tree_leaves(exact), jax.tree_util.tree_leaves(ref)):
    np.testing.assert_allclose(leaf_exact, leaf_ref, rtol=1e-3, atol=1e-6 * float(
        jnp.max(jnp.abs(leaf_ref))))
  # naive: each micro-batch only sees its own 4 negatives; a different gradient altogether
  assert _rel_error(naive, ref) > 0.05
  if loss_name == "infonce":  # fewer negatives, smaller InfoNCE (FlatNCE's value is always 1)
    assert float(naive_value) < float(ref_value)


def test_dropout_is_on_in_the_compared_gradients():
  # the two views of one sentence differ only by their dropout masks
  h = np.asarray(_grads("reference", "infonce")[2])
  assert np.min(np.linalg.norm(h[::2, 0] - h[::2, 1], axis=-1)) > 1e-4


def test_exact_with_simbert_generation_loss():
  ref_value, ref, _ = _grads("reference", "flatnce", "simbert")
  exact_value, exact = _grads("exact", "flatnce", "simbert")
  np.testing.assert_allclose(exact_value, ref_value, rtol=1e-6)
  assert _rel_error(exact, ref) <= 1e-5


def test_micro_batch_must_divide_the_batch():
  assert num_micro_batches(64, 16) == 4 and num_micro_batches(8, 16) == 1
  with pytest.raises(ConfigError, match="multiple"):
    num_micro_batches(48, 32)
  with pytest.raises(ConfigError, match="valid names"):
    make_grad_fn("sum", None, None, 4)
