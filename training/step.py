"""A generic jitted train step: gradients of a loss, a finite-check, and the optimizer update.

The per-step key is fold_in(seed_key, step), so step s draws the same masks and dropout
whether or not the run was interrupted before it.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax


def make_train_step(loss_fn: Callable | None, tx: optax.GradientTransformation,
                    grad_fn: Callable | None = None, shardings=None):
  """Returns jitted step(state, batch, key) -> (state, metrics).

  shardings: (state, batch, replicated) of the run's mesh (training/sharding.py): the state
  keeps its layout from step to step (so its donated buffers are reused), the batch comes
  split over the devices, the key and the metrics are on every device. None: one device.

  loss_fn(params, batch, key) -> (loss, metrics dict) is differentiated with autodiff; a task
  whose gradient is not the autodiff of one loss (exact contrastive accumulation) passes
  grad_fn(params, batch, key) -> ((loss, metrics), grads) instead.

  A step whose loss or gradients are not finite leaves the state untouched (decided inside the
  jitted function, because the old state is donated); the loop then stops or skips it as
  configured, and metrics['finite'] says which happened.
  """

  if grad_fn is None:
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state, batch, seed_key):
    key = jax.random.fold_in(seed_key, state.step)
    (loss, metrics), grads = grad_fn(state.params, batch, key)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    # a branch, not a select of the new state or the old one: to select, XLA keeps the old
    # optimizer moments alive beside the new, i.e. copies the donated buffers before updating
    # them (two more passes over them every step, benchmarks/step_gap.py); the updated state
    # is the same (grad_norm's reduction may fuse differently: its last bit can move)
    new = jax.lax.cond(finite, lambda s: s.apply_gradients(grads, tx), lambda s: s, state)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm, finite=finite.astype(jnp.float32))
    return new, metrics

  if shardings is None:
    return jax.jit(step, donate_argnums=(0,))
  state, batch, replicated = shardings
  jitted = jax.jit(step, donate_argnums=(0,), in_shardings=(state, batch, replicated),
                   out_shardings=(state, replicated))

  def on_mesh(*args):
    # traced with the mesh in context, so that the model can pin its activations' layout
    # (model/layout.py); set_mesh works only outside jit, hence here
    with jax.set_mesh(replicated.mesh):
      return jitted(*args)

  def lower(*args):  # as jax.jit's, for benchmarks that compile ahead of time
    with jax.set_mesh(replicated.mesh):
      return jitted.lower(*args)

  on_mesh.lower = lower
  return on_mesh
