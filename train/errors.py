"""Errors a person reads: the inference commands' RunError and the one-line form of an exception
that every message quotes."""

from __future__ import annotations


class RunError(RuntimeError):
    """A run directory that cannot be used as asked; the message names the problem and the fix."""


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip()
    return (text.splitlines()[0][:limit] if text else "") or type(e).__name__
