"""sweep.py on both experiment configs: filter, run, stop, resume, skip, tabulate.

The MLM sweep runs in the default subprocess mode and is stopped by SIGTERM while its run
trains; the contrastive one runs in process. Both are called again to show that finished runs
are skipped without touching their checkpoints, and their final tables are checked against
the saved evaluations.
"""
import json
import os
import signal
import statistics
import subprocess
import time

import pytest
from entry_points import ENV, ROOT, checkpoint_steps, command, metric_rows, run

from configs import contrastive_batch
from training import sweep
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


def test_mlm_sweep_stops_resumes_skips_and_tabulates(tmp_path):
  root = str(tmp_path / "sweep")
  args = [f"--config={MLM}", f"--root={root}", "--variant=smoke,steps=12", "--only=scale=logn",
          "--noprogress"]
  w = os.path.join(root, "scale-logn")
  p = subprocess.Popen(command("sweep.py", *args), cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(w, "metrics.jsonl")) or not metric_rows(w):
    assert time.time() < deadline and p.poll() is None, p.communicate()
    time.sleep(0.05)
  p.send_signal(signal.SIGTERM)  # to the sweep, which passes it on to its train.py
  _, err = p.communicate(timeout=120)
  assert p.returncode == 0, err
  stopped = "stopped by SIGTERM; rerun the same command to resume" in err
  if stopped:  # (the run may have finished all 12 steps before the signal)
    assert not os.path.exists(os.path.join(w, "eval.json"))

  p = run("sweep.py", *args)
  assert ("resuming from step" in p.stderr) == stopped
  assert [r["step"] for r in metric_rows(w)] == [2, 4, 6, 8, 10, 12]
  with open(os.path.join(w, "eval.json")) as f:
    evaluation = json.load(f)
  assert evaluation["step"] == 12
  row = _table_row(p.stdout, "| scale-logn (rope, logn) |")
  assert row.split("|")[2:4] == [f" {100 * evaluation['lengths'][n]['accuracy']:.2f} "
                                 for n in ("32", "64")]

  before = _files(w)
  p = run("sweep.py", *args)
  assert f"[1/1] {w}: finished, skipped" in p.stderr
  assert _files(w) == before and _table_row(p.stdout, "| scale-logn") == row


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
