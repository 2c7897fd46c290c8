"""training/checkpoint.py: an asynchronous save keeps what it was given, whatever the caller
does next (mutating its metadata, donating the state's buffers to the next step)."""
import jax
import jax.numpy as jnp
import numpy as np

from training.checkpoint import Checkpointer, abstract


def test_async_save_snapshots_meta_and_state(tmp_path):
  state = {"w": jnp.arange(4096.0).reshape(64, 64), "step": jnp.asarray(3)}
  expected = jax.tree_util.tree_map(np.asarray, state)
  meta = {"log_sums": {"loss": 1.5}, "log_steps": 1}
  ckpt = Checkpointer(str(tmp_path), async_save=True)
  ckpt.save(3, state, meta)
  # what the training loop does right after saving: go on accumulating, donate the state
  meta["log_sums"]["loss"] += 100.0
  meta["log_steps"] += 1
  state = jax.jit(lambda s: jax.tree_util.tree_map(lambda x: x * 0 + 7, s),
                  donate_argnums=0)(state)
  ckpt.close()
  ckpt = Checkpointer(str(tmp_path))
  step, restored, saved_meta = ckpt.restore(abstract(state))
  ckpt.close()
  assert step == 3 and saved_meta == {"log_sums": {"loss": 1.5}, "log_steps": 1}
  for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)
