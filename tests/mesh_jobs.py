"""Jobs that need several devices, run in a subprocess whose XLA_FLAGS ask for N host devices
(jax in the pytest process has one): `python tests/mesh_jobs.py JOBS_JSON` runs each job and
prints one JSON line of their results.

Jobs:
- {"kind": "train", "config": "file.py:variants", "set": {"train.steps": 6, ...},
   "workdir": DIR}: trains in this process as train.py would; result: the layout of the
   train state ({path: partition spec} of its arrays) and the device count.
- {"kind": "accumulation", "mesh": {"data": 4, "fsdp": 2}}: the exact contrastive gradient with
   the batch split over the mesh, against the single-device full-batch gradient; result: both
   losses, the largest gradient difference, and the collectives the compiled step holds.
"""
from __future__ import annotations

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import jax  # noqa: E402
import numpy as np  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


def configured(spec: str, values: dict):
  from utils.cli import load_config_file
  config = load_config_file(spec)
  for dotted, value in values.items():
    *path, last = dotted.split(".")
    section = config
    for p in path:
      section = section[p]
    section[last] = value
  return config


def train(job):
  from training.tasks import get_task
  config = configured(job["config"], job.get("set", {}))
  result = get_task(config).train(config, job["workdir"], progress=False)
  leaves = jax.tree_util.tree_leaves_with_path(result.fit.state)
  specs = {jax.tree_util.keystr(path): str(x.sharding.spec) for path, x in leaves}
  if job.get("save_params"):  # the final state's values, to compare a restore with
    np.savez(job["save_params"], *[np.asarray(x) for _, x in leaves])
  return {"devices": jax.device_count(), "step": result.fit.step, "specs": specs}


def accumulation(job):
  import test_accumulation as ta
  from objectives.accumulation import make_grad_fn
  from training import sharding
  from training.contrastive import make_embed
  model = ta._model()
  params = ta._init(model)
  embed, loss = make_embed(model, "supervised"), ta._loss("infonce")
  batch, key = ta._batch(), jax.random.PRNGKey(7)
  one = jax.devices()[0]
  # the reference: the whole batch at once, on one device
  (ref_loss, _), ref = jax.jit(make_grad_fn("none", embed, loss, ta.MICRO))(
      jax.device_put(params, one), jax.device_put(batch, one), key)
  mesh = sharding.make_mesh(job["mesh"])
  layout = sharding.state_shardings(mesh, params)
  step = jax.jit(make_grad_fn("exact", embed, loss, ta.MICRO),
                 in_shardings=(layout, sharding.batch_sharding(mesh), sharding.replicated(mesh)))
  args = (jax.device_put(params, layout), sharding.put_batch(batch, sharding.batch_sharding(mesh)),
          key)
  hlo = step.lower(*args).compile().as_text()
  (value, _), grads = step(*args)
  diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
             for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref)))
  scale = max(float(np.max(np.abs(np.asarray(a)))) for a in jax.tree_util.tree_leaves(ref))
  return {"loss": float(value), "reference_loss": float(ref_loss), "grad_diff": diff,
          "grad_scale": scale, "all_gather": "all-gather" in hlo,
          "batch_rows_per_device": [s.data.shape[0] for s in args[1]["tokens"].addressable_shards]}


JOBS = {"train": train, "accumulation": accumulation}

if __name__ == "__main__":
  out = [JOBS[job["kind"]](job) for job in json.loads(sys.argv[1])]
  print(json.dumps(out))
