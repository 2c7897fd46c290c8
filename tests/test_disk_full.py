"""A full disk: one line naming what was being written and what is intact, nothing partial.

The writers are made to fail with the errors a full disk gives: OSError(ENOSPC) from Python's
own file writes and tensorstore's ValueError('RESOURCE_EXHAUSTED: ...') from orbax, raised
either by the save itself or, as for an asynchronous save, from the next call. The run through
train.py (one line on stderr, exit 2, the resume restoring the checkpoint before) is
test_full_disk_at_a_checkpoint_... in tests/test_failure_modes.py, beside the reference run it
is compared with.
"""
import errno
import logging
import os

import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from training import checkpoint
from training.checkpoint import Checkpointer
from training.loop import _disk_full_as_one_line
from utils.errors import DiskFullError, disk_full, first_line
from utils.files import atomic_write_text

def NO_SPACE():  # noqa: N802 - a fresh exception per raise (a raised one keeps its context)
  return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def TENSORSTORE():  # noqa: N802
  return ValueError('RESOURCE_EXHAUSTED: Error writing local file "x/d/1f": Failed to write '
                    "196970 bytes to file 8: No space left on device [os_error_code='28']")


def test_what_counts_as_a_full_disk():
  assert disk_full(NO_SPACE()) and disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
  assert disk_full(TENSORSTORE())
  try:  # raised while handling one (orbax re-raises its threads' errors as others)
    try:
      raise NO_SPACE()
    except OSError:
      raise RuntimeError("Save Finalize thread failed")  # noqa: B904
  except RuntimeError as e:
    assert disk_full(e)
  assert not disk_full(OSError(errno.EACCES, "Permission denied"))
  assert not disk_full(ValueError("NOT_FOUND: Error opening file"))
  assert not disk_full(None)


@pytest.fixture
def saved_once(tmp_path):
  """A checkpointer with a real checkpoint at step 1."""
  ckpt = Checkpointer(str(tmp_path), async_save=False)
  ckpt.save(1, {"w": jnp.arange(3.0)})
  ckpt.wait()
  yield ckpt, os.path.join(str(tmp_path), "checkpoints")
  ckpt.close()


def _failing_save(monkeypatch, error, later: bool):
  """orbax's save of step 2 leaves a partial directory and fails with `error()`: at once, or
  (later=True) from every later wait, as orbax raises a failed asynchronous save's error."""
  save, wait, pending = ocp.CheckpointManager.save, ocp.CheckpointManager.wait_until_finished, []

  def failing_save(self, step, *args, **kwargs):
    if pending:
      raise pending[0]()
    if step != 2:
      return save(self, step, *args, **kwargs)
    # as orbax's save does first: its start-up removal of partial directories runs in the
    # background and would race with the one made here (seen on a loaded machine)
    getattr(self, "_maybe_await_cleanup_tmp_directory", lambda: None)()
    os.makedirs(os.path.join(str(self.directory), "2.orbax-checkpoint-tmp-7", "state"))
    if not later:
      raise error()
    pending.append(error)
    return True

  def failing_wait(self):
    if pending:
      raise pending[0]()
    return wait(self)

  monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failing_wait)


@pytest.mark.parametrize("error, later", [(NO_SPACE, False), (TENSORSTORE, False),
                                          (TENSORSTORE, True)])
def test_a_failed_save_names_its_step_and_the_intact_one(monkeypatch, saved_once, error,
                                                         later):
  ckpt, directory = saved_once
  _failing_save(monkeypatch, error, later)
  with pytest.raises(DiskFullError) as e:
    ckpt.save(2, {"w": jnp.arange(3.0)})
    ckpt.save(3, {"w": jnp.arange(3.0)})  # where an asynchronous save's error surfaces
  message = str(e.value)
  assert "checkpoint of step 2" in message and "step 3" not in message
  assert "the checkpoint of step 1 is intact" in message and "rerun the same command" in message
  assert "\n" not in message
  assert os.listdir(directory) == ["1"]  # the partial step 2 is gone
  ckpt.close()  # orbax raises the failed save's error again: it was reported already


def test_a_full_disk_before_any_checkpoint_says_the_run_starts_again(monkeypatch, tmp_path):
  ckpt = Checkpointer(str(tmp_path), async_save=False)
  _failing_save(monkeypatch, NO_SPACE, later=False)
  with pytest.raises(DiskFullError, match="no checkpoint yet: the run will start again from "
                                          "step 0"):
    ckpt.save(2, {"w": jnp.arange(3.0)})
  ckpt.close()


def test_metrics_on_a_full_disk_name_the_file_and_the_intact_checkpoint(saved_once):
  ckpt, _ = saved_once
  with pytest.raises(DiskFullError) as e:
    with _disk_full_as_one_line("w/metrics.jsonl", 4, ckpt):
      raise NO_SPACE()
  assert ("no space left on the device while writing w/metrics.jsonl at step 4; the checkpoint "
          "of step 1 is intact") in str(e.value)
  with pytest.raises(PermissionError):  # any other error is not a full disk
    with _disk_full_as_one_line("w/metrics.jsonl", 4, ckpt):
      raise PermissionError(errno.EACCES, "Permission denied")


def test_an_atomic_write_on_a_full_disk_keeps_the_old_file(monkeypatch, tmp_path):
  path = tmp_path / "summary.json"
  path.write_text("old")

  def fsync(fd):
    raise NO_SPACE()
  monkeypatch.setattr(os, "fsync", fsync)
  with pytest.raises(DiskFullError, match=f"while writing {path}; the file is as it was"):
    atomic_write_text(str(path), "new")
  assert os.listdir(tmp_path) == ["summary.json"] and path.read_text() == "old"


def test_orbax_threads_disk_full_records_are_dropped_and_others_kept(tmp_path, caplog):
  Checkpointer(str(tmp_path)).close()  # installs the filter
  log = logging.getLogger("absl")
  with caplog.at_level(logging.ERROR):
    try:
      raise TENSORSTORE()
    except ValueError:
      log.exception("_SignalingThread.run() raised an exception")
    log.error("an unrelated error")
  assert [r.getMessage() for r in caplog.records] == ["an unrelated error"]
  assert checkpoint._SEEN["disk_full"]


def test_the_failed_saves_late_callbacks_are_dropped_and_other_errors_kept():
  seen = []
  hook = checkpoint._after_failed_save(lambda *args: seen.append(args[1]))

  def call_soon_threadsafe():  # where tensorstore's late callback meets orbax's closed loop
    raise RuntimeError("Event loop is closed")

  def closed_elsewhere():
    return RuntimeError("Event loop is closed")

  def bug():
    return KeyError("a real bug")

  for make in (call_soon_threadsafe, TENSORSTORE, closed_elsewhere, bug):
    try:
      raise make()  # call_soon_threadsafe raises before it returns
    except Exception as e:  # noqa: BLE001
      hook(type(e), e, e.__traceback__)
  assert [repr(e) for e in seen] == ["RuntimeError('Event loop is closed')",
                                     "KeyError('a real bug')"]


def test_messages_quote_the_first_line_and_mark_a_cut():
  long = ValueError("RESOURCE_EXHAUSTED: Error writing " + "x" * 300 + "\nsecond line")
  line = first_line(long, 160)
  assert len(line) == 160 and line.endswith("...") and line.startswith("RESOURCE_EXHAUSTED")
  assert first_line(ValueError("short\nmore"), 160) == "short"
  assert first_line(ValueError(""), 160) == "ValueError"
