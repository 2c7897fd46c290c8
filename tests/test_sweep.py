"""sweep.py on both experiment configs: filter, run, stop, resume, skip, tabulate.

The MLM sweep runs in the default subprocess mode, the contrastive one in process; both are
called again to show that finished runs are skipped without touching their checkpoints, and
their final tables are checked against the saved evaluations. How a signal reaches the run
in progress is checked in this process, with a stand-in child.
"""
import json
import os
import signal
import statistics
import subprocess

import pytest
from entry_points import checkpoint_steps, metric_rows, run

from configs import contrastive_batch
from training import sweep
from training.loop import stop_requests
from utils.errors import UserError

MLM = "configs/mlm_extrapolation.py"
CONTRASTIVE = "configs/contrastive_batch.py"


def _files(workdir):
  """{path: mtime} of every checkpoint file: a skipped run must not rewrite any of them."""
  out = {}
  for dirpath, _, names in os.walk(os.path.join(workdir, "checkpoints")):
    for n in names:
      out[os.path.join(dirpath, n)] = os.stat(os.path.join(dirpath, n)).st_mtime_ns
  return out


def _table_row(stdout, prefix):
  return next(line for line in stdout.splitlines() if line.startswith(prefix))


def test_plan_filters_with_only_and_prints_train_commands(tmp_path):
  points = sweep.plan(f"{CONTRASTIVE}:smoke", str(tmp_path), "steps=3",
                      ["loss=flatnce", "batch=8+16,seed=0"])
  entries = [e for e in contrastive_batch.sweep()
             if "loss=flatnce," in e and e.endswith("seed=0") and
             (",batch=8," in e or ",batch=16," in e)]
  assert [p.entry for p in points] == entries and entries
  for p in points:
    assert p.config.train.steps == 3 and p.config.loss.name == "flatnce"
    assert p.workdir == os.path.join(str(tmp_path), sweep.run_name(p.entry))
  assert sweep.printed(points[0]) == (f"python train.py --config={CONTRASTIVE}:smoke,steps=3,"
                                      f"{points[0].entry} --workdir={points[0].workdir}")
  # a dotted config path works as a key; an unknown key or an empty selection is refused
  assert len(sweep.plan(MLM, str(tmp_path), "", ["model.scale=logn"])) == 1
  with pytest.raises(UserError, match="neither a variant key nor a config path"):
    sweep.plan(MLM, str(tmp_path), "", ["sclae=logn"])
  with pytest.raises(UserError, match="keeps none of the 2 entries"):
    sweep.plan(MLM, str(tmp_path), "", ["scale=cosine"])


def test_mlm_sweep_runs_skips_and_tabulates(tmp_path):
  root = str(tmp_path / "sweep")
  args = [f"--config={MLM}", f"--root={root}", "--variant=smoke", "--only=scale=logn",
          "--noprogress"]
  w = os.path.join(root, "scale-logn")
  p = run("sweep.py", *args)  # one train.py subprocess
  assert f"[1/1] {w} <- {MLM}:smoke,scale=logn" in p.stderr
  assert [r["step"] for r in metric_rows(w)] == [2, 4, 6]
  with open(os.path.join(w, "eval.json")) as f:
    evaluation = json.load(f)
  assert evaluation["step"] == 6
  row = _table_row(p.stdout, "| scale-logn (rope, logn) |")
  assert row.split("|")[2:4] == [f" {100 * evaluation['lengths'][n]['accuracy']:.2f} "
                                 for n in ("32", "64")]

  before = _files(w)
  p = run("sweep.py", *args)
  assert f"[1/1] {w}: finished, skipped" in p.stderr
  assert _files(w) == before and _table_row(p.stdout, "| scale-logn") == row


def test_signals_reach_the_run_in_progress(tmp_path):
  # subprocess mode: the signal is remembered and passed on to the train.py in progress
  default = signal.getsignal(signal.SIGTERM)
  state = {"signal": None}
  child = subprocess.Popen(["sleep", "60"])
  with sweep.forwarded_signals(state):
    state["child"] = child
    os.kill(os.getpid(), signal.SIGTERM)
    assert child.wait(timeout=30) == -signal.SIGTERM
  assert state["signal"] == "SIGTERM"
  # in process: the sweep's flag is the one every run's loop checks, so a signal between two
  # runs (or while one loads its data) stops the next step
  with stop_requests() as outer:
    with stop_requests() as inner:
      assert inner is outer
    os.kill(os.getpid(), signal.SIGTERM)
    assert outer["signal"] == "SIGTERM"
  assert signal.getsignal(signal.SIGTERM) is default  # put back on the way out


def test_contrastive_sweep_in_process_groups_seeds(tmp_path):
  root = str(tmp_path / "sweep")
  args = [f"--config={CONTRASTIVE}", f"--root={root}", "--variant=smoke", "--in_process",
          "--only=loss=infonce,accumulation=none,batch=16", "--noprogress"]
  p = run("sweep.py", *args)
  dirs = [os.path.join(root, f"loss-infonce_accumulation-none_batch-16_seed-{s}") for s in (0, 1)]
  values = []
  for d in dirs:
    with open(os.path.join(d, "sts_eval.json")) as f:
      values.append(100 * json.load(f)["synthetic"]["spearman"])
  assert values[0] != values[1]  # two seeds, two runs
  assert "STS Spearman x100 on synthetic, mean ± std over seeds:" in p.stdout
  assert _table_row(p.stdout, "| loss |") == "| loss | accumulation | 16 |"
  assert _table_row(p.stdout, "| infonce |") == (
      f"| infonce | none | {statistics.mean(values):.1f} ± {statistics.stdev(values):.1f} |")

  before = [_files(d) for d in dirs]
  p = run("sweep.py", *args)
  assert p.stderr.count("finished, skipped") == 2
  assert [_files(d) for d in dirs] == before and checkpoint_steps(dirs[0]) == [6]


def test_a_failed_run_stops_the_sweep_in_one_line(tmp_path):
  root = str(tmp_path / "sweep")
  p = run("sweep.py", f"--config={MLM}", f"--root={root}", "--in_process",
          "--variant=smoke,corpus=/nonexistent/corpus.txt", check=False)
  assert p.returncode == 2 and "Traceback" not in p.stderr
  lines = [line for line in p.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1
  assert lines[0].startswith(f"error: {os.path.join(root, 'scale-standard')} failed (exit 2): ")
  assert "does not exist" in lines[0] and "scale-logn" not in p.stderr  # stopped at the first
