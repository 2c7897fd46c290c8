"""Metrics: JSON lines in the workdir (easy to table) and TensorBoard event files."""
from __future__ import annotations

import json
import os
import sys
import time

from utils.files import atomic_write_text


def summary_writer():
  """tensorboardX's SummaryWriter class, imported without torch.

  tensorboardX imports torch when it is installed (the hf extra installs it) only so that it
  can accept torch tensors, which we never log; that import costs ~4 s at the start of every
  training process. While tensorboardX is imported, `import torch` is made to fail (it
  catches the ImportError); torch stays importable for everything else afterwards.
  """
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None  # an ImportError for `import torch`, and nothing else
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:

  def __init__(self, workdir: str, filename: str = "metrics.jsonl", tensorboard: bool = True):
    self.path = os.path.join(workdir, filename)
    self.file = open(self.path, "a", encoding="utf-8")
    self.tb = None
    if tensorboard:
      self.tb = summary_writer()(os.path.join(workdir, "tensorboard"), flush_secs=30)

  def write(self, step: int, metrics: dict) -> None:
    row = {"step": int(step), "time": round(time.time(), 3)}
    row.update({k: float(v) for k, v in metrics.items()})
    # one line per write, flushed: a killed run leaves whole lines behind
    self.file.write(json.dumps(row) + "\n")
    self.file.flush()
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, float(v), int(step))

  def flush(self) -> None:
    self.file.flush()
    os.fsync(self.file.fileno())
    if self.tb is not None:
      self.tb.flush()

  def close(self) -> None:
    self.flush()
    self.file.close()
    if self.tb is not None:
      self.tb.close()


def read_metrics(path: str) -> list[dict]:
  """Rows of a metrics file; a torn last line (a kill mid-write) is ignored."""
  rows = []
  if not os.path.exists(path):
    return rows
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return rows


def truncate_after(path: str, step: int) -> None:
  """Drops rows after `step`: a resumed run rewrites them, so the file has no duplicates."""
  rows = [r for r in read_metrics(path) if r.get("step", 0) <= step]
  atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
