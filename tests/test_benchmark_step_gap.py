"""benchmarks/step_gap.py: the gap's accounting, and variants that remove only their piece."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import step_gap
from benchmarks.step_gap import FULL, STANDIN

TINY = "configs/mlm_extrapolation.py:smoke,layers=1"
LENGTH, BATCH, VOCAB = 8, 2, 40


def test_itemise_recovers_the_pieces_of_a_known_gap():
  # rounds where the machine's speed varies: the stand-in's rate, and every step with it
  slow = np.array([1.0, 1.3, 0.9, 1.1, 2.0])
  standin_flops, flops_full, flops_headless = 6e9, 8e9, 7e9
  rate = standin_flops / (0.5 * slow)  # the stand-in takes 0.5 s on an idle machine
  pieces = {"a": 0.03, "b": 0.05, "headless": 0.02}
  unexplained = 0.04
  extra = (sum(pieces.values()) + unexplained) * slow  # the full step's excess, each round
  flops = {FULL: flops_full, "a": flops_full, "b": flops_full, "headless": flops_headless}
  times = {STANDIN: 0.5 * slow, FULL: flops_full / rate + extra}
  for v, cost in pieces.items():
    times[v] = flops[v] / rate + extra - cost * slow
  gap = step_gap.itemise(times, flops, standin_flops)
  median = float(np.median(slow))
  for v, cost in pieces.items():
    assert gap["pieces"][v][0] == pytest.approx(cost * median)
  assert gap["unexplained"] == pytest.approx(unexplained * median)
  assert gap["excess"] == pytest.approx((sum(pieces.values()) + unexplained) * median)
  assert gap["expected"] == pytest.approx(flops_full * 0.5 * median / standin_flops)


def test_the_section_measures_real_steps_and_its_parts_add_up():
  # the full step and the headless one, without dropout and optimizer to compile faster
  cheap = dict(model={"dropout": 0.0}, tx=optax.set_to_zero)
  variants = [dataclasses.replace(v, **cheap) for v in step_gap.VARIANTS
              if v.name in (FULL, "no MLM head")]
  result = step_gap.measure(TINY, LENGTH, BATCH, VOCAB, rounds=1, calls=1, variants=variants,
                            warmup=1)
  gap = result["gap"]
  assert sum(p[0] for p in gap["pieces"].values()) + gap["unexplained"] == \
      pytest.approx(gap["excess"])
  # the headless step runs fewer products: fewer FLOPs by XLA's count and by ours
  assert result["flops"]["no MLM head"] < result["flops"][FULL]
  assert result["cost"]["no MLM head"]["flops"] < result["cost"][FULL]["flops"]
  lines = step_gap.table(result, variants)
  # a row per variant, the unexplained remainder and the two stand-ins
  assert sum(line.startswith("| ") for line in lines) == 1 + len(variants) + 1 + 2


def encoder_outputs(interceptors):
  """The smoke model's encoder states at initialisation (biases 0, norm scales 1) with each
  of the (interceptor or None, gradient?) pairs, and the gradient of their sum of squares
  with respect to the token embedding table where asked, in one compiled function."""
  from model.encoder import MlmModel
  from training import mlm
  from utils.cli import load_config_file
  model = MlmModel(mlm.model_config(load_config_file(TINY), VOCAB))
  tokens = np.random.default_rng(0).integers(5, VOCAB, (BATCH, LENGTH)).astype(np.int32)

  def states(p, interceptor):
    with nn.intercept_methods(interceptor or (lambda f, a, k, c: f(*a, **k))):
      return model.apply({"params": p}, tokens, tokens > 0, method=lambda m, *a: m.encoder(*a))

  def each(key):
    p = mlm.init_params(model, key, LENGTH)
    grad = lambda i: jax.grad(lambda q: jnp.sum(states(q, i) ** 2))(p)["encoder"]
    return [(states(p, i), grad(i)["token_embed"]["embedding"] if gradient else None)
            for i, gradient in interceptors]
  return jax.jit(each)(jax.random.PRNGKey(0))


def test_interceptors_leave_the_forward_pass_of_an_initialised_model_unchanged():
  interceptors = (step_gap._constant_mask, step_gap._plain_norms, step_gap._no_biases)
  frozen = step_gap._frozen_embedding
  (reference, grad), (same, no_grad), *outputs = encoder_outputs(
      [(None, True), (frozen, True)] + [(i, False) for i in interceptors])
  assert np.abs(grad).max() > 0
  # the embedding's gradient is what the frozen embedding removes, and only that
  np.testing.assert_array_equal(same, reference)
  assert np.abs(no_grad).max() == 0
  for interceptor, (out, _) in zip(interceptors, outputs):
    np.testing.assert_allclose(out, reference, atol=2e-5, err_msg=interceptor.__name__)
