"""The base class of every error a user can cause (bad input, data, files, arguments).

The command line reports these as one line ``error: ...`` with the error's ``exit_code`` (2 unless
a subclass says otherwise, e.g. 3 for a diverged run); anything else is a bug and keeps its
traceback.
"""


class UserError(ValueError):
    """Something the user gave convzoo is wrong; the message says what and how to fix it."""

    exit_code = 2
