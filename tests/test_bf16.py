"""model.dtype=bfloat16: bf16 activations and matmuls; float32 parameters, optimizer state,
softmax statistics, norm statistics, RoPE angles, logits and loss.

What runs in which dtype is read from the traced program (jax.make_jaxpr), for the modules of
every kind (embeddings, MLP, norms, each kind of position term, the fused kernel, the MLM
head, the sentence encoder's pooling). RoPE at long positions is checked against a float64
rotation, and a short bf16 MLM training against the same training in float32.
"""
from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core

from data.tokenizers import MASK, PAD
from model.config import ModelConfig
from model.encoder import MlmModel
from model.positions.rope import apply_rope, rope_cos_sin
from model.positions.rope_scaling import rope_inv_freq
from model.sentence import SentenceEncoder
from objectives.mlm import mlm_loss
from training.optimizer import make_optimizer
from training.state import TrainState
from training.step import make_train_step

BF16, F32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
# statistics and transcendental functions that must see float32: softmax (reduce_max, exp),
# norms (rsqrt), log-n scales and the attention entropy (log), sinusoids (sin, cos), means
# (div: norms, the sentence pooling)
FLOAT32_ONLY = ("exp", "log", "log1p", "rsqrt", "reduce_max", "sin", "cos", "div")


def _cfg(**kw):
  base = dict(vocab_size=30, width=16, num_heads=2, num_layers=1, mlp_dim=32, dtype="bfloat16")
  return ModelConfig.from_dict(dict(base, **kw))


def _equations(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs (custom_vjp, custom_jvp, pjit) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, core.Jaxpr):
          yield from _equations(sub)


def _dtypes(eqn, which):
  """The numeric dtypes of an equation's inputs or outputs (PRNG keys left out)."""
  return [v.aval.dtype for v in getattr(eqn, which)
          if isinstance(getattr(v.aval, "dtype", None), np.dtype)]


# name -> (model fields, sentence encoder?, number of float32 matmuls allowed and why)
MODELS = {
    "rope_logn": (dict(), False, 0),
    "rope_fused": (dict(attention_impl="fused"), False, 0),
    "rope_remat": (dict(remat=True), False, 0),  # the block inside model/remat.py's custom VJP
    "rope_yarn_rmsnorm": (dict(rope_scaling="yarn", rope_scaling_factor=2.0,
                               rope_original_length=8, norm="rmsnorm"), False, 0),
    "rerope_pre": (dict(rope_scaling="rerope", rerope_window=3, norm="pre"), False, 0),
    # Shaw's value term mixes its 2K+1 value vectors by the float32 probabilities pooled per
    # offset: O(n K d), kept in float32 like the probabilities themselves
    "shaw": (dict(position="shaw", relative_clip=3), False, 1),
    "t5_alibi_like_bias": (dict(position="t5", scale="none"), False, 0),
    "kerple": (dict(position="kerple"), False, 0),
    # XL's R_{i-j} is a float32 sinusoid projected by W_R in float32: a position term, like
    # RoPE's angles, and O(n width d) against attention's O(n^2 d)
    "xl": (dict(position="xl"), False, 1),
    "deberta_embeddings": (dict(position="deberta", relative_clip=3, type_vocab_size=2,
                                embedding_size=8), False, 0),
    "sinusoidal_sentence": (dict(position="sinusoidal"), True, 0),
}


@pytest.mark.parametrize("name", MODELS)
def test_what_runs_in_which_dtype(name):
  fields, sentence, float32_matmuls = MODELS[name]
  cfg = _cfg(**fields)
  model = (SentenceEncoder(cfg, pooling="mean", projection=8) if sentence else MlmModel(cfg))
  tokens = np.ones((2, 12), np.int32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, tokens > 0)
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(params)} == {F32}
  rngs = {"dropout": jax.random.PRNGKey(1)}
  if sentence:
    forward = lambda p: model.apply(p, tokens, tokens > 0, deterministic=False, rngs=rngs)
  else:  # the logits and the training loss on them (objectives/mlm.py)
    def forward(p):
      at = np.array([[1, 4]] * 2)
      logits = model.apply(p, tokens, tokens > 0, deterministic=False, targets_at=at, rngs=rngs)
      return logits, mlm_loss(logits, tokens[:, :2], np.ones((2, 2), np.float32))[0]
  jaxpr = jax.make_jaxpr(forward)(params)
  assert {out.dtype for out in jaxpr.out_avals} == {F32}  # logits, loss (sentence embeddings)
  matmuls = {"bf16 -> bf16": 0, "bf16 -> f32": 0, "f32": 0}
  for eqn in _equations(jaxpr.jaxpr):
    ins, outs = _dtypes(eqn, "invars"), _dtypes(eqn, "outvars")
    assert not {jnp.dtype(jnp.float16), jnp.dtype(jnp.float64)} & {*ins, *outs}, eqn
    if eqn.primitive.name == "dot_general":
      if ins == [BF16, BF16]:
        matmuls["bf16 -> bf16" if outs == [BF16] else "bf16 -> f32"] += 1
      else:
        assert ins == [F32, F32], eqn
        matmuls["f32"] += 1
    elif eqn.primitive.name in FLOAT32_ONLY:
      assert set(ins) == {F32}, eqn
  # projections and MLP in bf16; q.k logits and the MLM decoder accumulate to float32
  assert matmuls["f32"] == float32_matmuls, matmuls
  assert matmuls["bf16 -> bf16"] >= 6 and matmuls["bf16 -> f32"] >= 1, matmuls


def _rotated_in_float64(x, positions):
  """RoPE (interleaved pairs) of x in float64 from the definition."""
  ang = positions.astype(np.float64)[:, None] * rope_inv_freq(x.shape[-1], 10000.0)
  x = np.asarray(x, np.float64)
  x0, x1 = x[..., 0::2], x[..., 1::2]
  cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
  out = np.empty_like(x)
  out[..., 0::2], out[..., 1::2] = x0 * cos - x1 * sin, x0 * sin + x1 * cos
  return out


def test_rope_angles_are_float32_at_long_positions():
  # HF transformers #29285: angles m * theta in bf16 are wrong by whole radians at m ~ 10^4.
  # Here the tables are float64 (static positions) or float32 (traced), and the rotation of
  # bf16 q, k is done in float32 and rounded once: within bf16 rounding of the exact rotation.
  positions = np.arange(40000, 40008)
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 8, 2, 32)).astype(jnp.bfloat16)
  want = _rotated_in_float64(x, positions)
  static = apply_rope(x, positions)
  traced = jax.jit(apply_rope)(x, jnp.asarray(positions))
  for got in (static, traced):
    assert got.dtype == BF16
    # bf16 keeps 8 bits (2^-8 relative); float32 angles at 4e4 are off by ~4e4 * 2^-24 rad
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=2 ** -6)
  for tables in (rope_cos_sin(positions, 32), rope_cos_sin(jnp.asarray(positions), 32)):
    assert all(jnp.dtype(t.dtype) == F32 for t in tables)
  # the tolerance tells the two apart: angles rounded to bf16 are off by whole turns
  bf16_angles = (jnp.asarray(positions, jnp.bfloat16)[:, None] *
                 jnp.asarray(rope_inv_freq(32, 10000.0), jnp.bfloat16))
  exact = positions[:, None] * rope_inv_freq(32, 10000.0)
  assert np.abs(np.asarray(bf16_angles, np.float64) - exact).max() > 10


V, LENGTH, BATCH, STEPS, PICKS = 24, 16, 8, 20, 3
# measured: |bf16 loss - float32 loss| grows from ~1e-4 at the first steps to at most 3e-3 by
# step 20 (and 6e-3 by step 30: the two trajectories drift apart as any two rounding schemes
# do), while the float32 loss falls by ~0.15. bf16 keeps 8 significant bits (2^-9 relative
# rounding of each product's inputs); thousands of roundings per step move the loss by ~1e-3.
# The tolerance, 0.3% of the loss and a fifteenth of its fall, leaves 3x room over the
# measurement; a bf16 run that trains differently (parameters updated in bf16, the loss or the
# softmax in bf16) drifts by more.
LOSS_TOLERANCE = 1e-2


def _train(dtype: str, params, batches):
  """The losses of STEPS MLM steps (training/step.py, the project's optimizer) on the masked
  batches, and the last state."""
  model = MlmModel(_cfg(vocab_size=V, dtype=dtype, dropout=0.0))
  tx = make_optimizer(types.SimpleNamespace(
      schedule="constant", learning_rate=1e-2, warmup_steps=3, steps=STEPS, end_lr_fraction=0.0,
      clip_norm=1.0, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01))

  def loss(params, batch, key):  # training/mlm.py's loss, its masks drawn beforehand
    del key
    inputs, positions, targets, weights = batch
    logits = model.apply({"params": params}, inputs, inputs != PAD, targets_at=positions)
    return mlm_loss(logits, targets, weights)[0], {}

  params = jax.tree_util.tree_map(jnp.copy, params)  # the step donates its state
  state, step = TrainState.create(params, tx), make_train_step(loss, tx)
  losses = []
  for s in range(STEPS):
    state, metrics = step(state, [x[s] for x in batches], jax.random.PRNGKey(1))
    losses.append(float(metrics["loss"]))
  return np.array(losses), state


def test_bf16_mlm_training_tracks_float32():
  rng = np.random.RandomState(0)  # arithmetic sequences: a neighbour tells the masked token
  start, stride = rng.randint(0, V - 5, (STEPS, BATCH, 1)), rng.randint(1, 3, (STEPS, BATCH, 1))
  tokens = (start + stride * np.arange(LENGTH)) % (V - 5) + 5
  # PICKS positions per row replaced by [MASK], drawn here once for both runs (data/mlm.py's
  # masking is tested on its own; compiling it would cost more than the comparison)
  positions = np.argsort(rng.rand(STEPS, BATCH, LENGTH), axis=-1)[..., :PICKS].astype(np.int32)
  targets = np.take_along_axis(tokens, positions, axis=-1)
  inputs = tokens.copy()
  np.put_along_axis(inputs, positions, MASK, axis=-1)
  batches = (inputs, positions, targets, np.ones(positions.shape, np.float32))
  # one initialisation for both runs, the bf16 model's (its parameters are float32; jitted:
  # an eager init costs more than compiling one)
  model = MlmModel(_cfg(vocab_size=V, dropout=0.0))
  params = jax.jit(model.init)(jax.random.PRNGKey(0), tokens[0], tokens[0] > 0)["params"]
  want, _ = _train("float32", params, batches)
  got, state = _train("bfloat16", params, batches)
  assert want[:5].mean() - want[-5:].mean() > 0.1  # the comparison is of a moving loss
  np.testing.assert_allclose(got, want, rtol=0, atol=LOSS_TOLERANCE)
  # parameters and optimizer state stay float32 through bf16 steps
  floats = [x for x in jax.tree_util.tree_leaves((state.params, state.opt_state))
            if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and {jnp.dtype(x.dtype) for x in floats} == {F32}
