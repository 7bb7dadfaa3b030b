"""Codec decoders: code vectors (+ speaker) -> synthesis features (:class:`~plutok.codec.decoders.base.CodecDecoder`)."""
