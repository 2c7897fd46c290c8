"""User errors: the entry points print these as one clear line and exit non-zero.

Everything else is a bug and keeps its traceback. UserError subclasses ValueError so that
library callers can catch either.
"""
import errno


class UserError(ValueError):
  """Something the user can fix: the message says what was wrong and what to do."""


class ConfigError(UserError):
  """A bad or inconsistent config value (refused before anything is compiled)."""


class DiskFullError(UserError):
  """A write failed for want of space (or quota): the message names what was being written,
  what is intact, and that the same command resumes once space is freed."""


class PeerLostError(UserError):
  """A process of a run of several stopped mid-run (killed, its host lost): the others cannot
  go on; the message names what is intact and that rerunning every process resumes."""


# How a full disk reads in an exception: OSError's errno, or tensorstore's status text (orbax
# checkpoints are written by tensorstore, which raises ValueError('RESOURCE_EXHAUSTED: ...')).
_NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_NO_SPACE_TEXT = ("RESOURCE_EXHAUSTED", "No space left on device", "Disk quota exceeded")


def _chain(exc: BaseException | None):
  """exc and the exceptions it was raised from or during."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__ or exc.__context__


def mentions(exc: BaseException | None, texts) -> bool:
  """True when the text of exc, or of an exception it was raised from or during, contains
  one of texts."""
  return any(t in str(e) for e in _chain(exc) for t in texts)


def disk_full(exc: BaseException | None) -> bool:
  """True when exc, or an exception it was raised from or during, is a full disk."""
  return (any(isinstance(e, OSError) and e.errno in _NO_SPACE_ERRNOS for e in _chain(exc))
          or mentions(exc, _NO_SPACE_TEXT))


def first_line(exc: BaseException, limit: int = 200) -> str:
  """The first line of exc's text for a one-line message, '...' marking where it was cut
  (tensorstore's messages run to several hundred characters of paths and status)."""
  lines = str(exc).splitlines()
  line = lines[0] if lines else type(exc).__name__
  return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."
