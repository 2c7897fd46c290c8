"""Entry-point plumbing: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import logging
import os
import sys

from utils.errors import UserError


def _quiet_logs() -> None:
  # orbax and absl log every checkpoint at INFO; a researcher wants the progress bar and errors
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("absl").setLevel(logging.WARNING)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_main(main) -> None:
  from absl import app

  def wrapped(argv):
    _quiet_logs()
    try:
      return main(argv)
    except UserError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2

  try:
    app.run(wrapped)
  except UserError as e:  # raised while parsing flags (e.g. a bad config variant)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
