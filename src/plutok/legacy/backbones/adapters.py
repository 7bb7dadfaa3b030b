"""A v1 backbone (analysis/synthesis pair) seen as the three v2 parts: frontend, speaker encoder, vocoder.

The mel backbone maps onto the real parts it is made of. OpenVoice stays one
model whose three roles share weights; the adapters below expose those roles
and are built only from a v1 model file (never by name from a v2 config).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from plutok.frontends.base import Frontend
from plutok.legacy.backbones.base import Backbone
from plutok.speaker.base import SpeakerEncoder
from plutok.vocoders.base import Vocoder

__all__ = ["split_backbone"]


class _BackboneFrontend(Frontend):
    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.name = f"{backbone.name}-features"

    sample_rate = property(lambda self: self.backbone.sample_rate)  # type: ignore[assignment]
    frames_per_second = property(lambda self: self.backbone.frames_per_second)  # type: ignore[assignment]
    feature_dim = property(lambda self: self.backbone.feature_dim)  # type: ignore[assignment]

    def num_frames(self, num_samples: int) -> int:
        return self.backbone.num_frames(num_samples)

    def analyze(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        return self.backbone.features(wav, speaker)

    def analysis_blocks(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> Iterator[np.ndarray]:
        return self.backbone.feature_blocks(wav, speaker)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def weights_digest(self) -> str:
        return self.backbone.weights_digest()


class _BackboneSpeaker(SpeakerEncoder):
    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.name = f"{backbone.name}-speaker"

    sample_rate = property(lambda self: self.backbone.sample_rate)  # type: ignore[assignment]
    speaker_dim = property(lambda self: self.backbone.speaker_dim)  # type: ignore[assignment]

    def embed(self, wav: np.ndarray) -> np.ndarray:
        return self.backbone.speaker_embedding(wav)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def weights_digest(self) -> str:
        return self.backbone.weights_digest()


class _BackboneVocoder(Vocoder):
    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.name = f"{backbone.name}-synthesis"

    sample_rate = property(lambda self: self.backbone.sample_rate)  # type: ignore[assignment]
    hop_length = property(lambda self: self.backbone.hop_length)  # type: ignore[assignment]
    feature_dim = property(lambda self: self.backbone.feature_dim)  # type: ignore[assignment]
    context_frames = 0  # type: ignore[assignment]  # synthesize() chunks (or not) by itself

    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray | None = None, chunk_frames: int | None = None
    ) -> np.ndarray:
        return self.backbone.synthesize(features, speaker, chunk_frames=chunk_frames)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    def weights_digest(self) -> str:
        return self.backbone.weights_digest()


def split_backbone(backbone: Backbone) -> tuple[Frontend, SpeakerEncoder, Vocoder]:
    """``(frontend, speaker encoder, vocoder)`` computing exactly what ``backbone`` computes."""
    from plutok.legacy.backbones.mel import MelBackbone

    if isinstance(backbone, MelBackbone):
        return backbone.frontend, backbone.speaker, backbone.vocoder
    return _BackboneFrontend(backbone), _BackboneSpeaker(backbone), _BackboneVocoder(backbone)
