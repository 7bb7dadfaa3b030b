"""Training batches for a codec from a :class:`~plutok.training.cache.FeatureCache`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from plutok.codec.base import CodecBatch
from plutok.speaker.base import SpeakerEncoder
from plutok.speaker.mel_statistics import active_frames
from plutok.training.cache import AnalysisReader, CachedUtterance

__all__ = ["SeededDraws", "SegmentBatcher", "whole_utterance"]


def whole_utterance(
    speaker: SpeakerEncoder, utterance: CachedUtterance, frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """What a learned speaker encoder reads of a cached utterance: its first ``frames`` frames of
    log-mel normalised by its speaker vector ``(n_mels, T)`` float32, and its active frames ``(T,)``."""
    mel = np.asarray(utterance.mel[:, :frames], dtype=np.float32)
    return speaker.normalize(mel, utterance.speaker), active_frames(mel.mean(axis=0))


class SeededDraws:
    """A random stream that is a function of seed words and the number of batches drawn.

    What :class:`~plutok.training.trainer.Trainer` saves and restores of a batcher:
    batch ``n`` is drawn with ``numpy.random.default_rng([*seed_words, n])``.
    """

    seed_words: list[int]
    batches_drawn: int

    def _next_rng(self) -> np.random.Generator:
        rng = np.random.default_rng([*self.seed_words, self.batches_drawn])
        self.batches_drawn += 1
        return rng

    def state(self) -> dict[str, Any]:
        return {"seed_words": list(self.seed_words), "batches_drawn": self.batches_drawn}

    def set_state(self, state: dict[str, Any]) -> None:
        self.seed_words = [int(word) for word in state.get("seed_words", self.seed_words)]
        self.batches_drawn = int(state["batches_drawn"])

    def restart(self, seed: list[int]) -> None:
        self.seed_words, self.batches_drawn = [int(word) for word in seed], 0


class SegmentBatcher(SeededDraws):
    """Random (or, for evaluation, fixed) segments of ``segment_codes`` codes, zero-padded with a mask.

    The target is the cached log-mel normalised by the utterance's speaker vector
    (``speaker.normalize``), cut to ``synthesis_frames_per_code`` frames per code.
    Utterances are drawn in proportion to their length, so every second of audio
    is equally likely to be seen, times ``kind_weights[utterance.kind]`` (1 for a kind
    not named) where a data mix favours some kinds of speech. The draw is a function of
    ``seed`` and of the number of batches drawn (``state``), so a resumed run sees the
    same batches.
    ``reader`` gives the analysis features when they are not the cached stream as is
    (a stacked frontend derived from the cache). ``phonemes`` (utterance id → class ids)
    adds CTC labels to the rows whose segment holds the whole utterance: a crop of a
    longer one has no known alignment with its transcript, so it gets none.
    ``utterance_frames`` (a learned speaker encoder's input): each row also carries its
    whole utterance's speaker-normalised log-mel, its first ``utterance_frames`` frames,
    with the frames the speaker statistics count (``CodecBatch.utterance``).
    """

    def __init__(
        self,
        utterances: Sequence[CachedUtterance],
        speaker: SpeakerEncoder,
        segment_codes: int,
        analysis_frames_per_code: int,
        synthesis_frames_per_code: int,
        seed: int = 0,
        reader: AnalysisReader | None = None,
        phonemes: Mapping[str, Sequence[int]] | None = None,
        kind_weights: Mapping[str, float] | None = None,
        utterance_frames: int | None = None,
    ) -> None:
        if not utterances:
            raise ValueError("no utterances to train on")
        self.utterances = list(utterances)
        self.speaker = speaker
        self.segment_codes = segment_codes
        self.a = analysis_frames_per_code
        self.s = synthesis_frames_per_code
        self.seed_words = [seed]
        self.reader = reader
        self.batches_drawn = 0
        self.phonemes = phonemes
        self.utterance_frames = utterance_frames
        self._frames = [self._analysis_frames(u) for u in self.utterances]
        self._codes = {
            u.id: -(-frames // self.a) for u, frames in zip(self.utterances, self._frames, strict=True)
        }
        lengths = np.array(self._frames, dtype=np.float64) / self.a
        if kind_weights:
            lengths *= np.array([kind_weights.get(u.kind, 1.0) for u in self.utterances])
        self._probabilities = lengths / lengths.sum()

    def _analysis_frames(self, utterance: CachedUtterance) -> int:
        return utterance.analysis.shape[1] if self.reader is None else self.reader.frames(utterance)

    def _analysis(self, utterance: CachedUtterance, begin: int, end: int) -> np.ndarray:
        if self.reader is None:
            return np.asarray(utterance.analysis[:, begin:end], dtype=np.float32)
        return self.reader(utterance, begin, end)

    def _segment(self, utterance: CachedUtterance, start: int) -> tuple[np.ndarray, np.ndarray, int]:
        codes = self.segment_codes
        piece = self._analysis(utterance, start * self.a, (start + codes) * self.a)
        analysis = np.zeros((piece.shape[0], codes * self.a), dtype=np.float32)
        target = np.zeros((utterance.mel.shape[0], codes * self.s), dtype=np.float32)
        analysis[:, : piece.shape[1]] = piece
        mel = np.asarray(utterance.mel[:, start * self.s : (start + codes) * self.s], dtype=np.float32)
        target[:, : mel.shape[1]] = self.speaker.normalize(mel, utterance.speaker)
        return analysis, target, -(-piece.shape[1] // self.a)

    def _batch(self, items: list[tuple[CachedUtterance, int]]) -> CodecBatch:
        analyses, targets, speakers, offsets, scales = [], [], [], [], []
        mask = np.zeros((len(items), self.segment_codes), dtype=np.float32)
        for row, (utterance, start) in enumerate(items):
            analysis, target, count = self._segment(utterance, start)
            analyses.append(analysis)
            targets.append(target)
            speakers.append(utterance.speaker)
            # The speaker normalisation is affine per bin: what it maps 0 and 1 back to.
            bins = np.zeros((target.shape[0], 2), dtype=np.float32)
            bins[:, 1] = 1
            offset, one = self.speaker.denormalize(bins, utterance.speaker).T
            offsets.append(offset[:, None])
            scales.append((one - offset)[:, None])
            mask[row, :count] = 1
        phonemes, phoneme_lengths = self._labels(items)
        utterance, utterance_active = self._utterances(items) if self.utterance_frames else (None, None)
        return CodecBatch(
            torch.from_numpy(np.stack(analyses)),
            torch.from_numpy(np.stack(targets)),
            torch.from_numpy(np.stack(speakers).astype(np.float32)),
            torch.from_numpy(mask),
            phonemes,
            phoneme_lengths,
            target_scale=torch.from_numpy(np.stack(scales).astype(np.float32)),
            target_offset=torch.from_numpy(np.stack(offsets).astype(np.float32)),
            utterance=utterance,
            utterance_active=utterance_active,
        )

    def _utterances(self, items: list[tuple[CachedUtterance, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, n_mels, frames)`` speaker-normalised whole-utterance log-mels and ``(B, frames)`` active frames."""
        rows = [whole_utterance(self.speaker, u, self.utterance_frames) for u, _ in items]
        frames = max(mel.shape[1] for mel, _ in rows)
        normalized = np.zeros((len(items), rows[0][0].shape[0], frames), dtype=np.float32)
        active = np.zeros((len(items), frames), dtype=np.float32)
        for row, (mel, mask) in enumerate(rows):
            normalized[row, :, : mel.shape[1]] = mel
            active[row, : mel.shape[1]] = mask
        return torch.from_numpy(normalized), torch.from_numpy(active)

    def _labels(self, items: list[tuple[CachedUtterance, int]]) -> tuple[torch.Tensor | None, ...]:
        if self.phonemes is None:
            return None, None
        rows = [
            list(self.phonemes.get(u.id, ()))
            if start == 0 and self._codes[u.id] <= self.segment_codes
            else []
            for u, start in items
        ]
        labels = torch.zeros(len(rows), max(1, max(len(r) for r in rows)), dtype=torch.long)
        for row, ids in enumerate(rows):
            labels[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return labels, torch.tensor([len(r) for r in rows], dtype=torch.long)

    def sample(self, batch_size: int) -> CodecBatch:
        """The next random batch."""
        rng = self._next_rng()
        picks = rng.choice(len(self.utterances), size=batch_size, p=self._probabilities)
        items = []
        for index in picks:
            utterance = self.utterances[int(index)]
            codes = -(-self._frames[int(index)] // self.a)
            items.append((utterance, int(rng.integers(0, max(1, codes - self.segment_codes + 1)))))
        return self._batch(items)

    def fixed_batches(self, batch_size: int, limit: int | None = None) -> list[CodecBatch]:
        """The first segment of each utterance (up to ``limit``), in order: a deterministic dev set."""
        chosen = self.utterances[:limit]
        return [
            self._batch([(u, 0) for u in chosen[i : i + batch_size]])
            for i in range(0, len(chosen), batch_size)
        ]
