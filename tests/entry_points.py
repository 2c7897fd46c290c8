"""Running the user-facing scripts (train.py, evaluate.py, ...) in a subprocess, as a user would."""
import atexit
import functools
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Subprocesses share one persistent compilation cache (per test session, made by conftest.py),
# so the many runs of the same smoke config compile once.
CACHE = os.environ.get("ATTENTION_LAB_TEST_JAX_CACHE")
if not CACHE:  # imported outside a pytest session
  CACHE = tempfile.mkdtemp(prefix="jax-cache-")
  atexit.register(shutil.rmtree, CACHE, ignore_errors=True)
ENV = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE,
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
           JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def command(script, *args):
  return [sys.executable, os.path.join(ROOT, script), *args]


def run(script, *args, check=True, timeout=300):
  p = subprocess.run(command(script, *args), cwd=ROOT, env=ENV, capture_output=True, text=True,
                     timeout=timeout)
  if check and p.returncode != 0:
    raise AssertionError(f"{script} {args} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
  return p


@functools.cache
def module(name):
  """A top-level script (train.py, evaluate.py, ...) as a module, its absl flags defined in
  this process: its main() runs the script's code without a subprocess's start-up. Loaded once
  per process (absl refuses a second definition of its flags from the same loader), so a
  caller parses its flags and unparses them when done."""
  spec = importlib.util.spec_from_file_location(f"_{name}_entry_point",
                                                os.path.join(ROOT, f"{name}.py"))
  out = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(out)
  return out


def call_main(name, *args):
  """Script `name`'s main() in this process with these command-line arguments (its flags
  parsed, and unparsed afterwards); returns its exit code."""
  from absl import flags
  script = module(name)
  argv = flags.FLAGS([f"{name}.py", *args])  # what absl leaves (`--workdirs A B`: B) is main's
  try:
    return script.main(argv)
  finally:
    flags.FLAGS.unparse_flags()


def metric_rows(workdir):
  """metrics.jsonl without the wall-clock fields, for comparing two runs."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "tokens_per_sec")}
            for line in f]


def checkpoint_steps(workdir):
  d = os.path.join(workdir, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []
