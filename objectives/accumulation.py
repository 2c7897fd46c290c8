"""Gradients of a contrastive loss over a batch processed in micro-batches.

A contrastive loss couples every row of the batch to every other (each row's negatives are the
others' embeddings), so the large-batch gradient is NOT the average of micro-batch gradients
(docs/techniques.md section 6).
Three modes, each a grad_fn(params, batch, key) -> ((loss, metrics), grads) for
training.step.make_train_step:

- none: the whole batch at once (the reference; memory grows with the batch).
- exact: (1) embed every micro-batch without gradients; (2) g = dL/dh for all embeddings at
  once; (3) re-embed each micro-batch with gradients and backpropagate sum <h, stop_grad(g)>;
  the parameter gradients add up to the full-batch gradient. Memory is that of one micro-batch
  (plus the [batch, dim] embeddings); time is one extra forward pass. With the batch split over
  devices (training/sharding.py) the loss of (2) still sees the embeddings of the whole global
  batch (the partitioner gathers them), and the gradient is the single-device one.
- naive: the mean of micro-batch losses, each with only its own micro-batch as negatives; the
  common mistake, kept for comparison.

The model side is `embed(params, batch, keys) -> (h, aux)`: h [m, ...] the embeddings of m
examples, aux None or the sum over the m examples of a per-example loss that needs no other
example (SimBERT's generation loss); the total loss is loss(h) + aux / batch_size. `keys` [m]
holds one dropout key per example, a function of (step key, index in the full batch) only, so
an example is dropped out identically in every pass and in every mode: that is what makes
`exact` exact with dropout on.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from utils.errors import ConfigError

MODES = ("none", "exact", "naive")


def batch_size_of(batch) -> int:
  return jax.tree_util.tree_leaves(batch)[0].shape[0]


def example_keys(key, b: int):
  """One key per example of the full batch: fold_in(key, index)."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(b))


def _split(tree, k: int, strided: bool = False):
  """Leading axis b -> [k, b // k] (micro-batch index first): micro-batch j holds examples
  j * b/k ... (j + 1) * b/k - 1, or with strided examples j, j + k, j + 2k, ..."""
  if strided:
    return jax.tree_util.tree_map(
        lambda x: jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1), tree)
  return jax.tree_util.tree_map(lambda x: x.reshape((k, x.shape[0] // k) + x.shape[1:]), tree)


def _merge(x, strided: bool = False):
  """The inverse of _split for one array: [k, b // k, ...] -> [b, ...] in example order."""
  if strided:
    x = jnp.swapaxes(x, 0, 1)
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def _micro_batches(batch, key, micro_batch: int, strided: bool = False):
  """(b, k, (batch, keys) split into k micro-batches along a new leading axis)."""
  b = batch_size_of(batch)
  k = num_micro_batches(b, micro_batch)
  return b, k, (_split(batch, k, strided), _split(example_keys(key, b), k, strided))


def _total(embed, loss, b: int):
  """params, batch, keys -> (loss(h) + aux / b, metrics): the loss of one (micro-)batch."""

  def fn(params, batch, keys):
    h, aux = embed(params, batch, keys)
    value, metrics = loss(h)
    if aux is not None:
      metrics = dict(metrics, contrastive=value, aux=aux / b)
      value = value + aux / b
    return value, metrics

  return fn


def _mode_none(embed, loss, micro_batch):
  del micro_batch

  def grad_fn(params, batch, key):
    b = batch_size_of(batch)
    fn = jax.value_and_grad(_total(embed, loss, b), has_aux=True)
    return fn(params, batch, example_keys(key, b))

  return grad_fn


def _mode_exact(embed, loss, micro_batch):

  def grad_fn(params, batch, key):
    # The micro-batches are strided: a batch split over devices (training/sharding.py) holds
    # consecutive examples on each device, so micro-batch j (examples j, j + k, ...) takes
    # rows from every device and all devices work on every micro-batch. The gradient does not
    # depend on how the batch is cut, which is what makes this mode exact.
    b, k, parts = _micro_batches(batch, key, micro_batch, strided=True)
    # (1) embeddings of the whole batch, one micro-batch at a time, no gradients kept
    frozen = jax.lax.stop_gradient(params)
    h, aux = jax.lax.map(lambda x: embed(frozen, *x), parts)
    # (2) sees the whole batch: under jit with the batch split over devices, the partitioner
    # gathers every device's embeddings here, so every row's negatives are the global batch's
    h = _merge(h, strided=True)
    # (2) dL/dh for every embedding, through the loss over the whole batch
    (value, metrics), g = jax.value_and_grad(loss, has_aux=True)(h)
    if aux is not None:
      aux = jnp.sum(aux) / b
      metrics = dict(metrics, contrastive=value, aux=aux)
      value = value + aux
    g = _split(g, k, strided=True)

    # (3) re-embed with gradients; <h, g> has gradient (dh/dparams)^T g = the chain rule
    def surrogate(p, micro, keys, g_micro):
      h_micro, aux_micro = embed(p, micro, keys)
      s = jnp.sum(h_micro.astype(jnp.float32) * g_micro.astype(jnp.float32))
      return s if aux_micro is None else s + aux_micro / b

    def body(acc, x):
      grads = jax.grad(surrogate)(params, *x)
      return jax.tree_util.tree_map(jnp.add, acc, grads), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    grads, _ = jax.lax.scan(body, zeros, parts + (jax.lax.stop_gradient(g),))
    return (value, metrics), grads

  return grad_fn


def _mode_naive(embed, loss, micro_batch):

  def grad_fn(params, batch, key):
    b, k, parts = _micro_batches(batch, key, micro_batch)
    fn = jax.value_and_grad(_total(embed, loss, b // k), has_aux=True)

    def body(acc, x):
      out = fn(params, *x)
      return jax.tree_util.tree_map(jnp.add, acc, out), None

    first = jax.tree_util.tree_map(lambda a: a[0], parts)
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                   jax.eval_shape(fn, params, *first))
    total, _ = jax.lax.scan(body, zeros, parts)
    return jax.tree_util.tree_map(lambda a: a / k, total)

  return grad_fn


GRAD_FNS = {"none": _mode_none, "exact": _mode_exact, "naive": _mode_naive}


def num_micro_batches(b: int, micro_batch: int) -> int:
  if micro_batch <= 0 or micro_batch >= b:
    return 1
  if b % micro_batch:
    raise ConfigError(f"batch size {b} is not a multiple of the micro-batch {micro_batch}; "
                      "pick a micro-batch that divides the batch")
  return b // micro_batch


def make_grad_fn(mode: str, embed: Callable, loss: Callable, micro_batch: int) -> Callable:
  """grad_fn(params, batch, key) -> ((loss, metrics), grads) for accumulation `mode`."""
  if mode not in GRAD_FNS:
    raise ConfigError(f"unknown accumulation {mode!r}; valid names: {list(MODES)}")
  return GRAD_FNS[mode](embed, loss, micro_batch)
