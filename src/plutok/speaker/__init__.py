"""Speaker encoders: one vector per utterance (:class:`SpeakerEncoder`)."""

from plutok.speaker.base import SpeakerEncoder

__all__ = ["SpeakerEncoder"]
