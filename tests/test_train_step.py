"""training/step.py: the update of a finite step, and a non-finite step leaves the state as it was."""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from training.state import TrainState
from training.step import make_train_step


def loss_fn(params, batch, key):
  del key
  return jnp.sum((params["w"] * batch - 1.0) ** 2) + jnp.sum(params["b"] ** 2), {}


def states(batch):
  tx = optax.adamw(1e-2, weight_decay=0.1)
  params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.arange(3.0)}
  make = lambda: TrainState.create(jax.tree_util.tree_map(jnp.copy, params), tx)
  # the update the step should make: optax's own, on the autodiff gradient
  grads = jax.grad(lambda p: loss_fn(p, batch, None)[0])(params)
  expected = jax.jit(lambda s: s.apply_gradients(grads, tx))(make())
  new, metrics = make_train_step(loss_fn, tx)(make(), batch, jax.random.PRNGKey(0))
  return make(), expected, new, metrics


def test_a_finite_step_applies_the_optimizer_update():
  _, expected, new, metrics = states(jnp.full((2, 3), 0.5))
  assert float(metrics["finite"]) == 1.0 and int(new.step) == 1
  for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(expected)):
    np.testing.assert_array_equal(a, b)


def test_a_non_finite_step_leaves_every_part_of_the_state_as_it_was():
  before, _, new, metrics = states(jnp.full((2, 3), jnp.nan))
  assert float(metrics["finite"]) == 0.0 and int(new.step) == 0
  for a, b in zip(jax.tree_util.tree_leaves(new), jax.tree_util.tree_leaves(before)):
    np.testing.assert_array_equal(a, b)
