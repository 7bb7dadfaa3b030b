"""``global-variance``: undo the codec decoder's over-smoothing with one gain per channel.

A decoder trained with L1-type losses predicts a log-mel that varies less than speech does
(the conditional mean of what could follow the codes): for the default model each band's
standard deviation is 3-14 % below that of the real log-mel. The statistical-parametric
synthesis answer is to restore the global variance: here each channel of the decoder's
speaker-normalised output is multiplied by ``gain[c]``, the ratio of the real to the decoded
standard deviation measured on training speech (``scripts/global_variance_pilot.py``).
Normalised channels are centred on the utterance's own level, so scaling them widens the
variation about that level without moving it, frame by frame.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from plutok.errors import ModelError
from plutok.postfilters.base import Postfilter
from plutok.settings import MAX_WIDTH

__all__ = ["GlobalVariancePostfilter", "MAX_GAIN"]

#: Gains outside ``[1 / MAX_GAIN, MAX_GAIN]`` are refused: the measured ones are 1.03-1.16,
#: and a gain of 10 would turn the log-mel into noise.
MAX_GAIN = 4.0


class GlobalVariancePostfilter(Postfilter):
    """``features * gain[:, None]`` for a fixed ``gain`` ``(C_out,)``."""

    name = "global-variance"

    def __init__(self, gain: Any) -> None:
        values = np.asarray(gain, dtype=np.float64).reshape(-1) if _is_number_list(gain) else None
        if values is None or not 0 < values.shape[0] <= MAX_WIDTH:
            raise ModelError(f"global-variance post-filter: gain must be a list of 1..{MAX_WIDTH} numbers")
        if not np.all(np.isfinite(values)) or np.any(values < 1 / MAX_GAIN) or np.any(values > MAX_GAIN):
            raise ModelError(
                f"global-variance post-filter: every gain must be a finite number in "
                f"[{1 / MAX_GAIN:g}, {MAX_GAIN:g}]"
            )
        # Six decimals, as config() writes them: a saved and reloaded filter computes the same.
        self.gain = np.round(values, 6).astype(np.float32)

    @property
    def feature_dim(self) -> int:
        return int(self.gain.shape[0])

    def apply(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] != self.feature_dim:
            raise ModelError(
                f"global-variance post-filter has {self.feature_dim} gains; the decoder wrote shape {features.shape}"
            )
        return features * self.gain[:, None]

    def apply_tensor(self, features: Any) -> Any:
        import torch

        return features * torch.as_tensor(self.gain, dtype=features.dtype, device=features.device)[:, None]

    def config(self) -> dict[str, Any]:
        # Rounded to 6 digits so that the JSON (and the fingerprint) is stable across runs.
        return {"name": self.name, "gain": [round(float(value), 6) for value in self.gain]}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> GlobalVariancePostfilter:
        unknown = sorted(set(config) - {"name", "gain", "weights_sha256"})
        if unknown:
            raise ModelError(f"global-variance post-filter config has unknown keys: {', '.join(unknown)}")
        if "gain" not in config:
            raise ModelError("global-variance post-filter config has no 'gain'")
        return cls(config["gain"])

    def weights_digest(self) -> str:
        # The gains are its only values and live in the config; digest them like weights.
        return hashlib.sha256(json.dumps(self.config()["gain"]).encode()).hexdigest()


def _is_number_list(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and all(
        isinstance(item, (int, float, np.integer, np.floating)) and not isinstance(item, bool) for item in value
    )
