"""Test configuration: run from the repository root, on the CPU, with float32 matmuls; a test
skipped because an optional peer library is missing is named in the terminal summary."""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# The entry-point tests run train.py / evaluate.py in subprocesses; they share one persistent
# compilation cache for the session (tests/entry_points.py). Made here, in the controlling
# process, so that parallel workers (pytest -n 2) inherit the same directory.
CACHE_VAR = "ATTENTION_LAB_TEST_JAX_CACHE"


def pytest_configure(config):
  if not hasattr(config, "workerinput") and CACHE_VAR not in os.environ:
    config._jax_cache = os.environ[CACHE_VAR] = tempfile.mkdtemp(prefix="jax-cache-")


def pytest_unconfigure(config):
  cache = getattr(config, "_jax_cache", None)
  if cache:
    shutil.rmtree(cache, ignore_errors=True)
    os.environ.pop(CACHE_VAR, None)


# Optional peers the suite checks against, and the extra that installs each. A module-level
# importorskip makes a missing one a quiet "N skipped" in the summary line; these lines say
# which checks did not run and how to run them (CI installs every extra, so it runs them all).
PEER_EXTRAS = {"transformers": ("hf", "HF peer checks")}
_NOT_IMPORTED = re.compile(r"could not import '([\w.]+)'")


def missing_peers(reports) -> dict:
  """{module: [test files]} for the skips caused by a module that could not be imported."""
  missing = {}
  for report in reports:
    longrepr = getattr(report, "longrepr", None)
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    match = _NOT_IMPORTED.search(reason)
    if match:
      where = missing.setdefault(match.group(1).split(".")[0], [])
      path = getattr(report, "nodeid", "").split("::")[0]
      if path not in where:
        where.append(path)
  return missing


def missing_peer_lines(reports) -> list:
  """One line per missing module: what was skipped, where, and which extra installs it."""
  lines = []
  for name, paths in sorted(missing_peers(reports).items()):
    where = ", ".join(sorted(paths))
    if name in PEER_EXTRAS:
      extra, what = PEER_EXTRAS[name]
      lines.append(f"{name} (the {extra} extra) is not installed: {what} skipped ({where}); "
                   f"pip install -e '.[{extra}]' to run them")
    else:
      lines.append(f"{name} is not installed: tests that need it skipped ({where})")
  return lines


def pytest_terminal_summary(terminalreporter):
  lines = missing_peer_lines(terminalreporter.stats.get("skipped", []))
  if lines:
    terminalreporter.section("missing optional peers", sep="-", yellow=True)
    for line in lines:
      terminalreporter.write_line(line, yellow=True)
