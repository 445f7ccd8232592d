"""The one exception type that means "the user asked for something we cannot do".

`main.py` prints a `UserError` as a single line and exits with status 2; any other
exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake in flags, files or data that the user can fix; the message says how."""
