"""model.attention_impl=fused: softmax attention through jax.nn.dot_product_attention.

On the CPU the fused call is XLA's attention, so in float32 it must equal the einsum path to
rounding: outputs and gradients, for every position encoding, scale and mask that takes the
fused path (the reference is the einsum path, itself checked against per-pair formulas in
test_positions.py and test_attention_core.py). The configurations it cannot express are
refused at start-up in one line with their declared reason.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from model.attention import ATTENTIONS
from model.attention.layer import MultiHeadAttention
from model.config import ModelConfig
from model.encoder import MlmModel
from model.masks import causal_mask, padding_mask, unilm_mask, window_mask
from model.positions import POSITIONS
from model.positions.base import TERM_NAMES
from utils.errors import ConfigError

N = 8
# a full row, a padded row, and a row with no valid token (every query fully masked)
VALID = np.array([[1] * N, [1] * 5 + [0] * 3, [0] * N], bool)
SEGMENTS = np.array([[0] * 4 + [1] * 4, [0] * 3 + [1] * 5, [0] * N], np.int32)
MASKS = {
    "padding": lambda: padding_mask(VALID),
    "causal": lambda: padding_mask(VALID) & causal_mask(N),
    "window": lambda: padding_mask(VALID) & window_mask(N, 3),
    "unilm": lambda: padding_mask(VALID) & unilm_mask(SEGMENTS),
}
# every position term the fused form expresses (rotate, content_logits, bias,
# logit_multiplier), every scale (by key count and by query position) and every mask
COMBINATIONS = {
    "rope-logn": (dict(position="rope", scale="logn", logn_n0=6), "padding"),
    "rope_half_ntk-logn_causal": (dict(rope_layout="half", rope_scaling="ntk",
                                       rope_scaling_factor=2.0, scale="logn_causal",
                                       logn_n0=4, causal=True), "causal"),
    "rope_yarn-logn_qwen": (dict(rope_scaling="yarn", rope_scaling_factor=4.0,
                                 rope_original_length=6, scale="logn_qwen"), "unilm"),
    "deberta-standard": (dict(position="deberta", relative_clip=3, scale="standard"), "window"),
    "t5-none": (dict(position="t5", scale="none", t5_num_buckets=8, t5_max_distance=16,
                     t5_shared=False, causal=True), "causal"),
}


def _cfg(**kw):
  base = dict(vocab_size=30, width=16, num_heads=2, num_layers=2, mlp_dim=32, dropout=0.0)
  return ModelConfig.from_dict(dict(base, **kw))


def _close(got, want):
  """Equal to float32 rounding: within 1e-5 of the largest magnitude in the tree (some
  gradients are zero but for rounding, e.g. the key bias's: softmax ignores a row constant)."""
  got, want = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
  scale = max(float(np.abs(b).max()) for b in want)
  for a, b in zip(got, want, strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale)


class Calls:
  """Counts the traced calls of jax.nn.dot_product_attention (the fused path is taken)."""

  def __init__(self):
    self.calls, self.original = [], jax.nn.dot_product_attention

  def __call__(self, *args, **kw):
    self.calls.append(kw.get("implementation"))
    return self.original(*args, **kw)


@pytest.fixture(scope="module")
def layers():
  """{combination: (einsum, fused) results, fused calls}: every combination's output and
  gradients (parameters and input) on both paths, in one compiled program."""
  calls = Calls()
  x = jax.random.normal(jax.random.PRNGKey(0), (3, N, 16))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, N, 16))
  positions = np.arange(N)
  setups = {name: (_cfg(**fields), MASKS[mask_kind]())
            for name, (fields, mask_kind) in COMBINATIONS.items()}

  def run(cfg, mask, params):
    def loss(p, x):
      out = MultiHeadAttention(cfg).apply(p, x, mask, positions)
      return jnp.sum(out * w), out
    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    return out, grads

  @jax.jit
  def every_combination(key):  # initialised inside: eager initialisation costs more
    out = {}
    for name, (cfg, mask) in setups.items():
      params = MultiHeadAttention(cfg).init(key, x, mask, positions)
      before = len(calls.calls)
      einsum = run(cfg, mask, params)
      assert len(calls.calls) == before  # the default path makes no fused call
      fused = run(dataclasses.replace(cfg, attention_impl="fused"), mask, params)
      out[name] = (einsum, fused, len(calls.calls) - before, params)
    return out

  with pytest.MonkeyPatch.context() as m:
    m.setattr(jax.nn, "dot_product_attention", calls)
    results = every_combination(jax.random.PRNGKey(2))
  return results, calls.calls


@pytest.mark.parametrize("name", COMBINATIONS)
def test_fused_layer_equals_einsum_layer_with_gradients(name, layers):
  results, calls = layers
  (out_e, grads_e), (out_f, grads_f), fused_calls, params = results[name]
  dataclasses.replace(_cfg(**COMBINATIONS[name][0]), attention_impl="fused").validate()
  assert int(fused_calls) == 1 and set(calls) == {None}  # implementation left to JAX
  _close(out_f, out_e)
  _close(grads_f, grads_e)  # every parameter's gradient (bias tables included) and x's
  # the row without a valid key attends to nothing: the output projection's bias, as before
  np.testing.assert_allclose(out_f[2], jnp.broadcast_to(params["params"]["out"]["bias"],
                                                        out_f[2].shape), atol=1e-6)


def _traced_calls(model, *args, **kw):
  """The fused calls made when tracing model.apply (shapes only: nothing is compiled)."""
  calls = Calls()
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  with pytest.MonkeyPatch.context() as m:
    m.setattr(jax.nn, "dot_product_attention", calls)
    out = jax.eval_shape(lambda p: model.apply(p, *args, **kw), params)
  return calls.calls, out


def test_every_layer_of_the_model_takes_the_fused_path():
  # the layers above are the model's: each block makes one fused call, with dropout on
  cfg = _cfg(position="learned", dropout=0.1, norm="pre", num_layers=3, attention_impl="fused")
  tokens = np.ones((2, N), np.int32)
  calls, logits = _traced_calls(MlmModel(cfg), tokens, tokens > 0, deterministic=False,
                                rngs={"dropout": jax.random.PRNGKey(1)})
  assert calls == [None] * 3 and logits.shape == (2, N, 30)
  calls, _ = _traced_calls(MlmModel(dataclasses.replace(cfg, attention_impl="einsum")), tokens,
                           tokens > 0)
  assert not calls


def test_entropy_pass_uses_the_probabilities():
  # evaluate.py --entropy sows the probabilities' entropy: that pass runs the einsum path
  cfg = _cfg(attention_impl="fused", num_layers=2)
  tokens = np.ones((2, N), np.int32)
  calls, (_, state) = _traced_calls(MlmModel(cfg), tokens, tokens > 0,
                                    mutable=["intermediates"])
  assert not calls
  assert len(jax.tree_util.tree_leaves(state)) == 2 * cfg.num_layers  # (sums, rows) per layer


def test_every_kernel_says_why_each_term_has_no_fused_form():
  for kernel in ATTENTIONS.values():
    if kernel.fused is not None:
      assert kernel.fused.honours <= kernel.honours
      assert set(kernel.fused.cannot) == set(TERM_NAMES) - kernel.fused.honours
      assert all(why.strip() and "\n" not in why for why in kernel.fused.cannot.values())


@pytest.mark.parametrize("fields,says", [
    (dict(position="shaw"), "position=shaw cannot take the fused path: Shaw's value vectors"),
    (dict(rope_scaling="rerope"),
     "position=rope with rope_scaling=rerope cannot take the fused path: ReRoPE"),
    (dict(attention_dropout=0.1), "forms no attention probabilities to drop out"),
    (dict(scale="entropy_norm"), "scale=entropy_norm transforms the full [q, k] logit matrix"),
    (dict(attention="linear"), "attention=linear has no fused form (only attention=softmax"),
    (dict(attention_impl="cudnn"), "takes bfloat16 or float16, not model.dtype=float32"),
    (dict(attention_impl="cudnn", dtype="bfloat16", width=24, num_heads=2),
     "multiple of 8 and <= 256"),
])
def test_what_the_fused_call_cannot_express_is_refused_in_one_line(fields, says):
  with pytest.raises(ConfigError) as e:
    _cfg(**dict(dict(attention_impl="fused"), **fields))
  assert says in str(e.value) and "\n" not in str(e.value), str(e.value)
  assert "attention_impl=" in str(e.value)  # and what to use instead


def test_every_position_takes_the_fused_path_or_is_refused_by_its_declaration():
  taken = set()
  for name, position in POSITIONS.items():
    try:
      _cfg(position=name, attention_impl="fused")
      taken.add(name)
    except ConfigError as e:
      assert "cannot take the fused path" in str(e)
  # Shaw's value term is the only default-configured encoding without a fused form
  assert set(POSITIONS) - taken == {"shaw"}


def test_cudnn_refused_without_a_gpu():
  if jax.default_backend() == "gpu":
    pytest.skip("a GPU is present: the cuDNN path is not refused here")
  cfg = _cfg(attention_impl="cudnn", dtype="bfloat16")
  x = jnp.zeros((1, N, cfg.width), jnp.bfloat16)
  with pytest.raises(ConfigError, match="needs an NVIDIA GPU, and this process runs on cpu"):
    jax.eval_shape(MultiHeadAttention(cfg).init, jax.random.PRNGKey(0), x,
                   padding_mask(VALID[:1]), np.arange(N))
