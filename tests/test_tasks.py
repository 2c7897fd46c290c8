"""The task interface (training/tasks.py) and the tasks' workdir-level pieces, in process.

The registry is checked on the real package and on a throwaway package holding a new task
(a task is new files only); "finished" on workdirs laid out by hand; the contrastive study's
grouping and its table against hand-computed means and standard deviations.
"""
import json
import os
import statistics
import sys

import pytest

from configs import contrastive_batch, mlm_extrapolation
from evaluation.tables import seed_table
from model.config import field_defaults
from training import contrastive, mlm, ner, pet, tasks
from training import workdir as wd
from utils.errors import ConfigError, UserError

MEMBERS = ("name", "eval_options", "check_config", "train", "evaluate", "describe", "load",
           "finished", "report", "table")


def test_registry_finds_the_task_modules_and_refuses_unknown_names():
  assert tasks.task_names() == ("contrastive", "mlm", "ner", "pet")
  assert tasks.get_task(mlm_extrapolation.get_config("smoke")) is mlm.TASK
  assert tasks.get_task(contrastive_batch.get_config("smoke")) is contrastive.TASK
  with pytest.raises(ConfigError, match=r"unknown task 'mlm2'; valid names: \['contrastive', "
                     r"'mlm', 'ner', 'pet'\]"):
    tasks.task_by_name("mlm2")


@pytest.mark.parametrize("task", [mlm.TASK, contrastive.TASK, ner.TASK, pet.TASK],
                         ids=lambda t: t.name)
def test_every_task_implements_the_interface(task):
  assert isinstance(task, tasks.Task)
  for member in MEMBERS:
    assert getattr(task, member, None) is not None, member
  assert set(mlm.TASK.eval_options).isdisjoint(contrastive.TASK.eval_options)


def test_a_new_task_is_a_new_module(tmp_path, monkeypatch):
  pkg = tmp_path / "toy_tasks"
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "helper.py").write_text("TASKS = 1\n\ndef f():\n  TASK = 2\n")  # not declarations
  (pkg / "toy.py").write_text("class Toy:\n  name = 'toy'\n\n\nTASK = Toy()\n")
  (pkg / "copied.py").write_text("class Toy:\n  name = 'toy'\n\n\nTASK: object = Toy()\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  monkeypatch.setattr(tasks, "PACKAGE", "toy_tasks")
  tasks.task_names.cache_clear()
  try:
    assert tasks.task_names() == ("copied", "toy")
    assert tasks.task_by_name("toy").name == "toy"
    with pytest.raises(ConfigError, match="declares a task named 'toy'"):
      tasks.task_by_name("copied")
  finally:
    tasks.task_names.cache_clear()
    for name in ("toy_tasks", "toy_tasks.toy", "toy_tasks.copied"):
      sys.modules.pop(name, None)


def _workdir(tmp_path, config, checkpoint, files=None):
  w = str(tmp_path / "w")
  wd.prepare(w, config)
  os.makedirs(os.path.join(w, "checkpoints", str(checkpoint)))
  for name, content in (files or {}).items():
    with open(os.path.join(w, name), "w") as f:
      json.dump(content, f)
  return w


def _eval(step, lengths=("32", "64"), refused=()):
  return {"step": step, "lengths": {n: {"accuracy": 0.5, "loss": 1.0} for n in lengths},
          "refused": list(refused)}


@pytest.mark.parametrize("checkpoint, evaluation, expected", [
    (6, _eval(6), True),
    (4, _eval(4), False),  # stopped before the end
    (6, None, False),  # trained, but its evaluation never ran (killed while evaluating)
    (6, _eval(4), False),  # an evaluation of an older checkpoint
    (6, _eval(6, lengths=("32",)), False),  # does not cover eval.lengths
    (6, _eval(6, lengths=("32",), refused=(64,)), True),  # 64 refused counts as covered
])
def test_mlm_finished(tmp_path, checkpoint, evaluation, expected):
  config = mlm_extrapolation.get_config("smoke")
  w = _workdir(tmp_path, config, checkpoint, {"eval.json": evaluation} if evaluation else {})
  assert mlm.TASK.finished(w, config) is expected
  assert mlm.TASK.finished(w) is expected  # with the workdir's own config
  other = mlm_extrapolation.get_config("smoke,width=64")
  assert not mlm.TASK.finished(w, other)  # another run's config: not this one finished


def test_mlm_finished_without_an_end_of_run_evaluation(tmp_path):
  config = mlm_extrapolation.get_config("smoke")
  config.eval.at_end = False
  assert mlm.TASK.finished(_workdir(tmp_path, config, 6), config)


def test_overrides_only_of_evaluation_time_fields():
  config = mlm_extrapolation.get_config("smoke")
  changed = mlm.apply_overrides(config, ["scale=standard", "model.rope_scaling_factor=8"])
  assert changed.model.scale == "standard" and changed.model.rope_scaling_factor == 8.0
  assert config.model.scale == "logn"  # a copy
  with pytest.raises(UserError, match="KEY one of"):
    mlm.apply_overrides(config, ["width=64"])


def _row(loss, mode, batch, seed, spearman, micro=4, lr=1e-3):
  return dict(loss=loss, mode=mode, batch=batch, micro=micro, seed=seed, spearman=spearman,
              workdir=f"{loss}_{mode}_{batch}_{seed}", name="synthetic",
              compared={"train.learning_rate": lr})


def test_study_cells_group_seeds_and_share_single_micro_batch_runs():
  rows = [_row("infonce", "none", 8, 0, 60.0), _row("infonce", "none", 8, 1, 64.0),
          _row("infonce", "exact", 8, 0, 61.0), _row("infonce", "exact", 8, 1, 63.0),
          _row("infonce", "none", 4, 0, 50.0)]  # batch 4 = one micro-batch: every mode
  cells = contrastive.study_cells(rows)
  assert cells == {("infonce", "none", 8): [60.0, 64.0], ("infonce", "exact", 8): [61.0, 63.0],
                   ("infonce", "none", 4): [50.0], ("infonce", "exact", 4): [50.0]}
  assert contrastive.mode_gap(rows).startswith("accumulation=none vs exact: 2 paired runs")
  assert "|difference| 1.000" in contrastive.mode_gap(rows)
  with pytest.raises(UserError, match="differ in train.learning_rate"):
    contrastive.study_cells(rows + [_row("infonce", "none", 8, 2, 70.0, lr=1e-2)])
  # a run from before a model field existed is the same run as one with it at its default
  newer = _row("infonce", "none", 8, 2, 70.0)
  newer["compared"]["model.window"] = field_defaults()["window"]
  assert contrastive.study_cells(rows + [newer])[("infonce", "none", 8)] == [60.0, 64.0, 70.0]
  newer["compared"]["model.window"] = 7
  with pytest.raises(UserError, match="differ in model.window"):
    contrastive.study_cells(rows + [newer])


def test_seed_table_mean_std_and_counts():
  cells = {("flatnce", "none", 8): [60.0, 64.0], ("flatnce", "none", 16): [70.0, 71.0],
           ("flatnce", "exact", 8): [61.0, 62.0, 66.0], ("infonce", "none", 16): [50.0, 52.0]}
  lines = seed_table(cells, ["loss", "accumulation"],
                     row_order=lambda k: (k[0], ["none", "exact"].index(k[1]))).splitlines()
  assert lines[0] == "| loss | accumulation | 8 | 16 |"
  sd = statistics.stdev
  assert lines[2] == f"| flatnce | none | 62.0 ± {sd([60, 64]):.1f} | 70.5 ± {sd([70, 71]):.1f} |"
  assert lines[3] == f"| flatnce | exact | 63.0 ± {sd([61, 62, 66]):.1f} (n=3) | - |"
  assert lines[4] == f"| infonce | none | - | 51.0 ± {sd([50, 52]):.1f} |"
  # a single seed has no spread: its n, never '± 0.0', even where every cell has one seed
  assert seed_table({("a", 8): [60.0], ("b", 8): [61.0, 63.0]}, ["loss"]).splitlines()[2] == \
      "| a | 60.0 (n=1) |"
  assert seed_table({("a", 8): [60.0]}, ["loss"]).splitlines()[2] == "| a | 60.0 (n=1) |"
