"""Where the model's activations live on a device mesh: split by example, like the batch.

Under a mesh (training/sharding.py), XLA's partitioner infers each intermediate's layout from
its neighbours. Inside a rematerialised block (model.remat=true) the recomputed activations
and their gradients border only on fsdp-split kernels, so it can infer a kernel's layout for
them (e.g. the MLP's hidden [b*n, mlp] split along mlp over fsdp); going back to the batch
layout then needs a full gather of the tensor ("Involuntary full rematerialization" in XLA's
log, once per such tensor and per step). Pinning the leading (example, or token-row) axis of a
block's input and of the MLP's hidden activation to the batch axes removes those gathers.

Outside a mesh, or on a one-device mesh, or where the leading axis does not split evenly over
the devices (a small micro-batch), nothing is added, so single-device programs are unchanged.
"""
from __future__ import annotations

import jax
from jax.sharding import PartitionSpec as P

# The mesh axes the batch is split over (training/sharding.py builds its mesh from these).
BATCH_AXES = ("data", "fsdp")


def split_by_example(x):
  """x with its leading axis split over the batch axes of the mesh in context (jax.set_mesh)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not set(BATCH_AXES) <= set(mesh.axis_names):
    return x
  devices = mesh.shape["data"] * mesh.shape["fsdp"]
  if devices == 1 or x.shape[0] % devices:
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


def whole(w):
  """A parameter gathered whole on every device of the mesh in context, before it is used.

  For the token embedding table: its lookup's gradient is a scatter-add of the batch-split
  output gradient. Into a table split over fsdp that needs the whole output gradient on every
  device (a full gather of a [batch, n, width] tensor); into a whole table each device adds
  its own rows and one reduce-scatter of the [vocab, width] gradient follows, as for any
  fsdp-split kernel."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return w
  return jax.lax.with_sharding_constraint(w, P())
