"""A test skipped for a missing optional peer is named in the terminal summary
(tests/peer_skips.py, loaded by conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

TESTS = os.path.dirname(os.path.abspath(__file__))


def test_a_missing_peer_is_named_in_the_summary(tmp_path):
  # a session whose conftest hides transformers and uses this suite's summary hook
  (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
      import sys

      class Hide:
        def find_spec(self, name, path=None, target=None):
          if name.split(".")[0] == "transformers":
            raise ModuleNotFoundError(f"No module named {{name!r}}")

      sys.meta_path.insert(0, Hide())
      sys.modules.pop("transformers", None)
      sys.path.insert(0, {TESTS!r})
      from peer_skips import pytest_terminal_summary
      """))
  (tmp_path / "test_peer.py").write_text(
      "import pytest\ntransformers = pytest.importorskip('transformers')\n\n"
      "def test_x():\n  pass\n")
  (tmp_path / "test_other.py").write_text(
      "import pytest\npytest.importorskip('no_such_peer_module')\n")
  (tmp_path / "test_plain.py").write_text(
      "import pytest\nnp = pytest.importorskip('numpy')\n\n"
      "def test_y():\n  pytest.skip('a reason of its own')\n")
  p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      "-p", "no:xdist", str(tmp_path)], cwd=tmp_path,
                     capture_output=True, text=True, timeout=120)
  out = p.stdout
  assert p.returncode == 0, out + p.stderr
  assert "3 skipped" in out
  assert ("transformers (the hf extra) is not installed: HF peer checks skipped "
          "(test_peer.py); pip install -e '.[hf]' to run them") in out
  assert "no_such_peer_module is not installed: tests that need it skipped (test_other.py)" in out
  # only skips for a missing module are named; numpy imported, so it is not
  assert "a reason of its own" not in out and "numpy is not installed" not in out

