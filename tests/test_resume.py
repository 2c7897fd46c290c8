"""Resume that lets a run grow (training/workdir.py): which changes a resumed run may make.

The entry-point test trains the MLM smoke config to 6 steps, then reruns it with
train.steps=12 (the step count whose program the failure-mode tests compile already: the
schedule's constants are part of it): the run continues from its checkpoint, keeps its first
rows byte for byte and follows the learning-rate schedule of the new step count (checked
against optax's schedule formulas written out here). The unit tests drive
training.workdir.prepare directly.
"""
import json
import math
import os

import ml_collections
import numpy as np
import pytest
from entry_points import checkpoint_steps, run

from configs import contrastive_batch, mlm_extrapolation
from training import contrastive, mlm
from training import workdir as wd
from training.workdir import WorkdirError

CONFIG = "configs/mlm_extrapolation.py:smoke"


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


def _cosine_lr(step, peak, warmup, steps):
  """The schedule of training/optimizer.py at update `step` (0-based): linear warmup from 0,
  then cosine decay to 0 over the remaining steps (optax.join_schedules + cosine_decay)."""
  if step < warmup:
    return peak * step / warmup
  return peak * 0.5 * (1 + math.cos(math.pi * min(step - warmup, steps - warmup) /
                                    (steps - warmup)))


def test_raising_steps_on_a_finished_run_continues_it(tmp_path):
  w = str(tmp_path / "run")
  run("train.py", f"--config={CONFIG}", f"--workdir={w}", "--progress=false")
  before = _lines(w)
  assert [json.loads(r)["step"] for r in before] == [2, 4, 6]
  assert checkpoint_steps(w)[-1] == 6
  config = mlm_extrapolation.get_config("smoke")
  assert mlm.TASK.finished(w, config)
  with config.unlocked():
    config.train.steps = 12
  assert not mlm.TASK.finished(w, config)  # the requested config, not the workdir's

  p = run("train.py", f"--config={CONFIG}", f"--workdir={w}", "--progress=false",
          "--config.train.steps=12")
  assert (f"resuming from step 6 of {w}: train.steps 6 -> 12 (the learning-rate schedule "
          "follows the new train.steps from here on)") in p.stderr
  after = _lines(w)
  assert after[:3] == before  # rows 2..6 untouched, byte for byte
  rows = [json.loads(r) for r in after]
  assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
  t = config.train
  for r in rows[3:]:  # logged at step s: the rate of update s - 1, on the 12-step schedule
    assert r["learning_rate"] == pytest.approx(
        _cosine_lr(r["step"] - 1, t.learning_rate, t.warmup_steps, 12), rel=1e-5)
  assert checkpoint_steps(w)[-1] == 12
  with open(os.path.join(w, "eval.json")) as f:
    assert json.load(f)["step"] == 12
  with open(os.path.join(w, "config.json")) as f:
    assert json.load(f)["train"]["steps"] == 12
  assert mlm.TASK.finished(w, config)
  assert "step 12:" in p.stdout

  # a change outside the allow-list is refused, naming the key; nothing is touched
  p = run("train.py", f"--config={CONFIG}", f"--workdir={w}", "--progress=false",
          "--config.train.steps=12", "--config.model.width=64", check=False)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  assert "different config (model.width 32 -> 64" in p.stderr and "--overwrite" in p.stderr
  assert _lines(w) == after and checkpoint_steps(w)[-1] == 12


def _saved_run(tmp_path, config, checkpoint=None):
  w = str(tmp_path / "w")
  wd.prepare(w, config)
  if checkpoint is not None:  # what latest_step reads: a finished checkpoint's directory
    os.makedirs(os.path.join(w, "checkpoints", str(checkpoint)))
  return w


def _mlm(variant="smoke", **train):
  config = mlm_extrapolation.get_config(variant)
  config.train.update(train)
  return config


def test_allowed_changes_are_returned_and_written(tmp_path):
  w = _saved_run(tmp_path, _mlm(), checkpoint=6)
  new = _mlm(steps=20, log_every=5, keep_checkpoints=3)
  new.eval.lengths = (32,)
  changes = wd.prepare(w, new)
  assert changes == [("eval.lengths", [32, 64], [32]), ("train.keep_checkpoints", 2, 3),
                     ("train.log_every", 2, 5), ("train.steps", 6, 20)]
  assert wd.load_config(w).train.steps == 20 and list(wd.load_config(w).eval.lengths) == [32]
  assert "train.steps 6 -> 20 (the learning-rate schedule" in wd.describe_changes(changes)
  assert wd.prepare(w, new) == []  # the same config again: nothing changes


def test_forbidden_changes_name_every_differing_key(tmp_path):
  w = _saved_run(tmp_path, _mlm())
  new = _mlm(steps=20, learning_rate=0.5)
  new.model.width = 64
  with pytest.raises(WorkdirError) as e:
    wd.prepare(w, new)
  message = str(e.value)
  assert "model.width 32 -> 64" in message and "train.learning_rate 0.001 -> 0.5" in message
  assert "train.steps" not in message.split(";")[0]  # allowed: not among the differences
  assert wd.load_config(w).model.width == 32  # config.json untouched


def test_steps_below_the_latest_checkpoint_are_refused(tmp_path):
  w = _saved_run(tmp_path, _mlm(steps=12), checkpoint=9)
  with pytest.raises(WorkdirError, match=r"train.steps=8 is below the latest checkpoint .*step 9"):
    wd.prepare(w, _mlm(steps=8))
  assert wd.prepare(w, _mlm(steps=9)) == [("train.steps", 12, 9)]  # down to the checkpoint


def test_a_run_from_before_split_seed_resumes_only_where_it_split_the_same(tmp_path):
  """Before data.split_seed the held-out split used the run's seed: a seed-0 run lacking
  the key resumes under split_seed=0; a seed-1 run split with 1, which is a change."""
  for seed, refused in ((0, False), (1, True)):
    config = _mlm()
    config.seed = seed
    w = _saved_run(tmp_path / str(seed), config)
    saved = wd.config_to_dict(config)
    del saved["data"]["split_seed"]
    with open(os.path.join(w, "config.json"), "w") as f:
      json.dump(saved, f)
    if refused:
      with pytest.raises(WorkdirError, match="data.split_seed null -> 0"):
        wd.prepare(w, config)
    else:
      assert wd.prepare(w, config) == []


def test_a_field_added_later_is_no_difference_at_its_default(tmp_path):
  w = _saved_run(tmp_path, _mlm())
  saved = wd.config_to_dict(_mlm())
  default = saved["model"].pop("rope_base")  # as if the run predates the field
  with open(os.path.join(w, "config.json"), "w") as f:
    json.dump(saved, f)
  assert wd.prepare(w, _mlm()) == []
  changed = _mlm()
  changed.model.rope_base = default * 2
  with open(os.path.join(w, "config.json"), "w") as f:
    json.dump(saved, f)
  with pytest.raises(WorkdirError, match="model.rope_base null -> 20000"):
    wd.prepare(w, changed)


def test_mesh_section_may_change():
  old = wd.config_to_dict(_mlm())
  new = dict(old, mesh={"data": 2, "fsdp": 4})
  assert wd.config_changes(old, new) == ([("mesh.data", 0, 2), ("mesh.fsdp", 1, 4)], [])
  # a run from before the mesh section ran as the defaults run (all devices on data)
  before = {k: v for k, v in old.items() if k != "mesh"}
  assert wd.differences(before, old) == []
  assert wd.config_changes(before, new)[0] == [("mesh.data", None, 2), ("mesh.fsdp", None, 4)]


def test_contrastive_eval_settings_may_change_and_unfinish_the_run(tmp_path):
  config = contrastive_batch.get_config("smoke")
  w = _saved_run(tmp_path, config, checkpoint=6)
  with open(os.path.join(w, "sts_eval.json"), "w") as f:
    json.dump({"synthetic": {"step": 6, "sts": "synthetic", "split": "", "whitening_k": None,
                             "whitening_corpus": "", "pairs": 64, "spearman": 0.5}}, f)
  assert contrastive.TASK.finished(w, config)
  whitened = contrastive_batch.get_config("smoke,whitening=true")
  assert not contrastive.TASK.finished(w, whitened)  # its end-of-run score is not there
  assert wd.prepare(w, whitened) == [("eval.whitening", False, True)]


def test_the_held_out_split_is_the_same_for_every_training_seed():
  a, b = _mlm(), _mlm()
  b.seed = 1
  assert np.array_equal(mlm.prepare_data(a).valid_stream, mlm.prepare_data(b).valid_stream)
  b.data.split_seed = 1
  assert not np.array_equal(mlm.prepare_data(a).valid_stream, mlm.prepare_data(b).valid_stream)
  # a run from before data.split_seed: split with its own seed, as it was
  legacy = wd.config_to_dict(_mlm())
  legacy["seed"] = 1
  del legacy["data"]["split_seed"]
  assert np.array_equal(mlm.prepare_data(ml_collections.ConfigDict(legacy)).valid_stream,
                        mlm.prepare_data(b).valid_stream)
