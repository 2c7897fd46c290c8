"""Balance the two test workers: the heaviest test modules are scheduled first.

With `--dist loadscope` (pyproject.toml) each module runs whole on one worker, in the order
of the collection; a heavy module that starts last leaves the other worker idle until it
ends (one worker ran alone for the last ~3 minutes of the suite). conftest.py sorts the
collected modules by the seconds each took in a measured run (module_weights.json, heaviest
first: the longest-processing-time rule), and `--no-loadscope-reorder` keeps that order
(xdist would otherwise order modules by their number of tests). A module missing from the
file (a new one) weighs the median.

Refresh the weights after adding a heavy module, from any full run:

  python -m pytest -q -n 2 --junitxml=/tmp/suite.xml
  python tests/module_weights.py /tmp/suite.xml
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import xml.etree.ElementTree as ET

PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "module_weights.json")


def module_of(nodeid: str) -> str:
  return nodeid.split("::", 1)[0].replace(os.sep, "/").rsplit("/", 1)[-1]


def load() -> dict[str, float]:
  try:
    with open(PATH) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def heaviest_first(items, weights: dict[str, float]):
  """items sorted by their module's weight, heaviest first; the order within a module and
  between modules of equal weight kept."""
  default = statistics.median(weights.values()) if weights else 0.0
  return sorted(items, key=lambda item: -weights.get(module_of(item.nodeid), default))


def from_junit(path: str) -> dict[str, float]:
  """{module file name: seconds} summed over the test cases of a junit XML report."""
  out: dict[str, float] = {}
  for case in ET.parse(path).getroot().iter("testcase"):
    module = case.get("classname", "").split(".")
    # classname is tests.test_x or tests.test_x.TestClass: the test_ part names the file
    name = next((p for p in module if p.startswith("test_")), None)
    if name:
      out[f"{name}.py"] = out.get(f"{name}.py", 0.0) + float(case.get("time", 0.0))
  return out


if __name__ == "__main__":
  weights = from_junit(sys.argv[1])
  with open(PATH, "w") as f:
    json.dump({k: round(v, 1) for k, v in sorted(weights.items(), key=lambda kv: -kv[1])}, f,
              indent=1)
    f.write("\n")
  print(f"{len(weights)} modules, {sum(weights.values()):.0f} s in all -> {PATH}")
