"""training/optimizer.py: schedule values against their formulas, the weight-decay mask, and
AdamW steps against Adam's update written out in numpy."""
from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.config import ModelConfig
from model.encoder import MlmModel
from training.optimizer import SCHEDULES, decay_mask, learning_rate_schedule, make_optimizer
from utils.errors import ConfigError

PEAK, WARM, STEPS, END = 1e-3, 10, 110, 0.1  # decay over 100 steps to a tenth of the peak


def _train(**kw):
  base = dict(schedule="cosine", learning_rate=PEAK, warmup_steps=WARM, steps=STEPS,
              end_lr_fraction=END, clip_norm=0.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0)
  base.update(kw)
  return types.SimpleNamespace(**base)


def lr_formula(schedule, step, peak=PEAK, warm=WARM, steps=STEPS, end_fraction=END):
  """Linear warmup from 0 to the peak over `warm` steps, then the decay over steps - warm."""
  if step < warm:
    return peak * step / warm
  s, span = min(step - warm, steps - warm), steps - warm
  end = peak * end_fraction
  if schedule == "cosine":
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * s / span))
  if schedule == "linear":
    return peak + (end - peak) * s / span
  return peak


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedule_values_at_chosen_steps(schedule):
  fn = learning_rate_schedule(_train(schedule=schedule))
  for step in [0, 1, 5, 9, 10, 35, 60, 85, 109, 110, 500]:
    assert float(fn(step)) == pytest.approx(lr_formula(schedule, step), rel=1e-5, abs=1e-12), step


def test_schedule_values_by_hand():
  cos = learning_rate_schedule(_train(schedule="cosine"))
  lin = learning_rate_schedule(_train(schedule="linear"))
  const = learning_rate_schedule(_train(schedule="constant"))
  assert float(cos(5)) == pytest.approx(0.5e-3) and float(lin(5)) == pytest.approx(0.5e-3)
  # half way through the decay both are half way between the peak and the end (0.1e-3)
  assert float(cos(60)) == pytest.approx(0.55e-3) and float(lin(60)) == pytest.approx(0.55e-3)
  # a quarter of the way: cosine 0.1 + 0.9 (1 + cos(pi / 4)) / 2, linear 0.1 + 0.9 * 3 / 4
  assert float(cos(35)) == pytest.approx(0.868198e-3, rel=1e-5)
  assert float(lin(35)) == pytest.approx(0.775e-3)
  assert float(cos(110)) == pytest.approx(0.1e-3) and float(lin(400)) == pytest.approx(0.1e-3)
  assert float(const(5)) == pytest.approx(0.5e-3) and float(const(400)) == pytest.approx(1e-3)
  # no warmup: the peak from the first step
  assert float(learning_rate_schedule(_train(warmup_steps=0))(0)) == pytest.approx(1e-3)


def test_unknown_schedule_lists_the_valid_names():
  with pytest.raises(ConfigError, match="valid names"):
    learning_rate_schedule(_train(schedule="exponential"))


def _mask_by_name():
  """{parameter name: {decayed?}} over a small MlmModel's parameters."""
  cfg = ModelConfig.from_dict(dict(vocab_size=20, width=8, num_layers=1, num_heads=2,
                                   mlp_dim=16))
  shapes = jax.eval_shape(MlmModel(cfg).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool))["params"]
  by_name = {}
  for path, decayed in jax.tree_util.tree_flatten_with_path(decay_mask(shapes))[0]:
    name = path[-1].key
    if len(path) > 1 and path[-2].key in ("query", "key", "value"):  # per head, see below
      name = f"qkv_{name}"
    by_name.setdefault(name, set()).add(bool(decayed))
  return by_name


def test_weight_decay_mask_kernels_and_embedding_yes_norms_and_output_bias_no():
  """As documented: decay on matrices (kernels, the embedding table), not on biases, norm
  scales or the output bias."""
  by_name = _mask_by_name()
  assert by_name["kernel"] == by_name["qkv_kernel"] == by_name["embedding"] == {True}
  assert by_name["bias"] == by_name["scale"] == by_name["output_bias"] == {False}


def test_weight_decay_mask_leaves_the_per_head_biases_alone():
  """The query/key/value biases are [heads, head_dim]: a bias by role, not by rank (a mask on
  ndim >= 2 alone decayed them)."""
  assert _mask_by_name()["qkv_bias"] == {False}


def test_weight_decay_mask_decays_looked_up_tables():
  """T5's bucket table (named bias, no kernel beside it) and learned position tables are
  decayed like the token embedding."""
  cfg = ModelConfig.from_dict(dict(vocab_size=20, width=8, num_layers=1, num_heads=2,
                                   mlp_dim=16, position="t5"))
  shapes = jax.eval_shape(MlmModel(cfg).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4), bool))["params"]
  mask = decay_mask(shapes)
  assert mask["encoder"]["relative_position"]["bias"] is True


def np_adamw(params, grads, lrs, *, b1, b2, eps, wd, decayed, clip=0.0):
  """Adam with bias correction and decoupled weight decay, written out step by step."""
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  m = {k: np.zeros_like(v) for k, v in p.items()}
  v = {k: np.zeros_like(x) for k, x in p.items()}
  for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
    norm = math.sqrt(sum(float(np.sum(np.square(x))) for x in g.values()))
    scale = min(1.0, clip / norm) if clip > 0 else 1.0
    for k in p:
      gk = np.asarray(g[k], np.float64) * scale
      m[k] = b1 * m[k] + (1 - b1) * gk
      v[k] = b2 * v[k] + (1 - b2) * gk ** 2
      step = (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
      p[k] = p[k] - lr * (step + (wd * p[k] if decayed[k] else 0.0))
  return p


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_adamw_steps_against_numpy(clip):
  params = {"kernel": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.array([1.0, -2.0])}
  rng = np.random.default_rng(0)
  grads = [{k: jnp.asarray(rng.normal(size=v.shape), jnp.float32) for k, v in params.items()}
           for _ in range(3)]
  # warmup over 2 steps: the learning rates of counts 0, 1, 2 are 0, peak / 2, peak; a large eps
  # makes the update depend on the gradient's scale, so clipping shows
  t = _train(schedule="linear", learning_rate=0.1, warmup_steps=2, steps=12, weight_decay=0.5,
             eps=0.5, clip_norm=clip)
  opt = make_optimizer(t)
  state, p = opt.init(params), params
  for g in grads:
    updates, state = opt.update(g, state, p)
    p = jax.tree_util.tree_map(jnp.add, p, updates)
  want = np_adamw(params, grads, [0.0, 0.05, 0.1], b1=0.9, b2=0.999, eps=0.5, wd=0.5,
                  decayed={"kernel": True, "bias": False}, clip=clip)
  for k in params:
    np.testing.assert_allclose(p[k], want[k], rtol=1e-5, atol=1e-7)


def test_with_zero_gradient_only_the_decayed_parameter_moves():
  # Adam's step is 0 for a zero gradient; what remains is decay: kernel * (1 - lr * wd)
  params = {"kernel": jnp.array([[2.0, -4.0]]), "bias": jnp.array([3.0])}
  opt = make_optimizer(_train(schedule="constant", learning_rate=0.1, warmup_steps=0,
                              weight_decay=0.5))
  updates, _ = opt.update(jax.tree_util.tree_map(jnp.zeros_like, params), opt.init(params),
                          params)
  np.testing.assert_allclose(updates["kernel"], [[-0.1, 0.2]], rtol=1e-6)
  np.testing.assert_array_equal(updates["bias"], [0.0])
