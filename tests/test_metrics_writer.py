"""training/metrics.py: the TensorBoard event file holds the logged scalars, and writing it
does not import torch (tensorboardX would, at ~4 s per training process)."""
import glob
import os
import struct
import subprocess
import sys

from entry_points import ENV, ROOT

SCRIPT = """
import sys
from training.metrics import MetricWriter
w = MetricWriter(sys.argv[1])
w.write(3, {"loss": 1.5, "accuracy": 0.25})
w.write(6, {"loss": 1.25, "accuracy": 0.5})
w.close()
assert "torch" not in sys.modules, "tensorboardX pulled torch in"
import importlib.util
# torch (when installed) is still importable afterwards
assert importlib.util.find_spec("torch") is None or __import__("torch") is not None
"""


def _events(path):
  """(step, tag, value) of every scalar in a TFRecord event file (length, crc, data, crc)."""
  from tensorboardX.proto import event_pb2
  data, i, out = open(path, "rb").read(), 0, []
  while i < len(data):
    n = struct.unpack("<Q", data[i:i + 8])[0]
    event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
    out += [(event.step, v.tag, v.simple_value) for v in event.summary.value]
    i += 12 + n + 4
  return out


def test_scalars_reach_the_event_file_without_torch(tmp_path):
  p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=ENV,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr
  (event_file,) = glob.glob(os.path.join(tmp_path, "tensorboard", "events.*"))
  assert sorted(_events(event_file)) == [(3, "accuracy", 0.25), (3, "loss", 1.5),
                                         (6, "accuracy", 0.5), (6, "loss", 1.25)]
  rows = [line for line in open(tmp_path / "metrics.jsonl")]
  assert len(rows) == 2 and '"loss": 1.25' in rows[1]
