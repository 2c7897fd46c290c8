"""The suite's module order (tests/module_weights.py): heaviest module first, stable."""
from types import SimpleNamespace

import module_weights


def test_heaviest_module_first_order_kept_within_and_new_modules_weigh_the_median(tmp_path):
  ids = ["tests/test_a.py::x", "tests/test_b.py::y", "tests/test_a.py::z", "tests/test_c.py::w",
         "tests/test_new.py::v", "tests/test_b.py::u"]
  items = [SimpleNamespace(nodeid=i) for i in ids]
  weights = {"test_a.py": 1.0, "test_b.py": 30.0, "test_c.py": 5.0}  # median 5: new ties c
  got = [i.nodeid for i in module_weights.heaviest_first(items, weights)]
  assert got == ["tests/test_b.py::y", "tests/test_b.py::u", "tests/test_c.py::w",
                 "tests/test_new.py::v", "tests/test_a.py::x", "tests/test_a.py::z"]
  report = tmp_path / "suite.xml"
  report.write_text(
      '<testsuites><testsuite><testcase classname="tests.test_a" name="x" time="1.5"/>'
      '<testcase classname="tests.test_a.TestK" name="z" time="2.0"/>'
      '<testcase classname="tests.test_b" name="y" time="0.25"/></testsuite></testsuites>')
  assert module_weights.from_junit(str(report)) == {"test_a.py": 3.5, "test_b.py": 0.25}
