"""Batches for :meth:`Plutok.encode_batch` / :meth:`Plutok.decode_batch`: lists or padded tensors in, items out.

Two ways to pass a batch, as EnCodec and DAC users have them:

* a list (or tuple) of items, each as the one-item call takes it: audio ``(samples,)``
  or ``(samples, channels)``; token ids ``(N,)``; numpy arrays, lists or torch tensors;
* one padded array or torch tensor: audio ``(B, T)`` or ``(B, C, T)`` (channels first,
  as in EnCodec/DAC), token ids ``(B, N)``, with ``lengths`` ``(B,)`` giving the valid
  samples or ids of each row (default: all of them).

Every item then goes through the one-item path, so results equal one-by-one calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from plutok.errors import AudioError, PlutokError

__all__ = ["AudioBatch", "split_audio", "split_ids"]


@dataclass
class AudioBatch:
    """Decoded clips of one batch.

    Attributes:
        wavs: float32 ``(samples_i,)`` per item, in input order.
        sample_rate: Hz of every clip.
        device: where :meth:`padded` puts its tensors (the input tensor's device, else CPU).
    """

    wavs: list[np.ndarray]
    sample_rate: int
    device: torch.device | str = "cpu"

    def __len__(self) -> int:
        return len(self.wavs)

    @property
    def lengths(self) -> list[int]:
        """Samples of each clip."""
        return [int(wav.shape[0]) for wav in self.wavs]

    def padded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(audio, lengths)``: float32 ``(B, 1, T)`` zero-padded to the longest clip, int64 ``(B,)``."""
        longest = max(self.lengths, default=0)
        audio = torch.zeros((len(self.wavs), 1, longest), dtype=torch.float32)
        for row, wav in enumerate(self.wavs):
            audio[row, 0, : wav.shape[0]] = torch.from_numpy(np.ascontiguousarray(wav))
        lengths = torch.tensor(self.lengths, dtype=torch.int64)
        return audio.to(self.device), lengths.to(self.device)


def is_padded(batch: Any) -> bool:
    """A padded array/tensor (one object for the whole batch), not a list of items."""
    return isinstance(batch, (np.ndarray, torch.Tensor))


def device_of(batch: Any) -> torch.device | str:
    """The device of a torch tensor batch (or of its first item); CPU otherwise."""
    if isinstance(batch, torch.Tensor):
        return batch.device
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0].device
    return "cpu"


def _numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _lengths(lengths: Any, size: int, longest: int, what: str) -> list[int]:
    if lengths is None:
        return [longest] * size
    values = _numpy(lengths).reshape(-1)
    if values.shape[0] != size:
        raise PlutokError(f"lengths has {values.shape[0]} values for a batch of {size} {what}")
    if not np.issubdtype(values.dtype, np.integer) or (values < 0).any() or (values > longest).any():
        raise PlutokError(f"lengths must be integers in 0..{longest} ({what} per row), got {values.tolist()}")
    return [int(value) for value in values]


def split_audio(batch: Any, lengths: Any = None) -> list[np.ndarray]:
    """The clips of an audio batch, each ``(samples,)`` or ``(samples, channels)`` as ``encode`` takes it.

    Raises:
        AudioError: a padded batch that is not ``(B, T)`` or ``(B, C, T)``.
        PlutokError: ``lengths`` with a list, or not one valid length per row.
    """
    if not is_padded(batch):
        if lengths is not None:
            raise PlutokError(
                "lengths goes with a padded (B, T) or (B, C, T) batch, not with a list of clips"
            )
        return [_numpy(item) for item in batch]
    array = _numpy(batch)
    if array.ndim not in (2, 3):
        raise AudioError(f"a padded audio batch is (B, T) or (B, C, T); got shape {array.shape}")
    valid = _lengths(lengths, array.shape[0], array.shape[-1], "samples")
    if array.ndim == 2:
        return [array[row, :length] for row, length in enumerate(valid)]
    return [array[row, :, :length].T for row, length in enumerate(valid)]  # (C, T) -> (samples, channels)


def split_ids(batch: Any, lengths: Any = None) -> list[list[int]]:
    """The id sequences of a token batch: a list of sequences, or ``(B, N)`` with ``lengths``.

    Raises:
        TokenError: ids that are not integers (from the one-item path).
        PlutokError: a padded batch that is not ``(B, N)``; ``lengths`` with a list or invalid.
    """
    if not is_padded(batch):
        if lengths is not None:
            raise PlutokError("lengths goes with a padded (B, N) batch of ids, not with a list")
        return [_numpy(item).reshape(-1).tolist() if not isinstance(item, list) else item for item in batch]
    array = _numpy(batch)
    if array.ndim != 2:
        raise PlutokError(f"a padded batch of token ids is (B, N); got shape {array.shape}")
    valid = _lengths(lengths, array.shape[0], array.shape[1], "ids")
    return [array[row, :length].tolist() for row, length in enumerate(valid)]


def per_item(value: Any, size: int, is_one: Any) -> Sequence[Any]:
    """``value`` for each of ``size`` items: a list/tuple of ``size`` is per item, anything else shared.

    ``is_one(value)``: True when a list/tuple ``value`` is nevertheless one shared value
    (a speaker vector given as a list of floats).
    """
    if isinstance(value, (list, tuple)) and not is_one(value):
        if len(value) != size:
            raise PlutokError(f"got {len(value)} speakers for a batch of {size}")
        return value
    return [value] * size
