"""Names, in the terminal summary, the tests skipped because an optional peer is missing.

A module-level importorskip makes a missing peer a quiet "N skipped" in pytest's summary line;
the lines written here say which checks did not run and how to run them. CI installs every
extra, so it runs them all. Imported by conftest.py; no dependency beyond pytest.
"""
from __future__ import annotations

import re

# Optional peers the suite checks against: the extra that installs each, and what it checks.
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
