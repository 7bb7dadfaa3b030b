"""Shared fixtures for the evaluation tests: tiny speech-like clips, a 2-utterance manifest, a fake tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from plutok.bench import speech_like

RATE = 16000


@pytest.fixture(scope="session")
def clip() -> np.ndarray:
    """1.5 s of deterministic speech-like audio at 16 kHz."""
    return speech_like(1.5, RATE, seed=3)


@pytest.fixture()
def manifest(tmp_path: Path) -> Path:
    """A 2-utterance manifest (one real, one synthetic) with relative paths."""
    rows = []
    for index, (language, kind) in enumerate((("en", "real"), ("cs", "synthetic"))):
        audio = tmp_path / "audio" / f"utt{index}.wav"
        audio.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(audio), speech_like(1.2 + 0.3 * index, 22050, seed=index), 22050)
        rows.append(
            {
                "id": f"utt{index}",
                "path": f"audio/utt{index}.wav",
                "language": language,
                "text": "Hello, world!",
                "split": "dev",
                "kind": kind,
                "source": "test",
            }
        )
    rows.append({"id": "train0", "path": "audio/utt0.wav", "language": "en", "text": "x", "split": "train"})
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return path


@dataclass
class FakeEncoding:
    ids: list[int]
    speaker: np.ndarray
    wav: np.ndarray = field(repr=False)


class FakeBPE:
    def encode(self, codes):
        return [int(c) for c in codes]

    def decode(self, ids):
        return np.asarray(ids, dtype=np.int64)


class FakeTokenizer:
    """Follows the Plutok contract: one code per 40 ms frame (energy level 0..15), audio passed through."""

    sample_rate = RATE
    codebook_size = 16
    vocab_size = 16
    speaker_bits = 64
    bits_per_token = 4
    bpe = FakeBPE()

    def bitrate(self, tokens_per_second, seconds):
        return tokens_per_second * self.bits_per_token + self.speaker_bits / seconds

    def encode(self, wav, sample_rate):
        frames = np.asarray(wav)[: len(wav) // 640 * 640].reshape(-1, 640)
        levels = np.clip((np.sqrt((frames**2).mean(axis=1)) * 60).astype(int), 0, 15)
        return FakeEncoding(
            ids=levels.tolist(), speaker=np.zeros(4, np.float32), wav=np.asarray(wav, np.float32)
        )

    def decode(self, encoding):
        return encoding.wav.copy(), RATE

    def ids_to_codes(self, ids):
        return np.asarray(list(ids), dtype=np.int64)


@pytest.fixture()
def fake_tokenizer() -> FakeTokenizer:
    return FakeTokenizer()
