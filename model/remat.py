"""Rematerialisation (gradient checkpointing) whose recomputation waits for the gradient.

`nn.remat` (jax.checkpoint) makes JAX keep only a block's inputs for the backward pass, which
recomputes the block's activations from them. But that recomputation needs nothing else, so
XLA's scheduler may run it as soon as the inputs exist: on XLA:CPU it ran each block's
recomputation right beside its forward pass, and the recomputed activations lived as long as
the originals would have (the train step's temp memory 0.97x of no remat, at 1.5x the time).
jax.checkpoint's optimization barrier does not help there: XLA:CPU removes barriers before it
schedules (OptimizationBarrierExpander), and the barrier never involved the gradient anyway.

Here the block is a custom VJP whose backward pass recomputes from inputs that depend on the
incoming cotangent (the gradient of the block's output) by an exact + 0 (_after): the
recomputation cannot start before the backward pass reaches the block, and only one block's
activations are alive at a time. The same dependency keeps XLA from merging the recomputation
with the forward pass (what jax.checkpoint's prevent_cse is for).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import lift


def _after(inputs, cotangent):
  """inputs made to depend on the cotangent, values unchanged: 0 * (the largest element of the
  cotangent's first floating leaf) added to every floating input. XLA does not fold 0 * y for a
  floating y (it is NaN for an infinite y), so the dependency survives to its scheduler; a
  maximum never overflows, so a finite cotangent adds exactly 0. Every floating input, the
  parameters included: what the recomputation derives from a parameter alone (a norm's scale
  broadcast to the activations' shape) would otherwise be shared with the forward pass and
  live from it to the end of the backward pass."""
  grads = [g for g in jax.tree_util.tree_leaves(cotangent) if _floating(g)]
  if not grads:
    return inputs
  zero = jnp.max(grads[0]) * 0
  return jax.tree_util.tree_map(
      lambda x: x + zero.astype(x.dtype) if _floating(x) else x, inputs)


def _floating(x) -> bool:
  return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def recompute_after_cotangent(fn):
  """fn(*args) with jax.checkpoint's memory (only the arguments kept for the backward pass),
  whose backward pass recomputes fn only once the cotangent of its output exists."""

  def call(*args):
    # fn is traced once, and both passes evaluate that trace: a second trace of a Flax scope
    # would advance its PRNG counters, and the recomputation would draw other dropout masks
    traced, consts = jax.closure_convert(fn, *args)
    tied = jax.custom_vjp(traced)

    def forward(*inputs):
      return traced(*inputs), inputs

    def backward(inputs, cotangent):
      return jax.vjp(traced, *_after(inputs, cotangent))[1](cotangent)

    tied.defvjp(forward, backward)
    return tied(*args, *consts)

  return call


def _lifted(fn, static_argnums: tuple[int, ...] = ()):
  """flax.core.lift.checkpoint with recompute_after_cotangent for jax.checkpoint: the scope's
  variables and PRNG streams cross as arguments, so the recomputation draws the same dropout
  masks as the forward pass (the same keys, the same derivation as without remat)."""

  def inner(scope_fn, repack_fn, variable_groups, rng_groups, *args):
    static = {i: args[i] for i in static_argnums}
    dynamic = [a for i, a in enumerate(args) if i not in static]

    def pure(variable_groups, rng_groups, *dynamic):
      rest = iter(dynamic)
      full = [static[i] if i in static else next(rest) for i in range(len(args))]
      scope = scope_fn(variable_groups, rng_groups)
      return fn(scope, *full), repack_fn(scope)

    return recompute_after_cotangent(pure)(variable_groups, rng_groups, *dynamic)

  return lift.pack(inner, (True,), (True,), (True,), name="remat")


def remat(module_cls, static_argnums: tuple[int, ...] = ()):
  """The module class with its __call__ rematerialised (as nn.remat(module_cls,
  static_argnums=...): argument 0 is self, so the first argument after it is 1)."""
  return nn.transforms.lift_transform(
      _lifted, module_cls, static_argnums=tuple(i - 1 for i in static_argnums))
