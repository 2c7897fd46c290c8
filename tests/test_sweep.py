"""sweep.py on both experiment configs: filter, run, stop, resume, skip, tabulate, schedule.

The MLM sweep's run is trained by the sbatch script that --slurm writes (run with bash, as an
array task), then skipped by a --jobs sweep; the contrastive one runs in process; both show
that finished runs are skipped without touching their checkpoints, and their final tables are
checked against the saved evaluations. Grids are checked against their entries written out;
--jobs's scheduling and how a signal reaches the runs in progress are checked in this
process, with stand-in children.
"""
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
from entry_points import ENV, ROOT, call_main, checkpoint_steps, metric_rows, run

from configs import contrastive_batch, mlm_extrapolation
from configs.common import Grid
from training import sweep
from training.loop import stop_requests
from utils.errors import ConfigError, UserError

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
  assert len(sweep.plan(MLM, str(tmp_path), "", ["model.scale=logn"], "seeds")) == 3
  with pytest.raises(UserError, match="neither a variant key nor a config path"):
    sweep.plan(MLM, str(tmp_path), "", ["sclae=logn"])
  with pytest.raises(UserError, match="keeps none of the 6 entries"):
    sweep.plan(MLM, str(tmp_path), "", ["scale=cosine"], "seeds")


def test_grids_expand_in_their_documented_order():
  grid = Grid(axes={"a": [1, 2], "b": ["x", "y"]}, seeds=[0, 1])
  assert grid.entries() == [  # the seed slowest, then the axes in order, the last fastest
      "a=1,b=x,seed=0", "a=1,b=y,seed=0", "a=2,b=x,seed=0", "a=2,b=y,seed=0",
      "a=1,b=x,seed=1", "a=1,b=y,seed=1", "a=2,b=x,seed=1", "a=2,b=y,seed=1"]
  assert Grid(axes={"remat": [True], "lengths": [(64, 128)]}).entries() == [
      "remat=true,lengths=64+128"]  # no seeds: the config's own; values as variants write them
  with pytest.raises(ConfigError, match="have no values"):
    Grid(axes={"scale": []})
  with pytest.raises(ConfigError, match="seeds="):
    Grid(axes={"seed": [0, 1]})
  # the MLM config: the quickstart's comparison (seed 0), over three seeds, and the grid
  assert mlm_extrapolation.sweep().entries() == ["scale=standard,seed=0", "scale=logn,seed=0"]
  assert mlm_extrapolation.sweeps()["seeds"].entries() == [
      f"scale={scale},seed={seed}" for seed in (0, 1, 2) for scale in ("standard", "logn")]
  positions = ["rope", "sinusoidal", "learned", "t5", "alibi", "none", "xl", "shaw", "deberta",
               "kerple"]
  assert mlm_extrapolation.sweeps()["grid"].entries() == [
      f"position={p},scale={scale},seed={seed}" for seed in (0, 1, 2) for p in positions
      for scale in ("standard", "logn")]


def test_plan_of_a_named_sweep(tmp_path):
  points = sweep.plan(MLM, str(tmp_path), "smoke", ["seed=1"], "grid")
  assert len(points) == 20 and points[3].entry == "position=sinusoidal,scale=logn,seed=1"
  for p in points:  # each point's config is its entry's
    values = dict(part.split("=") for part in p.entry.split(","))
    assert (p.config.model.position, p.config.model.scale, p.config.seed) == (
        values["position"], values["scale"], int(values["seed"]))
    assert p.config.train.steps == 6  # the smoke variant prepended
  assert sweep.printed(points[0]).endswith(
      f"{MLM}:smoke,position=rope,scale=standard,seed=1 --workdir="
      f"{os.path.join(str(tmp_path), 'position-rope_scale-standard_seed-1')}")
  with pytest.raises(UserError, match="has no sweep .gird.; its sweeps: default, seeds, grid"):
    sweep.plan(MLM, str(tmp_path), "", [], "gird")
  assert sweep.pick(points, 19) is points[19]
  with pytest.raises(UserError, match=r"--index 20 is outside the plan's 20 runs \(0 ... 19\)"):
    sweep.pick(points, 20)


def test_slurm_script_trains_its_array_task_and_jobs_skip_it(tmp_path, capsys):
  root = str(tmp_path / "sweep")
  script = str(tmp_path / "sweep.sbatch")
  plan = [f"--config={MLM}", f"--root={root}", "--variant=smoke", "--sweep=seeds"]
  p = run("sweep.py", *plan, f"--slurm={script}", "--slurm_time=00:20:00",
          "--slurm_partition=debug", "--jobs=2")
  assert f"wrote {script}: 6 array tasks" in p.stdout
  with open(script) as f:
    text = f.read()
  for line in ("#SBATCH --array=0-5%2", "#SBATCH --time=00:20:00", "#SBATCH --cpus-per-task=4",
               "#SBATCH --partition=debug", f"#SBATCH --output={root}/.slurm/%A_%a.out"):
    assert line in text.splitlines()
  # the array task 1 of a scheduler, without one: point 1 of the plan is scale=logn, seed 0
  job = subprocess.run(["bash", script], env=dict(ENV, SLURM_ARRAY_TASK_ID="1",
                                                 PYTHON=sys.executable),
                       cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
  assert job.returncode == 0, job.stderr
  w = os.path.join(root, "scale-logn_seed-0")
  assert sorted(os.listdir(root)) == [".slurm", "scale-logn_seed-0"]  # that run only
  assert [r["step"] for r in metric_rows(w)] == [2, 4, 6] and checkpoint_steps(w) == [3, 6]
  with open(os.path.join(w, "eval.json")) as f:
    evaluation = json.load(f)
  with open(os.path.join(w, "config.json")) as f:
    config = json.load(f)
  assert evaluation["step"] == 6 and config["model"]["scale"] == "logn" and config["seed"] == 0
  # its summary: the run's config, seed, commit and results, as the workdir holds them
  with open(os.path.join(w, "summary.json")) as f:
    summary = json.load(f)
  head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                        text=True).stdout.strip()
  assert summary["config"] == config and summary["seed"] == 0 and summary["step"] == 6
  assert summary["lengths"] == evaluation["lengths"] and summary["name"] == "scale-logn_seed-0"
  assert summary["commit"]["hash"] == head and summary["training"]["commit"]["hash"] == head
  assert (summary["training"]["from_step"], summary["training"]["to_step"]) == (0, 6)
  assert summary["training"]["seconds"] > 0
  # evaluating its attention entropy adds that to the summary; --plot draws it against length
  # (evaluate.py's main, in this process)
  plot = str(tmp_path / "entropy.png")
  capsys.readouterr()
  assert call_main("evaluate", f"--workdir={w}", "--entropy", f"--plot={plot}") == 0
  table = capsys.readouterr().out
  with open(os.path.join(w, "entropy.json")) as f, open(os.path.join(w, "summary.json")) as g:
    entropy, summary = json.load(f), json.load(g)
  assert summary["entropy"] == entropy["lengths"] and set(entropy["lengths"]) == {"32", "64"}
  assert summary["lengths"] == evaluation["lengths"]
  assert _table_row(table, "| scale-logn_seed-0 (rope, logn) |").split("|")[2:4] == [
      f" {entropy['lengths'][n]['entropy']:.3f} " for n in ("32", "64")]
  with open(plot, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"

  # the same point in a --jobs sweep: finished, skipped, its checkpoints untouched; the table
  before = _files(w)
  p = run("sweep.py", *plan, "--only=scale=logn,seed=0", "--jobs=2", "--noprogress")
  assert f"[1/1] {w}: finished, skipped" in p.stderr and _files(w) == before
  row = _table_row(p.stdout, "| scale-logn_seed-0 (rope, logn) |")
  assert row.split("|")[2:4] == [f" {100 * evaluation['lengths'][n]['accuracy']:.2f} "
                                 for n in ("32", "64")]


STAND_IN = """
import argparse, os, sys, time
p = argparse.ArgumentParser()
for flag in ("--config", "--workdir"):
  p.add_argument(flag)
p.add_argument("--noprogress", action="store_true")
a = p.parse_args()
name = os.path.basename(a.workdir)
def event(what):
  with open(os.environ["EVENTS"], "a") as f:
    f.write(f"{time.monotonic()} {what} {name}\\n")
event("start")
time.sleep(float(os.environ.get("SLEEP_" + name.replace("-", "_").replace(".", "_"), "0.3")))
if name == os.environ.get("FAIL"):
  print("error: the stand-in failed on purpose", file=sys.stderr)
  sys.exit(3)
event("end")
"""


def _events(path):
  with open(path) as f:
    return [(float(t), what, name) for t, what, name in (line.split() for line in f)]


def _most_at_once(events):
  now = most = 0
  for _, what, _ in sorted(events):
    now += 1 if what == "start" else -1
    most = max(most, now)
  return most


def test_jobs_run_side_by_side_and_a_failure_stops_new_launches(tmp_path, monkeypatch, capsys):
  script = tmp_path / "stand_in.py"
  script.write_text(STAND_IN)
  points = sweep.plan(f"{MLM}:smoke", str(tmp_path / "runs"), "", [], "seeds")  # 6 points
  names = [os.path.basename(p.workdir) for p in points]
  monkeypatch.setenv("EVENTS", str(tmp_path / "events"))
  assert sweep.run_all(points[:4], in_process=False, train_script=str(script), jobs=2) is None
  events = _events(tmp_path / "events")
  assert sorted(n for _, what, n in events if what == "end") == sorted(names[:4])
  assert _most_at_once(events) == 2  # two at a time, never more
  # plan order: the first two launched are the plan's first two (which of the two processes
  # logs its start first is up to the OS), the last two start after them
  starts = [n for _, what, n in sorted(events) if what == "start"]
  assert set(starts[:2]) == set(names[:2]) and set(starts[2:]) == set(names[2:4])
  with open(os.path.join(points[0].workdir, "train.log")) as f:
    assert f.read() == ""  # each run's output goes to its log

  # the second run fails at once while the first goes on: nothing new is launched, the first
  # is waited for, and the failure is one line naming the workdir, its reason and its log
  os.remove(tmp_path / "events")
  monkeypatch.setenv("FAIL", names[5])
  monkeypatch.setenv("SLEEP_" + names[4].replace("-", "_"), "1.0")
  monkeypatch.setenv("SLEEP_" + names[5].replace("-", "_"), "0.0")
  capsys.readouterr()
  assert sweep.run_all(points[4:] + points[:4], in_process=False, train_script=str(script),
                       jobs=2) == 3
  events = _events(tmp_path / "events")
  assert {(what, n) for _, what, n in events} == {
      ("start", names[4]), ("start", names[5]), ("end", names[4])} and len(events) == 3
  errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
  assert errors == [sweep.failed_line(points[5], 3, "the stand-in failed on purpose",
                                      os.path.join(points[5].workdir, "train.log"))]
  with pytest.raises(UserError, match="drop --in_process"):
    sweep.run_all(points, in_process=True, train_script=str(script), jobs=2)


def test_signals_reach_the_runs_in_progress(tmp_path):
  # subprocess mode: the signal is remembered and passed on to every train.py in progress
  default = signal.getsignal(signal.SIGTERM)
  state = {"signal": None}
  children = [subprocess.Popen(["sleep", "60"]) for _ in range(2)]
  with sweep.forwarded_signals(state):
    state["children"].extend(children)
    os.kill(os.getpid(), signal.SIGTERM)
    assert [c.wait(timeout=30) for c in children] == [-signal.SIGTERM] * 2
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
  assert lines[0].startswith(f"error: {os.path.join(root, 'scale-standard_seed-0')} failed "
                            "(exit 2): ")
  assert "does not exist" in lines[0] and "scale-logn" not in p.stderr  # stopped at the first


def test_the_final_tables_baseline_is_checked_before_training(tmp_path):
  mlm_points = sweep.plan(MLM, str(tmp_path), "smoke", [])
  assert sweep.table_options(mlm_points, None) == {}
  assert sweep.table_options(mlm_points, "scale=standard") == {"baseline": "scale=standard"}
  contrastive_points = sweep.plan(f"{CONTRASTIVE}:smoke", str(tmp_path), "", ["seed=0"])
  with pytest.raises(UserError, match="the contrastive task's table has no baseline row"):
    sweep.table_options(contrastive_points, "loss=infonce")
  with pytest.raises(UserError, match="the sweep mixes tasks"):
    sweep.table_options(mlm_points + contrastive_points)
