"""Entry-point plumbing: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
import traceback

from utils.errors import DiskFullError, PeerLostError, UserError


def _quiet_logs() -> None:
  # orbax and absl log every checkpoint at INFO; a researcher wants the progress bar and errors
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("absl").setLevel(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _config_arg(argv):
  """The value of --config (either '--config=X' or '--config X'), or None."""
  for i, a in enumerate(argv):
    if a.startswith("--config="):
      return a.split("=", 1)[1]
    if a == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def load_config_module(path: str):
  """The module of a config file (its get_config, and sweep() if it has one)."""
  if not os.path.isfile(path):
    raise UserError(f"config file {path!r} does not exist (working directory {os.getcwd()})")
  module_spec = importlib.util.spec_from_file_location("_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config_file(spec: str):
  """'path/to/config.py[:variants]' -> the ConfigDict its get_config returns."""
  path, _, arg = spec.partition(":")
  return load_config_module(path).get_config(arg or None)


def precheck_config(argv) -> None:
  """Loads the --config file once before absl does, so that a bad file or variant is one line.

  (absl reports exceptions raised inside a config file with their full traceback.)
  """
  spec = _config_arg(argv)
  if spec is None:
    return
  config = load_config_file(spec)
  for a in argv:
    if a.startswith("--config."):
      _check_override_path(config, a[len("--config."):].split("=", 1)[0])


def _check_override_path(config, dotted: str) -> None:
  """An override of a key the config does not have is a typo: say which, and what exists."""
  import difflib
  node, seen = config, []
  for part in dotted.split("."):
    keys = list(node.keys()) if hasattr(node, "keys") else []
    if part not in keys:
      close = difflib.get_close_matches(part, keys, n=3)
      where = "config" + "".join(f".{p}" for p in seen)
      hint = f" (did you mean {', '.join(close)}?)" if close else ""
      raise UserError(f"--config.{dotted}: {where} has no key {part!r}{hint}; valid keys: "
                      f"{sorted(keys)}")
    node, seen = node[part], seen + [part]


def _several_processes() -> bool:
  """Whether this process is one of a run of several (jax.distributed is initialised). Such a
  process that stops on an error leaves at once: jax's exit waits at a barrier for every
  other process, which do not come (they stop on this one's error, training/distributed.py),
  until its heartbeat timeout aborts it from C++ with a stack trace."""
  module = sys.modules.get("jax._src.distributed")
  return module is not None and getattr(module.global_state, "client", None) is not None


def leave(code: int, error: str | None = None) -> None:
  """Exits at once with `code` (no interpreter shutdown: nothing runs after this), printing
  `error: ...` on stderr first when given."""
  if error is not None:
    print(f"error: {error}", file=sys.stderr)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def run_main(main) -> None:
  from absl import app

  from utils.host_memory import keep_freed_host_memory
  keep_freed_host_memory()  # before JAX starts its threads (see utils/host_memory.py)

  def wrapped(argv):
    _quiet_logs()
    try:
      return main(argv)
    except (DiskFullError, PeerLostError) as e:
      print(f"error: {e}", file=sys.stderr)
      # The background threads of a failed checkpoint save may still be failing, and at
      # interpreter shutdown each prints a traceback (120 seen); after a lost process, jax's
      # shutdown waits for it until the heartbeat timeout and aborts from C++. Nothing of
      # theirs is needed (a partial checkpoint is deleted, locks and files are closed):
      # leave at once.
      leave(2)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      if _several_processes():
        leave(2)
      return 2
    except Exception:  # noqa: BLE001 - a bug: its traceback, then out (see _several_processes)
      if not _several_processes():
        raise
      traceback.print_exc()
      leave(1)

  try:
    precheck_config(sys.argv)
    app.run(wrapped)
  except UserError as e:  # raised while parsing flags (e.g. a bad config variant)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
