"""model/remat.py: model.remat gives the gradients of the plain model (dropout on: the
recomputation draws the forward pass's masks), and XLA's compiled backward pass keeps one
block's activations at a time (jax.checkpoint's recomputation was scheduled beside the forward
pass, and its temp memory was 1.00x of no remat at the shape below)."""
import jax
import jax.numpy as jnp
import numpy as np

from model.config import ModelConfig
from model.encoder import Encoder


def _encoder(remat: bool, **fields):
  base = dict(vocab_size=50, width=32, num_heads=2, num_layers=2, mlp_dim=64, dropout=0.1,
              remat=remat)
  return Encoder(ModelConfig.from_dict(dict(base, **fields)))


def _loss(model, tokens, valid):
  """A loss of every hidden state (weighted, so that no gradient is a symmetric sum)."""
  weights = jax.random.normal(jax.random.PRNGKey(7), (tokens.shape[1], model.cfg.width))
  return lambda params, key: jnp.sum(
      model.apply(params, tokens, valid, False, rngs={"dropout": key}).astype(jnp.float32)
      * weights)


def _random_params(model, tokens, valid):
  """Parameters of the model's shapes drawn by numpy: no initialiser to compile (its random
  draws are most of a small model's program)."""
  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), tokens, valid)
  return jax.tree_util.tree_map(
      lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


def test_gradients_equal_those_without_remat():
  """Dropout on the embeddings, the sublayers and the attention probabilities; T5's shared
  bias table crosses into the block as a dict of arrays. One block: more blocks only repeat
  it, and every dropout site adds a Threefry hash to compile (test_t5_buckets.py compares
  three remat blocks' gradients without dropout)."""
  fields = dict(position="t5", num_layers=1, attention_dropout=0.1)
  tokens = jax.random.randint(jax.random.PRNGKey(3), (2, 12), 0, 50)
  valid = jnp.arange(12)[None, :] < jnp.array([[12], [9]])  # one padded row
  plain, rematted = _encoder(False, **fields), _encoder(True, **fields)
  loss, remat_loss = _loss(plain, tokens, valid), _loss(rematted, tokens, valid)
  params = _random_params(plain, tokens, valid)

  def both(params, key):  # one compiled program
    without_dropout = jnp.sum(plain.apply(params, tokens, valid, True))
    return (jax.value_and_grad(loss)(params, key), jax.grad(remat_loss)(params, key),
            without_dropout)
  (at_key, g_plain), g_remat, without_dropout = jax.jit(both)(params, jax.random.PRNGKey(5))
  # dropout acts, so equal gradients mean equal masks in the recomputation
  assert abs(float(at_key - without_dropout)) > 1e-3 * abs(float(at_key))
  assert jax.tree_util.tree_structure(g_plain) == jax.tree_util.tree_structure(g_remat)
  for a, b in zip(*map(jax.tree_util.tree_leaves, (g_plain, g_remat))):
    assert float(np.max(np.abs(a))) > 0
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-6 * max(float(np.max(np.abs(a))), 1.0))


def test_backward_pass_keeps_one_block_of_activations():
  """Compiled only: XLA's temp memory of the gradient of 4 blocks at 64 tokens, where the
  attention probabilities and MLP hiddens of each block dominate, with remat under half of
  that without (measured 0.34; 1.00 with nn.remat, whose recomputation XLA ran beside the
  forward pass)."""
  tokens = jnp.zeros((2, 64), jnp.int32)
  valid = jnp.ones((2, 64), bool)
  temp = {}
  for remat in (False, True):
    model = _encoder(remat, num_layers=4, dropout=0.0)
    params = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), tokens, valid))
    compiled = jax.jit(jax.grad(_loss(model, tokens, valid))).lower(
        params, jax.random.PRNGKey(1)).compile()
    temp[remat] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[True] < 0.5 * temp[False], temp
