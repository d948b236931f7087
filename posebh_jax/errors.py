"""Errors a user can cause: caught by the entry point and printed as one line with what to do."""


class UserError(ValueError):
  """A mistake in the config, the command line or the data that the user can fix; the message says how."""
