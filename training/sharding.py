"""The device mesh of a run and how every array of training is laid out on it, in one place.

The mesh has two axes, both from the config (mesh.data x mesh.fsdp = the device count):
- data: the batch is split over it (plain data parallelism);
- fsdp: the batch is split over it too, and so are the parameters and the optimizer state
  (fully sharded data parallelism): each array is cut along its largest dimension that fsdp
  divides; arrays too small to be worth cutting, or with no such dimension, are replicated.
The rule reads only an array's shape, so a parameter and its Adam moments get the same layout.

Everything else (the step counter, the seed key, the metrics) is replicated. Under jit, XLA's
partitioner (GSPMD) inserts the collectives: an all-gather of an fsdp-sharded kernel before it
is used, the reduction of its gradient, the gather of the embeddings that a contrastive
loss needs from every device. The model code is unchanged: the mesh axes are of type Auto
(named explicitly): with Explicit axes an einsum whose operands are split in conflicting ways
(a batch-split activation times an fsdp-split kernel) must be told its output's sharding.

The batch is the same global batch for any device count (the data pipeline is a function of
the step), so a run's losses do not depend on how many devices it runs on.
"""
from __future__ import annotations

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from model.layout import BATCH_AXES
from utils.errors import ConfigError

AXES = BATCH_AXES  # the model pins activations to these too (model/layout.py)
BATCH = P(AXES)  # the leading (example) axis of every batch array over both axes
REPLICATED = P()
# arrays with fewer elements stay whole on every device: the gather of a bias or a norm scale
# costs more than the memory it saves
MIN_SHARDED_SIZE = 1024

DEFAULTS = dict(data=0, fsdp=1)  # data=0: every device that fsdp leaves


def mesh_shape(mesh_cfg, device_count: int) -> tuple[int, int]:
  """(data, fsdp) of a config's mesh section (None: all devices on data), checked against
  the device count."""
  cfg = dict(DEFAULTS, **(dict(mesh_cfg) if mesh_cfg is not None else {}))
  data, fsdp = int(cfg["data"]), int(cfg["fsdp"])
  if fsdp < 1 or data < 0:
    raise ConfigError(f"mesh.fsdp must be at least 1 and mesh.data at least 0 (0: the devices "
                      f"fsdp leaves), got mesh.data={data}, mesh.fsdp={fsdp}")
  if data == 0:
    if device_count % fsdp:
      raise ConfigError(f"mesh.fsdp={fsdp} does not divide the {device_count} devices of this "
                        "run; pick a divisor of the device count")
    data = device_count // fsdp
  if data * fsdp != device_count:
    raise ConfigError(f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} devices, but this "
                      f"run has {device_count}; make the product {device_count} (or set "
                      "mesh.data=0 to put every device fsdp leaves on data)")
  return data, fsdp


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  """The run's mesh over `devices` (default: all of them, every process's)."""
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  # Auto, named rather than left to the default: the partitioner places what the code does
  # not (see the module docstring)
  types = (jax.sharding.AxisType.Auto,) * len(AXES)
  # devices in jax's order (by process, then id): each process's devices are one block of the
  # data axis, so its share of a batch is contiguous rows
  return Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=types)


def param_spec(shape, fsdp: int) -> P:
  """The layout of one parameter (or optimizer-state) array: its largest dimension that fsdp
  divides is cut over fsdp (the first of equal ones); small or indivisible arrays are whole."""
  if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < MIN_SHARDED_SIZE:
    return REPLICATED
  candidates = [i for i, n in enumerate(shape) if n % fsdp == 0]
  if not candidates:
    return REPLICATED
  axis = max(candidates, key=lambda i: (shape[i], -i))
  return P(*[("fsdp" if i == axis else None) for i in range(len(shape))])


def state_shardings(mesh: Mesh, tree):
  """NamedShardings for a tree of arrays (or ShapeDtypeStructs): the train state."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, param_spec(x.shape, fsdp)), tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, BATCH)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, REPLICATED)


def check_batch(batch_size: int, mesh: Mesh, what: str = "train.batch_size") -> None:
  devices = mesh.devices.size
  if batch_size % devices:
    raise ConfigError(f"{what}={batch_size} does not split over the mesh's {devices} devices "
                      f"(mesh.data={mesh.shape['data']} x mesh.fsdp={mesh.shape['fsdp']}); use "
                      f"a multiple of {devices}")


def local_rows(sharding: NamedSharding, global_rows: int) -> slice:
  """The rows of a global batch whose shards live on this process's devices (one block)."""
  shape = (global_rows,)
  starts = sorted({idx[0].indices(global_rows)[:2]
                   for idx in sharding.addressable_devices_indices_map(shape).values()})
  lo, hi = starts[0][0], starts[-1][1]
  covered = sum(b - a for a, b in starts)
  if covered != hi - lo:  # jax.devices() order makes this a block; a custom order may not
    raise ValueError(f"this process's batch rows are not one block: {starts}")
  return slice(lo, hi)


def put_batch(batch, sharding: NamedSharding):
  """The global batch (numpy, a tree of arrays with the example axis first) as arrays laid
  out over the mesh. Each process uploads only its own rows; with one process that is all."""
  rows = jax.tree_util.tree_leaves(batch)[0].shape[0]
  share = local_rows(sharding, rows)

  def put(x):
    return jax.make_array_from_process_local_data(sharding, np.asarray(x)[share], x.shape)

  return jax.tree_util.tree_map(put, batch)
