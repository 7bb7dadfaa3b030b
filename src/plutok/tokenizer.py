"""Compatibility module (0.1): the tokenizer now lives in :mod:`plutok.api`, :mod:`plutok.encoding`, :mod:`plutok.model_directory`."""

from plutok.api import DEFAULT_CHUNK_SECONDS, Plutok
from plutok.encoding import MAX_DURATION_SECONDS, Encoding
from plutok.model_directory import MODEL_FORMAT, MODEL_FORMAT_VERSION, default_model_path

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "MAX_DURATION_SECONDS",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "Encoding",
    "Plutok",
    "default_model_path",
]
