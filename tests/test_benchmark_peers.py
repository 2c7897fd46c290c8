"""benchmarks/peers.py compares like with like: our MLM, HF's PyTorch RoFormer and HF's Flax
RoFormer built from one config have the same parameters, and our step's 'head everywhere'
variant (the HF heads' cost) computes the same loss as the training step."""
import jax
import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from benchmarks import peers  # noqa: E402
from benchmarks.mlm_throughput import random_tokens  # noqa: E402

VOCAB, LENGTH = 50, 16


def test_three_implementations_build_the_same_parameters():
  config = peers.roformer_config(peers.QUICK_MODEL)
  hf = peers.hf_roformer_config(config, VOCAB)
  batches = peers.masked_batches(random_tokens(2, LENGTH, VOCAB), VOCAB, 0.15, draws=1)
  torch_model, _ = peers.torch_peer(hf, config.train, batches)
  flax_model, _ = peers.flax_peer(hf, config.train, batches)
  counts = peers.parameter_counts(peers.our_parameters(config, VOCAB, LENGTH), torch_model,
                                  flax_model)
  # counted from the architecture: embeddings (tokens, 2 types, norm), per layer q/k/v/o,
  # two norms and the MLP, then the MLM head (dense, norm, output bias; decoder tied)
  m = config.model
  w, f = m.width, m.mlp_dim
  layer = 4 * (w * w + w) + 2 * 2 * w + (w * f + f) + (f * w + w)
  expected = VOCAB * w + 2 * w + 2 * w + m.num_layers * layer + (w * w + w) + 2 * w + VOCAB
  assert counts == {"ours": expected, "HF PyTorch": expected, "HF Flax": expected}
  # the HF config carries the model's dropouts (hidden and attention) and RoPE on q, k only
  assert (hf.hidden_dropout_prob, hf.attention_probs_dropout_prob) == (0.1, 0.1)
  assert not hf.rotary_value


def test_masked_batches_label_only_the_masked_positions():
  tokens = random_tokens(3, LENGTH, VOCAB)
  (inputs, labels), = peers.masked_batches(tokens, VOCAB, 0.25, draws=1)
  picked = labels != peers.IGNORED
  assert (picked.sum(1) == round(0.25 * LENGTH)).all()
  np.testing.assert_array_equal(labels[picked], tokens[picked])
  np.testing.assert_array_equal(inputs[~picked], tokens[~picked])  # only targets are changed


def test_head_everywhere_computes_the_training_loss():
  from model.encoder import MlmModel
  from training import mlm
  config = peers.roformer_config(peers.QUICK_MODEL)
  model = MlmModel(mlm.model_config(config, VOCAB))
  params = mlm.init_params(model, jax.random.PRNGKey(0), LENGTH)
  tokens = jax.numpy.asarray(random_tokens(2, LENGTH, VOCAB))
  key = jax.random.PRNGKey(3)  # same masks and dropout in both
  losses = [mlm.mlm_loss_fn(model, 0.15, head_everywhere=e) for e in (False, True)]
  masked, everywhere = jax.jit(lambda *a: [f(*a)[0] for f in losses])(params, tokens, key)
  assert abs(float(masked) - np.log(VOCAB)) < 0.5  # a real loss near chance, not a zero
  np.testing.assert_allclose(float(everywhere), float(masked), rtol=1e-5)


def test_products_stand_ins_compute_the_same_products_in_both_frameworks():
  """The ceiling compares XLA's and PyTorch's products-alone stand-ins: the same loss and
  gradients from the same numbers, so their rates time the same work."""
  from benchmarks.mlm_throughput import bare_block_loss, bare_block_weights
  m = peers.roformer_config(peers.QUICK_MODEL).model
  batch, length = 2, LENGTH
  run = peers.torch_products(m, batch, length)
  loss = run()
  params, x = bare_block_weights(m, batch, length)
  jax_loss, jax_grads = jax.value_and_grad(bare_block_loss(m, batch, length, False))(params, x)
  assert loss > 0
  np.testing.assert_allclose(loss, float(jax_loss), rtol=1e-5)
  for ours, theirs in zip(jax_grads, run.grads):
    for k in ours:  # q and k get gradients ~1e-7 here: the tolerance scales with each
      scale = float(np.abs(np.asarray(ours[k])).max())
      assert scale > 0
      np.testing.assert_allclose(theirs[k].numpy(), np.asarray(ours[k]), rtol=1e-3,
                                 atol=1e-4 * scale)
