"""Atomic file writes: a reader (or a crash) never sees half a file."""
from __future__ import annotations

import json
import os
import tempfile

from utils.errors import DiskFullError, disk_full


def atomic_write_text(path: str, text: str) -> None:
  """Writes a file through a temporary file and a rename; a full disk leaves the file as it
  was and is one line (DiskFullError)."""
  try:
    _write_and_rename(path, text)
  except OSError as e:
    if not disk_full(e):
      raise
    raise DiskFullError(f"no space left on the device while writing {path}; the file is as "
                        "it was before. Free space and rerun the same command") from None


def _write_and_rename(path: str, text: str) -> None:
  d = os.path.dirname(os.path.abspath(path))
  os.makedirs(d, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path), suffix=".tmp")
  try:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_json(path: str, obj) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def read_json(path: str):
  with open(path, encoding="utf-8") as f:
    return json.load(f)
