"""The one error type the data pipeline raises for bad input."""

from __future__ import annotations


class DataError(ValueError):
    """Input data that cannot be used; the message names the problem and the fix.

    The trainer prints it without a traceback, so the message must stand on its own.
    """
