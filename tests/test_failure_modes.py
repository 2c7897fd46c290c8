"""Nothing lost: preemption, signals, non-finite steps, corrupt checkpoints, bad input.

Every case drives the real entry points (train.py / evaluate.py) in a subprocess, as a user
would, and checks both what the user sees and what was kept on disk.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from entry_points import ENV, ROOT, checkpoint_steps, command, run
from entry_points import metric_rows as rows

from utils.lock import LOCK_FILE

SMOKE = "configs/mlm_extrapolation.py:smoke"


def train(workdir, *extra, variant=SMOKE, check=True):
  return run("train.py", f"--config={variant}", f"--workdir={workdir}", "--progress=false",
             *extra, check=check)


def assert_one_line_error(p, *needles):
  assert p.returncode != 0, p.stdout
  assert "Traceback" not in p.stderr, p.stderr
  for n in needles:
    assert n in p.stderr, p.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run of the smoke config (12 steps, checkpoints every 3, logs every 2)."""
  w = str(tmp_path_factory.mktemp("ref") / "run")
  train(w, "--config.train.steps=12")
  assert not os.path.exists(os.path.join(w, LOCK_FILE))  # released at the normal end
  return w


def lock_owner(workdir):
  with open(os.path.join(workdir, LOCK_FILE)) as f:
    return json.load(f)["pid"]


def test_kill_9_then_resume_is_bit_identical(tmp_path, reference):
  w = str(tmp_path / "run")
  cmd = command("train.py", f"--config={SMOKE}", f"--workdir={w}", "--progress=false",
                "--config.train.steps=12")
  p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not [s for s in checkpoint_steps(w) if s >= 3] and time.time() < deadline:
    time.sleep(0.05)
  p.send_signal(signal.SIGKILL)  # no handler can run: whatever is on disk is what is left
  p.wait()
  assert checkpoint_steps(w), "the run was killed before its first checkpoint"
  assert lock_owner(w) == p.pid  # left behind, naming a process that no longer runs
  resumed = train(w, "--config.train.steps=12")
  assert "taking over the stale lock" in resumed.stderr and f"process {p.pid} " in resumed.stderr
  assert not os.path.exists(os.path.join(w, LOCK_FILE))
  assert rows(w) == rows(reference)
  with open(os.path.join(w, "eval.json")) as f, open(os.path.join(reference, "eval.json")) as g:
    assert json.load(f) == json.load(g)


def test_sigterm_saves_and_exits_zero(tmp_path, reference):
  w = str(tmp_path / "run")
  cmd = command("train.py", f"--config={SMOKE}", f"--workdir={w}", "--progress=false",
                "--config.train.steps=12")
  p = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
  deadline = time.time() + 240
  while not os.path.exists(os.path.join(w, "metrics.jsonl")) or not rows(w):
    assert time.time() < deadline and p.poll() is None
    time.sleep(0.05)
  # a second train.py on the same workdir while the first trains (paused, so that it cannot
  # finish in the meantime): refused in one line, and the first run's files are untouched
  p.send_signal(signal.SIGSTOP)
  try:
    assert p.poll() is None
    before = rows(w)
    second = train(w, "--config.train.steps=12", check=False)
    assert_one_line_error(second, "is being trained by",
                          f"process {p.pid} on host {socket.gethostname()}")
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert rows(w) == before and lock_owner(w) == p.pid
  finally:
    p.send_signal(signal.SIGCONT)
  p.send_signal(signal.SIGTERM)
  out, err = p.communicate(timeout=120)
  assert p.returncode == 0, err
  assert not os.path.exists(os.path.join(w, LOCK_FILE))  # released on SIGTERM
  if "stopped by SIGTERM" in err:  # (it may have finished all 12 steps before the signal)
    assert "Rerun the same command to resume" in err
    stopped = int(err.split("stopped by SIGTERM at step ")[1].split(";")[0])
    assert stopped in checkpoint_steps(w)
    assert not os.path.exists(os.path.join(w, "eval.json"))
  train(w, "--config.train.steps=12")
  assert rows(w) == rows(reference)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_last_checkpoint(tmp_path):
  w = str(tmp_path / "run")
  # an absurd learning rate blows the weights up within a few steps
  p = train(w, "--config.train.learning_rate=1e30", "--config.train.warmup_steps=0",
            "--config.train.clip_norm=0", "--config.train.steps=12", check=False)
  assert_one_line_error(p, "non-finite", "at step")
  bad = int(p.stderr.split("at step ")[1].split()[0])
  assert all(s <= bad for s in checkpoint_steps(w))
  assert not os.path.exists(os.path.join(w, "eval.json"))
  assert not os.path.exists(os.path.join(w, LOCK_FILE))  # released on an error exit
  # the skip option trains through, counting the skipped steps in the metrics
  w2 = str(tmp_path / "skip")
  train(w2, "--config.train.learning_rate=1e30", "--config.train.warmup_steps=0",
        "--config.train.clip_norm=0", "--config.train.steps=12",
        "--config.train.on_nonfinite=skip")
  assert rows(w2)[-1]["skipped_steps"] > 0


def test_corrupt_latest_checkpoint_falls_back_with_a_warning(tmp_path, reference):
  w = str(tmp_path / "run")
  shutil.copytree(reference, w)
  latest = max(checkpoint_steps(w))
  for dirpath, _, files in os.walk(os.path.join(w, "checkpoints", str(latest))):
    for name in files:
      with open(os.path.join(dirpath, name), "wb") as f:
        f.write(b"\x00garbage")
  os.remove(os.path.join(w, "eval.json"))
  p = run("evaluate.py", f"--workdir={w}")
  assert "unreadable" in p.stderr and "falling back" in p.stderr
  with open(os.path.join(w, "eval.json")) as f:
    assert json.load(f)["step"] < latest


def test_changed_config_in_existing_workdir_is_refused(tmp_path, reference):
  w = str(tmp_path / "run")
  shutil.copytree(reference, w)
  p = train(w, "--config.train.steps=12", "--config.model.dropout=0.2", check=False)
  assert_one_line_error(p, "different config", "model.dropout", "--overwrite")
  assert checkpoint_steps(w) == checkpoint_steps(reference)  # nothing touched
  # --overwrite starts again (a change that compiles the same step, to keep the test short)
  p = train(w, "--config.train.steps=12", "--config.train.checkpoint_every=4", "--overwrite")
  assert checkpoint_steps(w) == [8, 12]  # (keep_checkpoints=2) a fresh run, saving every 4


@pytest.mark.parametrize("override, needles", [
    ("--config.model.num_heads=3", ["num_heads=3", "does not divide"]),
    ("--config.model.scale=cosine", ["unknown scale", "valid names"]),
    ("--config.model.nope=1", ["no key 'nope'", "valid keys"]),
    ("--config.train.steps=ten", ["steps"]),
    # the learned table is the training length (32) unless max_len is named
    ("--config.data.train_length=64", ["train_length=64", "length bound 32"]),
])
def test_bad_config_is_refused_before_compiling(tmp_path, override, needles):
  variant = SMOKE + (",position=learned" if "train_length" in override else "")
  start = time.time()
  p = train(str(tmp_path / "run"), override, variant=variant, check=False)
  assert_one_line_error(p, *needles)
  assert not checkpoint_steps(str(tmp_path / "run"))
  assert time.time() - start < 60


def _file(name, content: bytes):
  def make(d):
    (d / name).write_bytes(content)
    return str(d / name)
  return make


@pytest.mark.parametrize("make, needles", [
    (lambda d: str(d / "missing.txt"), ["does not exist"]),
    (lambda d: str(d / "*.nothing"), ["matches no files"]),
    (_file("empty.txt", b""), ["empty"]),
    (_file("bad.txt", b"abc\n\xc3\x28 def\n"),
     ["invalid UTF-8", "byte offset 4", "encoding_errors=replace"]),
    (_file("tiny.txt", b"a few words\nand more\n"), ["too few", "training sequence"]),
])
def test_bad_data_is_refused_with_file_and_position(tmp_path, make, needles):
  corpus = make(tmp_path)
  p = train(str(tmp_path / "run"), variant=f"{SMOKE},corpus={corpus}", check=False)
  assert_one_line_error(p, *needles)


def test_mid_run_checkpoint_holds_its_own_step(tmp_path, reference):
  # the checkpoint at step 9, written asynchronously while the run went on to step 12, must
  # hold exactly what a run stopped at step 9 holds: the state and the partial logging window
  w = str(tmp_path / "run")
  train(w, "--config.train.steps=12", "--stop_after=9")
  assert checkpoint_steps(w)[-1] == 9 and 9 in checkpoint_steps(reference)

  def saved(d):  # (metadata, state leaves) of checkpoint 9, read through orbax
    restored = ocp.CheckpointManager(os.path.join(d, "checkpoints")).restore(
        9, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return restored["meta"], jax.tree_util.tree_leaves(restored["state"])

  (meta, leaves), (ref_meta, ref_leaves) = saved(w), saved(reference)
  assert meta == ref_meta
  assert all(np.array_equal(a, b) for a, b in zip(leaves, ref_leaves))


# train.py with orbax's save failing as on a full disk: the save of step FAIL_STEP leaves a
# partial directory (under its temporary name and its final one) and its error, tensorstore's
# ValueError('RESOURCE_EXHAUSTED: ...'), is raised later, from the manager's next wait, as an
# asynchronous save's error is
FULL_DISK = """
import os, runpy, sys
import orbax.checkpoint as ocp
fail, errors = int(os.environ["FAIL_STEP"]), []
save, wait = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished
def failing_save(self, step, *args, **kwargs):
  if step != fail:
    return save(self, step, *args, **kwargs)
  for name in (f"{step}.orbax-checkpoint-tmp-1", str(step)):
    os.makedirs(os.path.join(str(self.directory), name, "state"))
    with open(os.path.join(str(self.directory), name, "state", "d"), "wb") as f:
      f.write(bytes(1000))
  errors.append(ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{self.directory}'
                           f'/{step}/state/d": No space left on device [os_error_code=28]'))
  return True
def failing_wait(self):
  if errors:
    raise errors.pop()
  return wait(self)
ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished = failing_save, failing_wait
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_full_disk_at_a_checkpoint_is_one_line_and_resume_restores_the_one_before(
    tmp_path, reference):
  w = str(tmp_path / "run")
  shutil.copytree(reference, w)  # the reference run back at step 9, to save 12 again
  shutil.rmtree(os.path.join(w, "checkpoints", "12"))
  for name in ("eval.json", "summary.json"):
    os.remove(os.path.join(w, name))
  args = [f"--config={SMOKE}", f"--workdir={w}", "--progress=false", "--config.train.steps=12"]
  p = subprocess.run([sys.executable, "-c", FULL_DISK, "train.py", *args], cwd=ROOT,
                     env=dict(ENV, FAIL_STEP="12"), capture_output=True, text=True, timeout=300)
  assert_one_line_error(p, "no space left", "checkpoint of step 12", "step 9 is intact",
                        "rerun the same command")
  lines = p.stderr.strip().splitlines()  # the line that says it resumed, and the error
  assert len(lines) == 2 and lines[1].startswith("error: no space left"), p.stderr
  assert os.listdir(os.path.join(w, "checkpoints")) == ["9"]  # no partial step 12 left
  assert not os.path.exists(os.path.join(w, "eval.json"))
  assert not os.path.exists(os.path.join(w, LOCK_FILE))
  resumed = train(w, "--config.train.steps=12")
  assert f"resuming from step 9 of {w}" in resumed.stderr
  assert "unreadable" not in resumed.stderr
  assert rows(w) == rows(reference)
  with open(os.path.join(w, "eval.json")) as f, open(os.path.join(reference, "eval.json")) as g:
    assert json.load(f) == json.load(g)
