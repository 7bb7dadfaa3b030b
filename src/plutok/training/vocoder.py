"""Training the fast iSTFT vocoder by distillation from the packaged HiFi-GAN.

Two stages, both resumable:

1. ``teacher set`` (:func:`build_teacher_set`): for a seeded sample of training
   utterances of a feature cache (``real_hours`` of real speech, ``other_hours`` of
   the rest), the cached log-mel goes through the packaged HiFi-GAN once; the
   log-mel and the teacher's waveform are stored float16, memory-mapped, like the
   feature cache (``mel.f16``, ``wave.f16``, ``index.jsonl`` written after the frames).
2. ``train`` (:func:`train_vocoder`): the :class:`~plutok.training.trainer.Trainer`
   on random crops of that set under
   :class:`~plutok.training.objectives.ISTFTDistillationObjective`. Writes ``RUN/vocoder/`` (config +
   weights rounded to float16 values), which :func:`plutok.training.assemble.replace_vocoder` puts into a model.

The targets are the teacher's output, not the recordings: the student learns the
function HiFi-GAN computes (phase included), so copy-synthesis quality is bounded
by HiFi-GAN's, and the margins that matter are measured against it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from plutok.errors import ModelError
from plutok.files import atomic_write_text
from plutok.settings import TrainerConfig
from plutok.training.cache import FeatureCache, read_index
from plutok.training.data import SeededDraws
from plutok.training.objectives import ISTFTDistillationObjective
from plutok.training.trainer import Callback, Trainer, seed_everything
from plutok.vocoders.istft import ISTFTNet, ISTFTVocoder, ISTFTVocoderSettings
from plutok.weights import round_to_half

__all__ = ["TeacherSet", "VocoderBatch", "VocoderBatcher", "build_teacher_set", "train_vocoder"]

VOCODER_DIR = "vocoder"
_INDEX = "index.jsonl"
_CONFIG = "teacher.json"


@dataclass
class VocoderBatch:
    """``log_mel`` ``(B, n_mels, T)`` and the teacher's ``wave`` ``(B, T * hop + 2 * margin)`` (torch).

    The wave has ``margin = (n_fft - hop) / 2`` real samples beyond the crop on each side
    (zeros only at an utterance's ends), so the target spectrum of every frame, the
    crop's first and last included, is that of the teacher's continuous signal.
    """

    log_mel: torch.Tensor
    wave: torch.Tensor

    def to(self, device: torch.device | str) -> VocoderBatch:
        return VocoderBatch(self.log_mel.to(device), self.wave.to(device))


def build_teacher_set(
    cache_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    real_hours: float = 0.7,
    other_hours: float = 0.3,
    split: str = "train",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, float]:
    """Run the packaged HiFi-GAN over a sample of cached utterances (see the module docstring).

    Returns:
        ``{"utterances": n, "hours": h, "added": n}`` of the whole set.
    """
    from tqdm import tqdm

    from plutok.vocoders.hifigan import PackagedHiFiGAN

    cache = FeatureCache(cache_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "cache": str(Path(cache_dir).resolve()),
        "mel": cache.config["mel"],
        "teacher": "hifigan-16k",
        "real_hours": real_hours,
        "other_hours": other_hours,
        "split": split,
        "seed": seed,
        # The sample is drawn from these utterances: a grown cache would draw another one.
        "cache_utterances": len(cache.utterances(split)),
    }
    config_path = out / _CONFIG
    if config_path.is_file() and json.loads(config_path.read_text(encoding="utf-8")) != config:
        raise ModelError(f"{out}: teacher set was made with other settings; use another directory")
    atomic_write_text(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    chosen = _choose(cache.utterances(split), real_hours, other_hours, seed)
    rows = read_index(out / _INDEX)
    done = {row["id"] for row in rows}
    hop = int(cache.config["mel"]["hop_length"])
    ends = {"mel": 0, "wave": 0}
    for row in rows:
        ends["mel"] = max(ends["mel"], row["mel"][0] + row["mel"][1])
        ends["wave"] = max(ends["wave"], row["wave"][0] + row["wave"][1])
    atomic_write_text(out / _INDEX, "".join(json.dumps(row) + "\n" for row in rows))
    dims = {"mel": int(cache.config["mel_dim"]), "wave": 1}
    files = {}
    for stream in ("mel", "wave"):
        handle = open(out / f"{stream}.f16", "ab")
        handle.truncate(ends[stream] * dims[stream] * 2)  # drop frames of a killed run
        handle.seek(0, os.SEEK_END)
        files[stream] = handle
    teacher = PackagedHiFiGAN()
    added = 0
    try:
        with open(out / _INDEX, "a", encoding="utf-8") as index:
            for utterance in tqdm(chosen, desc="teacher", unit="utt", disable=not progress):
                if utterance.id in done:
                    continue
                log_mel = np.asarray(utterance.mel, dtype=np.float32)
                wave = teacher.synthesize(log_mel)[: log_mel.shape[1] * hop]
                row = {"id": utterance.id, "kind": utterance.kind, "language": utterance.language}
                for stream, frames in (("mel", log_mel.T), ("wave", wave[:, None])):
                    files[stream].write(np.ascontiguousarray(frames, dtype=np.float16).tobytes())
                    files[stream].flush()
                    row[stream] = [ends[stream], int(frames.shape[0])]
                    ends[stream] += int(frames.shape[0])
                index.write(json.dumps(row) + "\n")
                index.flush()
                added += 1
    finally:
        for handle in files.values():
            handle.close()
    teacher_set = TeacherSet(out)
    return {"utterances": len(teacher_set), "hours": round(teacher_set.hours, 3), "added": added}


def _choose(utterances: list[Any], real_hours: float, other_hours: float, seed: int) -> list[Any]:
    """A seeded sample: ``real_hours`` of kind ``real`` and ``other_hours`` of the other kinds."""
    order = np.random.default_rng(seed).permutation(len(utterances))
    budgets = {"real": real_hours * 3600, "other": other_hours * 3600}
    chosen = []
    for index in order:
        utterance = utterances[int(index)]
        group = "real" if utterance.kind == "real" else "other"
        if budgets[group] > 0:
            chosen.append(utterance)
            budgets[group] -= utterance.seconds
    return chosen


class TeacherSet:
    """Read side of a teacher set: per utterance a log-mel ``(n_mels, T)`` and a wave ``(T * hop,)`` view."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)
        if not (self.directory / _CONFIG).is_file():
            raise ModelError(f"{self.directory}: not a teacher set (no {_CONFIG}); build one first")
        self.config = json.loads((self.directory / _CONFIG).read_text(encoding="utf-8"))
        self.hop = int(self.config["mel"]["hop_length"])
        self.n_mels = int(self.config["mel"]["n_mels"])
        self.rows = read_index(self.directory / _INDEX)
        self._mel = _memmap(self.directory / "mel.f16", self.n_mels)
        self._wave = _memmap(self.directory / "wave.f16", 1)[:, 0]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def hours(self) -> float:
        return sum(row["wave"][1] for row in self.rows) / int(self.config["mel"]["sample_rate"]) / 3600

    def mel(self, index: int) -> np.ndarray:
        start, count = self.rows[index]["mel"]
        return self._mel[start : start + count].T

    def wave(self, index: int) -> np.ndarray:
        start, count = self.rows[index]["wave"]
        return self._wave[start : start + count]


def _memmap(path: Path, dim: int) -> np.ndarray:
    if not path.is_file() or path.stat().st_size == 0:
        return np.zeros((0, dim), dtype=np.float16)
    return np.memmap(path, dtype=np.float16, mode="r").reshape(-1, dim)


class VocoderBatcher(SeededDraws):
    """Random crops of ``segment_frames`` frames (or, for evaluation, fixed ones), a function of seed and count."""

    def __init__(
        self, teacher: TeacherSet, rows: list[int], segment_frames: int, margin: int, seed: int = 0
    ) -> None:
        if not rows:
            raise ModelError("no teacher utterances to train on")
        self.teacher, self.rows = teacher, rows
        self.segment_frames, self.margin, self.seed_words = segment_frames, margin, [seed]
        self.batches_drawn = 0
        lengths = np.array([teacher.rows[i]["mel"][1] for i in rows], dtype=np.float64)
        self._probabilities = lengths / lengths.sum()

    def _crop(self, index: int, start: int) -> tuple[np.ndarray, np.ndarray]:
        frames, hop = self.segment_frames, self.teacher.hop
        mel = np.full((self.teacher.n_mels, frames), np.log(1e-5), dtype=np.float32)
        margin = self.margin
        wave = np.zeros(frames * hop + 2 * margin, dtype=np.float32)
        piece = np.asarray(self.teacher.mel(index)[:, start : start + frames], dtype=np.float32)
        mel[:, : piece.shape[1]] = piece
        source = self.teacher.wave(index)
        begin, end = start * hop - margin, (start + frames) * hop + margin
        samples = np.asarray(source[max(begin, 0) : min(end, source.shape[0])], dtype=np.float32)
        offset = max(0, -begin)
        wave[offset : offset + samples.shape[0]] = samples
        return mel, wave

    def _batch(self, items: list[tuple[int, int]]) -> VocoderBatch:
        mels, waves = zip(*(self._crop(index, start) for index, start in items), strict=True)
        return VocoderBatch(torch.from_numpy(np.stack(mels)), torch.from_numpy(np.stack(waves)))

    def sample(self, batch_size: int) -> VocoderBatch:
        rng = self._next_rng()
        picks = rng.choice(len(self.rows), size=batch_size, p=self._probabilities)
        items = []
        for pick in picks:
            index = self.rows[int(pick)]
            frames = self.teacher.rows[index]["mel"][1]
            items.append((index, int(rng.integers(0, max(1, frames - self.segment_frames + 1)))))
        return self._batch(items)

    def fixed_batches(self, batch_size: int, limit: int | None = None) -> list[VocoderBatch]:
        chosen = self.rows[:limit]
        return [
            self._batch([(index, 0) for index in chosen[i : i + batch_size]])
            for i in range(0, len(chosen), batch_size)
        ]


def train_vocoder(
    teacher_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: ISTFTVocoderSettings,
    trainer_config: TrainerConfig,
    resume: bool = False,
    dev_utterances: int = 24,
    callback: Callback | None = None,
) -> tuple[ISTFTVocoder, dict[str, float]]:
    """Train an :class:`ISTFTNet` on a teacher set; writes ``out_dir/vocoder/`` when the schedule is done.

    The last ``dev_utterances`` of the set (in its seeded order) are held out for the dev loss.
    ``trainer_config.segment_codes`` is read as the crop length in frames.
    """
    teacher = TeacherSet(teacher_dir)
    if len(teacher) <= dev_utterances:
        raise ModelError(f"{teacher_dir}: {len(teacher)} utterances, need more than {dev_utterances}")
    train_rows = list(range(len(teacher) - dev_utterances))
    dev_rows = list(range(len(teacher) - dev_utterances, len(teacher)))
    seed_everything(trainer_config.seed)
    net = ISTFTNet(settings)
    sample = np.concatenate([np.asarray(teacher.mel(i), dtype=np.float32) for i in train_rows[:500]], axis=1)
    net.set_statistics(torch.from_numpy(sample))
    segment = trainer_config.segment_codes
    margin = (settings.n_fft - settings.hop_length) // 2
    batches = VocoderBatcher(teacher, train_rows, segment, margin, seed=trainer_config.seed)
    dev = VocoderBatcher(teacher, dev_rows, segment, margin)
    out = Path(out_dir)
    trainer = Trainer(
        net, batches, dev, trainer_config, out, callback=callback, objective=ISTFTDistillationObjective()
    )
    trainer.setup(resume=resume)
    metrics = trainer.run()
    vocoder = ISTFTVocoder(net=net.cpu())
    if trainer.step_number >= trainer_config.steps:
        # Weights rounded to float16 values: the file is half the size, and what is
        # evaluated and shipped is exactly what was saved.
        round_to_half(vocoder.net)
        target = out / VOCODER_DIR
        target.mkdir(parents=True, exist_ok=True)
        vocoder.save_weights(target)
        config = {
            "vocoder": vocoder.config(),
            "teacher_set": teacher.config,
            "trainer": asdict(trainer_config),
        }
        atomic_write_text(target / "config.json", json.dumps(config, indent=2, sort_keys=True) + "\n")
        atomic_write_text(out / "history.json", json.dumps(trainer.history, indent=1) + "\n")
    return vocoder, metrics
