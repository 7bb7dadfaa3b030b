"""Several frontends' features stacked on channels at one frame rate (docs/architecture.md, "Contracts").

The first member sets the frame rate ``R``. Every other member must run at a
whole multiple ``k R`` and contributes ``k`` consecutive frames per output frame,
folded into ``k C`` channels (row ``j C + c`` holds bin ``c`` of sub-frame ``j``),
zero-padded or cut to exactly ``k`` frames per output frame (before speaker
normalisation, the same way in training and at inference). The padding covers at
most ``k - 1`` sub-frames at an utterance's very end; a model trained with it has
learnt it, so changing the pad value would change that model's last token. Example, the 2nd v2 experiment: Whisper-base at 25 frames/s (512
channels) + the speaker-normalised 100 frames/s log-mel (4 x 80 channels) = 832
channels at 25 frames/s.

Members with ``normalize_by_speaker`` are normalised by the model's speaker encoder
(:meth:`normalized`), each on its own channels, so the mel part is exactly the
decoder's own (speaker-normalised) target folded to the code rate.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from plutok import registry
from plutok.audio import as_waveform
from plutok.errors import ModelError
from plutok.frontends.base import Frontend

__all__ = ["StackedFrontend", "fold_frames", "unfold_frames"]


def fold_frames(features: np.ndarray, factor: int, frames: int) -> np.ndarray:
    """``(C, >= factor * frames)`` features (zero-padded if shorter) -> ``(factor * C, frames)``."""
    channels = features.shape[0]
    needed = factor * frames
    if features.shape[1] < needed:
        features = np.pad(features, ((0, 0), (0, needed - features.shape[1])))
    block = features[:, :needed].reshape(channels, frames, factor)
    return np.ascontiguousarray(block.transpose(2, 0, 1).reshape(factor * channels, frames))


def unfold_frames(folded: np.ndarray, factor: int) -> np.ndarray:
    """Inverse of :func:`fold_frames`: ``(factor * C, T)`` -> ``(C, factor * T)``."""
    channels = folded.shape[0] // factor
    frames = folded.shape[1]
    return np.ascontiguousarray(
        folded.reshape(factor, channels, frames).transpose(1, 2, 0).reshape(channels, -1)
    )


class StackedFrontend(Frontend):
    """See the module docstring. ``members``: built frontends, the first sets the rate."""

    name = "stack"

    def __init__(self, members: Sequence[Frontend]) -> None:
        if len(members) < 2:
            raise ModelError("a stacked frontend needs at least two members")
        rates = {member.sample_rate for member in members}
        if len(rates) != 1:
            raise ModelError(f"stacked frontends must read one sample rate, got {sorted(rates)}")
        self.members = list(members)
        base = self.members[0].frames_per_second
        self.factors = []
        for member in self.members:
            factor = member.frames_per_second / base
            if factor < 1 or abs(factor - round(factor)) > 1e-9:
                raise ModelError(
                    f"{member.name} runs at {member.frames_per_second} frames/s, not a whole multiple of "
                    f"the first member's {base}"
                )
            self.factors.append(round(factor))

    @property
    def sample_rate(self) -> int:
        return self.members[0].sample_rate

    @property
    def frames_per_second(self) -> float:
        return self.members[0].frames_per_second

    @property
    def feature_dim(self) -> int:
        return sum(
            member.feature_dim * factor for member, factor in zip(self.members, self.factors, strict=True)
        )

    @property
    def context_frames(self) -> int:
        return max(
            math.ceil(member.context_frames / factor)
            for member, factor in zip(self.members, self.factors, strict=True)
        )

    def num_frames(self, num_samples: int) -> int:
        return self.members[0].num_frames(num_samples)

    def channel_slices(self) -> list[slice]:
        """The channels of each member in the stacked features."""
        slices, start = [], 0
        for member, factor in zip(self.members, self.factors, strict=True):
            slices.append(slice(start, start + member.feature_dim * factor))
            start += member.feature_dim * factor
        return slices

    def stack(self, member_features: Sequence[np.ndarray]) -> np.ndarray:
        """Stack each member's own ``(C_i, T_i)`` output into ``(feature_dim, T)`` (T of the first member)."""
        frames = member_features[0].shape[1]
        parts = [
            fold_frames(np.asarray(features, dtype=np.float32), factor, frames)
            for features, factor in zip(member_features, self.factors, strict=True)
        ]
        return np.concatenate(parts, axis=0)

    def analyze(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        return self.stack([member.analyze(wav, speaker) for member in self.members])

    def analysis_blocks(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """:meth:`analyze` as blocks: the members' blocks re-cut at common output frames and stacked.

        The member furthest behind (in output frames) is read next, so at most about one
        block of each member is held. Folding is frame by frame and the end padding is
        applied only to the last block, so the blocks join to :meth:`analyze` bit for bit.
        """
        total = self.num_frames(as_waveform(wav).shape[0])
        sources = [member.analysis_blocks(wav, speaker) for member in self.members]
        pending: list[list[np.ndarray]] = [[] for _ in self.members]
        held = [0] * len(self.members)  # member frames in ``pending``
        finished = [False] * len(self.members)
        emitted = 0
        while emitted < total:
            # Output frames each member can fill now (an exhausted member pads with zeros).
            ready = [
                total - emitted if done else count // factor
                for count, factor, done in zip(held, self.factors, finished, strict=True)
            ]
            frames = min(total - emitted, *ready)
            if frames == 0:
                behind = min(range(len(self.members)), key=lambda i: (finished[i], ready[i]))
                block = next(sources[behind], None)
                if block is None:
                    finished[behind] = True
                else:
                    pending[behind].append(np.asarray(block, dtype=np.float32))
                    held[behind] += block.shape[1]
                continue
            parts = []
            for index, factor in enumerate(self.factors):
                joined = np.concatenate(pending[index], axis=1) if pending[index] else None
                if joined is None:
                    joined = np.zeros((self.members[index].feature_dim, 0), dtype=np.float32)
                parts.append(fold_frames(joined, factor, frames))
                rest = joined[:, factor * frames :]
                pending[index] = [rest] if rest.shape[1] else []
                held[index] = rest.shape[1]
            emitted += frames
            yield np.concatenate(parts, axis=0)

    def analyze_batch(
        self, wavs: Sequence[np.ndarray], speakers: Sequence[np.ndarray | None] | None = None
    ) -> list[np.ndarray]:
        per_member = [member.analyze_batch(wavs, speakers) for member in self.members]
        return [self.stack([outputs[i] for outputs in per_member]) for i in range(len(wavs))]

    def normalized(self, analysis: np.ndarray, speaker: np.ndarray, speaker_encoder: Any) -> np.ndarray:
        """Each member's channels normalised the way that member asks (see the module docstring)."""
        result = np.array(analysis, dtype=np.float32, copy=True)
        for member, factor, channels in zip(self.members, self.factors, self.channel_slices(), strict=True):
            if member.normalize_by_speaker:
                unfolded = unfold_frames(result[channels], factor)
                normalized = speaker_encoder.normalize(unfolded, speaker)
                result[channels] = fold_frames(normalized, factor, analysis.shape[1])
        return result

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "members": [member.config() for member in self.members]}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> StackedFrontend:
        unknown = sorted(set(config) - {"name", "members", "weights_sha256"})
        if unknown or not isinstance(config.get("members"), list):
            raise ModelError(f"stack frontend config needs a 'members' list only (unknown: {unknown})")
        return cls([registry.build("frontend", member, directory) for member in config["members"]])

    def weights_digest(self) -> str:
        digests = [member.weights_digest() for member in self.members]
        if not any(digests):
            return ""
        return hashlib.sha256("\n".join(digests).encode()).hexdigest()

    def to(self, device: str) -> StackedFrontend:
        for member in self.members:
            member.to(device)
        return self
