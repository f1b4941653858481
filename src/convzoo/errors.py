"""The base class of every error a user can cause (bad input, data, files, arguments).

The command line reports these as one line ``error: ...`` with exit status 2; anything else
is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """Something the user gave convzoo is wrong; the message says what and how to fix it."""
