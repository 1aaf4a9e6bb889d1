"""The errors `fer` raises for bad input, and how a file name or an error is put into a one-line message.

Every message is one line a user can act on; the command line prints it after "fer: " and exits 2.
"""
from __future__ import annotations

import os


class FerError(ValueError):
    """Bad input of any kind; the message is one line."""


class DataError(FerError):
    """A photo, video or data set that cannot be used."""


class WeightsError(FerError):
    """A weights, ONNX or checkpoint file that cannot be used."""


class ConfigError(FerError):
    """A setting out of range, or one that contradicts another (or a checkpoint's)."""


def quote(name: str | os.PathLike | bytes) -> str:
    """A file name for a message: in quotes, and with newlines, other control characters and bytes that are
    not valid UTF-8 escaped, so that a name can neither break a line nor fail to print."""
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    text = str(name)
    if text.isprintable():
        return f"'{text}'"
    return repr(text)


def one_line(error: BaseException) -> str:
    """An exception's message folded onto one line (its type when it has no message)."""
    return " ".join(str(error).split()) or type(error).__name__
