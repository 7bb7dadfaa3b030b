"""Codecs: encoder + quantizer + decoder between analysis and synthesis features (:class:`Codec`)."""

from plutok.codec.base import Codec, CodecBatch

__all__ = ["Codec", "CodecBatch"]
