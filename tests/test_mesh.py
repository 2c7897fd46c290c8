"""Training on a mesh of devices (training/sharding.py) computes what one device computes.

jax in this process has one CPU device; the runs on 4 use a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/mesh_jobs.py), all in one process
to pay jax's start-up once. The reference numbers are the pinned smoke runs of one device
(tests/golden/, checked against the code by test_end_to_end.py and test_contrastive_train.py):
- the MLM smoke run, stopped here at step 3 on one device, resumes on mesh.data=2 x
  mesh.fsdp=2 and logs the pinned losses of steps 4 to 6 (the batch is a function of the
  step, not of the device count; a wrong data order, a batch cut differently or a per-device
  loss would move them far past the tolerance), with kernels and their Adam moments split
  over fsdp by the rule of training/sharding.py;
- its last checkpoint, saved by 4 devices with the state split over fsdp, restores here on
  one device to the values the 4-device run held;
- the exact contrastive gradient with the batch split over 2 x 2 devices equals the
  single-device full-batch gradient, and its compiled program gathers across devices;
- a remat run on 8 devices (data 2 x fsdp 4) logs one device's losses, and its checkpoint
  restores here on one device to the one-device run's parameters.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from entry_points import ENV, ROOT, metric_rows
from mesh_jobs import configured

from training import distributed, mlm
from training.sharding import (batch_sharding, check_batch, local_rows, make_mesh, mesh_shape,
                               param_spec)
from training.tasks import get_task
from utils.errors import ConfigError

MLM = "configs/mlm_extrapolation.py:smoke"
GOLDEN = os.path.join(ROOT, "tests", "golden")


def pinned_rows(name):
  with open(os.path.join(GOLDEN, name)) as f:
    return json.load(f)["metrics"]


def close(rows, expected, rtol=1e-4):
  """Metric rows equal to expected ones, to float noise (another reduction order)."""
  assert [r["step"] for r in rows] == [r["step"] for r in expected]
  for got, want in zip(rows, expected):
    for key, value in want.items():
      if key != "step":
        np.testing.assert_allclose(got[key], value, rtol=rtol, atol=1e-6, err_msg=key)


def mesh_jobs(jobs, devices, stderr=None):
  """Runs tests/mesh_jobs.py with `devices` host devices; returns its results (and appends
  the subprocess's stderr, where XLA logs, to the list `stderr` if one is given)."""
  env = dict(ENV, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={devices}").strip())
  p = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "mesh_jobs.py"),
                      json.dumps(jobs)], cwd=ROOT, env=env, capture_output=True, text=True,
                     timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  if stderr is not None:
    stderr.append(p.stderr)
  return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("mesh")
  config = configured(MLM, {"eval.at_end": False})
  get_task(config).train(config, str(root / "mlm"), progress=False, stop_after=3)
  results = mesh_jobs([
      {"kind": "train", "config": MLM, "workdir": str(root / "mlm"),
       "set": {"eval.at_end": False, "mesh.data": 2, "mesh.fsdp": 2},
       "save_params": str(root / "state.npz")},
      {"kind": "accumulation", "mesh": {"data": 2, "fsdp": 2}},
  ], devices=4)
  return root, results


def test_four_devices_log_the_pinned_losses_of_one(runs):
  root, results = runs
  assert results[0]["devices"] == 4 and results[0]["step"] == 6
  # steps 1-2 ran here on one device, 3-6 on four (after a restore from the 1-device step 3)
  close(metric_rows(root / "mlm"), pinned_rows("smoke_mlm_extrapolation.json"))


def test_parameters_and_moments_are_split_over_fsdp(runs):
  _, results = runs
  specs = results[0]["specs"]
  sharded = {k for k, v in specs.items() if "fsdp" in v}
  assert any(k.startswith(".params") for k in sharded), specs
  assert any(k.startswith(".opt_state") for k in sharded)  # Adam's moments follow the rule
  assert all("fsdp" not in v for k, v in specs.items() if "bias" in k or k == ".step")


def test_a_checkpoint_of_four_devices_restores_on_one(runs):
  root, _ = runs
  config = configured(MLM, {})
  run = mlm.load(str(root / "mlm"))  # the evaluation's restore: every array on this device
  assert run.step == 6
  saved = np.load(root / "state.npz")
  saved = [saved[f"arr_{i}"] for i in range(len(saved.files))]
  params = jax.tree_util.tree_leaves(run.params)
  assert all(len(x.sharding.device_set) == 1 for x in params)
  # the params come first in the train state (step, params, opt_state): step is saved[0]
  assert int(saved[0]) == 6 and config.train.steps == 6
  for got, want in zip(params, saved[1:1 + len(params)]):
    np.testing.assert_array_equal(np.asarray(got), want)


def test_exact_accumulation_sees_the_global_batch(runs):
  _, results = runs
  acc = results[1]
  assert acc["batch_rows_per_device"] == [4] * 4  # 16 examples, split over the 4 devices
  # a loss over each device's own rows only would differ (3 negatives per row, not 15)
  np.testing.assert_allclose(acc["loss"], acc["reference_loss"], rtol=1e-5)
  assert acc["grad_diff"] <= 1e-5 * acc["grad_scale"] + 1e-6
  assert acc["all_gather"]


@pytest.mark.parametrize("shape, fsdp, want", [
    ((16, 32), 2, (None, None)),  # too small to split: replicated
    ((64, 32), 2, ("fsdp", None)),  # the largest dimension
    ((32, 64), 2, (None, "fsdp")),
    ((6, 512), 4, (None, "fsdp")),
    ((512, 6), 4, ("fsdp", None)),
    ((4, 1023), 2, ("fsdp", None)),  # the largest dimension 2 divides
    ((3, 1023), 2, (None, None)),  # none divisible
    ((64, 64), 2, ("fsdp", None)),  # ties: the first
    ((4096,), 1, ()),  # no fsdp axis
])
def test_param_spec(shape, fsdp, want):
  spec = tuple(param_spec(shape, fsdp))
  assert spec + (None,) * (len(want) - len(spec)) == want


def test_mesh_shape_from_the_config():
  assert mesh_shape(None, 8) == (8, 1)  # the default: every device on data
  assert mesh_shape({"data": 0, "fsdp": 2}, 8) == (4, 2)
  assert mesh_shape({"data": 2, "fsdp": 4}, 8) == (2, 4)
  with pytest.raises(ConfigError, match=r"mesh.data=3 x mesh.fsdp=1 = 3 devices, but this run "
                     r"has 8; make the product 8"):
    mesh_shape({"data": 3, "fsdp": 1}, 8)
  with pytest.raises(ConfigError, match="mesh.fsdp=3 does not divide the 8 devices"):
    mesh_shape({"data": 0, "fsdp": 3}, 8)
  with pytest.raises(ConfigError, match="at least"):
    mesh_shape({"data": 1, "fsdp": 0}, 8)


def test_a_wrong_mesh_or_batch_is_one_line_before_training(tmp_path):
  config = configured(MLM, {"mesh.data": 2})
  with pytest.raises(ConfigError, match="= 2 devices, but this run has 1"):
    get_task(config).train(config, str(tmp_path / "run"), progress=False)
  mesh = make_mesh({"data": 1})
  check_batch(5, mesh)  # one device takes any batch
  assert local_rows(batch_sharding(mesh), 5) == slice(0, 5)  # and all its rows


def test_distributed_settings(monkeypatch):
  for var in distributed.ENV.values():
    monkeypatch.delenv(var, raising=False)
  assert distributed.settings() == {}  # one process
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
  monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAX_PROCESS_ID", "3")
  assert distributed.settings() == {"coordinator_address": "10.0.0.1:1234",
                                    "num_processes": 4, "process_id": 3}
  assert distributed.settings(process_id=1)["process_id"] == 1  # a flag wins
  with pytest.raises(ConfigError, match=r"--process_id=4 is not one of the run's 4 processes"):
    distributed.settings(process_id=4)
  monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
  with pytest.raises(ConfigError, match="JAX_NUM_PROCESSES='two' is not an integer"):
    distributed.settings()


def test_remat_on_eight_devices_keeps_activations_split_by_example_and_restores_on_one(tmp_path):
  """model/layout.py: without its constraints XLA's partitioner gave the recomputed
  activations of a remat block (and the embedding's gradient) the layout of an fsdp-split
  kernel and logged "Involuntary full rematerialization" (a full gather, per tensor and step)
  on data=2 x fsdp=4; with them the log is clean and the losses are one device's."""
  values = {"eval.at_end": False, "train.batch_size": 8, "train.steps": 2, "model.remat": True}
  log = []
  mesh_jobs([{"kind": "train", "config": MLM, "workdir": str(tmp_path / "eight"),
              "set": dict(values, **{"mesh.data": 2, "mesh.fsdp": 4})}], devices=8, stderr=log)
  assert "Involuntary full rematerialization" not in log[0], log[0][-2000:]
  config = configured(MLM, values)
  get_task(config).train(config, str(tmp_path / "one"), progress=False)
  close(metric_rows(tmp_path / "eight"), metric_rows(tmp_path / "one"), rtol=1e-5)
  # 8 -> 1: the checkpoint the 8 devices saved with the state split over fsdp=4 restores on
  # this one device to the one-device run's parameters (to the float rounding of 2 steps)
  eight, one = mlm.load(str(tmp_path / "eight")), mlm.load(str(tmp_path / "one"))
  assert eight.step == one.step == 2
  for got, want in zip(jax.tree_util.tree_leaves(eight.params),
                       jax.tree_util.tree_leaves(one.params)):
    assert len(got.sharding.device_set) == 1
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)
