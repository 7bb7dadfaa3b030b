"""Codec encoders: analysis features -> latents at the code rate (:class:`~plutok.codec.encoders.base.CodecEncoder`)."""
