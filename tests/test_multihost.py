"""Two processes training one run (training/distributed.py), on localhost CPUs through gloo.

Each train.py process has two host devices; together they are a mesh of 4
(mesh.data=2 x mesh.fsdp=2), each process uploading only its half of every batch. One run
of the MLM smoke config, made long (train.steps=100000, a row per step), its settings from the
environment variables for process 0 and from flags for process 1:
- its rows equal those of the same config trained here on one device for as many steps
  (test_mesh.py: one process with four devices logs the one-device numbers too); the rows
  cover the warmup and later updates, so the sharded optimizer state is in them;
- SIGTERM to the second process, once the run has logged three rows, stops both after the
  same step: both exit 0, only process 0 writes rows and prints (naming the step and the
  signal to the other process), and that step's checkpoint is complete and the only one.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from entry_points import ENV, ROOT, checkpoint_steps, metric_rows
from mesh_jobs import configured
from test_mesh import close

from training.tasks import get_task

CONFIG = "configs/mlm_extrapolation.py:smoke"
# one layer: half the compilation of the smoke model's two, in each of three processes
LONG = {"model.num_layers": 1, "train.steps": 100000, "train.log_every": 1, "train.checkpoint_every": 100000,
        "eval.at_end": False}


def _port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir, *extra):
  """The two train.py processes of one run: [process 0, process 1]; extra: more flags."""
  address = f"127.0.0.1:{_port()}"
  env = dict(ENV, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=2").strip())
  overrides = [f"--config.{k}={str(v).lower()}" for k, v in LONG.items()]
  settings = [  # process 0 from the environment, process 1 from flags
      ({"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"},
       []),
      ({}, [f"--coordinator_address={address}", "--num_processes=2", "--process_id=1"])]
  return [subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "train.py"), "--config", CONFIG, "--workdir",
       str(workdir), "--config.mesh.data=2", "--config.mesh.fsdp=2", "--noprogress",
       *overrides, *flags, *extra], cwd=ROOT, env=dict(env, **variables), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for variables, flags in settings]


def _finish(procs, timeout=300):
  outs = []
  for p in procs:
    try:
      out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    outs.append((p.returncode, out, err))
  return outs


def _wait_for(procs, done, what: str) -> None:
  """Waits until done() (fails if a process ends first, or after 300 s)."""
  deadline = time.time() + 300
  while not done():
    if time.time() > deadline or any(p.poll() is not None for p in procs):
      for p in procs:
        p.kill()
      pytest.fail(f"the run did not {what}: " + procs[0].communicate()[1][-2000:])
    time.sleep(0.1)


def _wait_for_rows(procs, workdir, rows: int = 3) -> None:
  metrics = workdir / "metrics.jsonl"
  _wait_for(procs, lambda: metrics.exists() and metrics.read_text().count("\n") >= rows,
            f"log {rows} rows")


def test_two_processes_train_as_one_device_and_stop_together(tmp_path):
  workdir = tmp_path / "run"
  procs = _start(workdir)
  _wait_for_rows(procs, workdir)
  procs[1].send_signal(signal.SIGTERM)
  outs = _finish(procs)
  assert [rc for rc, _, _ in outs] == [0, 0], outs[0][2][-2000:] + outs[1][2][-2000:]
  line = [x for x in outs[0][2].splitlines() if x.startswith("stopped by")]
  assert line and "a signal to another process" in line[0], outs[0][2][-2000:]
  assert "stopped by" not in outs[1][2]  # process 1 prints nothing of the run's
  step = int(line[0].split(" at step ")[1].split(";")[0])
  rows = metric_rows(workdir)
  assert 3 <= step < 100000 and [r["step"] for r in rows] == list(range(1, step + 1))
  # the step both saved: the only checkpoint, complete (no temporary directory left)
  assert checkpoint_steps(workdir) == [step]
  assert os.listdir(workdir / "checkpoints") == [str(step)]
  # the same config for as many steps on one device
  config = configured(CONFIG, LONG)
  get_task(config).train(config, str(tmp_path / "one"), progress=False, stop_after=step)
  close(rows, metric_rows(tmp_path / "one"))


def test_a_process_whose_partner_never_joins_stops_in_one_line(tmp_path):
  """Process 0 of two started alone: jax would abort it from C++ (a stack trace, exit 134)
  when its join timeout passes; it says so in one line, exits 2 and leaves no workdir."""
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "train.py"), "--config", CONFIG, "--workdir",
       str(workdir), f"--coordinator_address=127.0.0.1:{_port()}", "--num_processes=2",
       "--process_id=0", "--join_timeout=2"], cwd=ROOT, env=ENV, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith("error: not all 2 processes of the run joined at 127.0.0.1:")
  assert "within 2 s (this is process 0)" in lines[-1] and "--join_timeout" in lines[-1]
  assert "Check failure" not in proc.stderr and "Traceback" not in proc.stderr
  assert not workdir.exists()


def test_a_killed_process_stops_the_other_in_one_line(tmp_path):
  """SIGKILL to process 1 once the run is under way: process 0 gets an error from a collective,
  or waits in one until its watch sees no sign of life for --peer_timeout seconds; either way
  it stops in one line (exit 2, no traceback), long before jax's heartbeat timeout (100 s)
  would abort it. (By hand, with the default 30 s and a kill after many steps: the same.)"""
  workdir = tmp_path / "run"
  procs = _start(workdir, "--peer_timeout=3")
  # both joined and process 0 prepared the workdir: the run is under way (compiling its step)
  _wait_for(procs, lambda: (workdir / "config.json").exists(), "prepare the workdir")
  procs[1].kill()
  start = time.time()
  (rc, out, err), _ = _finish(procs, timeout=90)
  assert rc == 2, err[-2000:]
  assert time.time() - start < 60
  lines = [x for x in err.splitlines() if x.strip() and not x.startswith("[Gloo]")]
  assert lines[-1].startswith("error: ") and "so process 0 stops too" in lines[-1], err[-2000:]
  assert "Rerun every process's command to resume" in lines[-1]
  assert "Check failure" not in err and "Traceback" not in err


def test_a_refusal_in_process_0_stops_the_other_in_one_line(tmp_path):
  """Process 0 refused before training (the workdir is locked by another trainer): it says
  why, process 1 says that process 0 stopped, both exit 2 at once without a traceback (jax's
  exit would have waited for the other at a barrier and aborted from C++)."""
  from test_workdir_lock import HOLDER
  workdir = tmp_path / "run"
  holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(workdir)], cwd=ROOT, env=ENV,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
  try:
    assert holder.stdout.readline() == "locked\n"
    # a watch period of 1 s (peer_timeout / 10): process 1 sees process 0's mark sooner
    outs = _finish(_start(workdir, "--peer_timeout=10"), timeout=90)
  finally:
    holder.kill()
    holder.communicate()
  assert [rc for rc, _, _ in outs] == [2, 2], outs[0][2][-2000:] + outs[1][2][-2000:]
  last = [[x for x in err.splitlines() if x.strip() and not x.startswith("[Gloo]")][-1]
          for _, _, err in outs]
  assert last[0].startswith("error: workdir ") and "is being trained by process" in last[0]
  assert last[1] == ("error: process 0 of the run stopped with an error (its output says "
                     "which), so process 1 stops too")
  assert not any("Check failure" in err or "Traceback" in err for _, _, err in outs)


@pytest.mark.parametrize("timeouts, flag", [(dict(join_timeout=1), "--join_timeout=1"),
                                            (dict(peer_timeout=0), "--peer_timeout=0")])
def test_timeouts_out_of_range_are_refused_before_joining(timeouts, flag):
  from training import distributed
  from utils.errors import ConfigError
  with pytest.raises(ConfigError, match=flag):
    distributed.initialize("127.0.0.1:1", 2, 0, **timeouts)
