"""What every part of a model has in common: a registered name, a JSON config, weights.

Each part (frontend, speaker encoder, codec, quantizer, vocoder) is saved as one
section of the model's ``config.json``: ``{"name": ..., <settings>, "weights_sha256": ...}``.
The digest covers weights that come from a package too (the vocoder file, the
frozen Whisper), so a ``.plt`` made with other weights is refused.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from pathlib import Path
from typing import Any

from plutok.errors import ModelError

__all__ = ["FrameGrid", "Part", "settings_from_config"]


class Part:
    """Base of every registered part. Subclasses are built by :func:`plutok.registry.build`."""

    name: str = ""

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings, ``{"name": self.name, ...}``, that :meth:`from_config` reads."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> Part:
        """Rebuild from :meth:`config`; ``directory`` is the model directory (weight files)."""
        raise NotImplementedError

    def weights_digest(self) -> str:
        """SHA-256 (hex) of the weights this part computes with; ``""`` when it has none."""
        return ""

    def save_weights(self, directory: Path) -> None:
        """Write the weight files ``from_config(config(), directory)`` needs (packaged weights: nothing)."""
        return None  # noqa: B027 - optional hook


class FrameGrid:
    """Features on a waveform's frame grid: ``feature_dim`` channels, a frame every ``hop_length`` samples.

    Shared by the vocoder contract and the v1 backbones (analysis/synthesis pairs).
    """

    @property
    @abstractmethod
    def sample_rate(self) -> int:
        """Hz of the waveform the features are framed on."""

    @property
    @abstractmethod
    def hop_length(self) -> int:
        """Samples per feature frame."""

    @property
    def frames_per_second(self) -> float:
        """Feature frames per second of audio."""
        return self.sample_rate / self.hop_length

    @property
    @abstractmethod
    def feature_dim(self) -> int:
        """Feature channels ``C`` (read by a vocoder, written by a backbone's analysis)."""


def settings_from_config(settings_class: type, config: dict[str, Any], what: str) -> Any:
    """A settings dataclass from a config section (without ``name``); :class:`ModelError` on bad keys."""
    known = {field.name for field in dataclasses.fields(settings_class)}
    values = {key: value for key, value in config.items() if key not in ("name", "weights_sha256")}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelError(f"{what} config has unknown keys: {', '.join(unknown)}")
    try:
        return settings_class(**values)
    except (TypeError, ValueError) as error:
        raise ModelError(f"bad {what} config: {error}") from None
