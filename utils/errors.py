"""User errors: the entry points print these as one clear line and exit non-zero.

Everything else is a bug and keeps its traceback. UserError subclasses ValueError so that
library callers can catch either.
"""


class UserError(ValueError):
  """Something the user can fix: the message says what was wrong and what to do."""


class ConfigError(UserError):
  """A bad or inconsistent config value (refused before anything is compiled)."""
