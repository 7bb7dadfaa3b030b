"""Exception types raised by Plutok.

Every user mistake (bad audio, a foreign ``.plt`` file, an unknown token id, a
broken model directory) ends in one of these, so callers can catch
``PlutokError`` and the CLI can print one clear line instead of a traceback.
"""

from __future__ import annotations


class PlutokError(Exception):
    """Base class of every error Plutok raises on purpose."""


class AudioError(PlutokError):
    """The audio input cannot be used: missing, unreadable, empty, too short, NaN/inf."""


class ContainerError(PlutokError):
    """A ``.plt`` file is truncated, corrupt or of an unknown version; a file, row or encoding is from another model."""


class TokenError(PlutokError):
    """Token ids or codes are out of range or otherwise cannot be decoded."""


class ModelError(PlutokError):
    """A model directory or checkpoint is missing, corrupt or does not match the architecture."""
