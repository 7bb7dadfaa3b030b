"""Shared fixtures: a tiny random-weight model on the real mel backbone, short test audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED_REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

# Modules whose results depend on float summation order, which differs between the SIMD
# kernels a CPU offers: fixture agreement, exact tokens, chunked or streamed vs one pass.
# They carry the `kernels` marker, and CI runs them a second time under forced generic
# kernels (`.ci/run`), so that a tolerance that holds only on one kind of CPU fails there.
KERNEL_SENSITIVE_MODULES = {
    "test_compat.py",
    "test_vqvae.py",
    "test_openvoice.py",
    "test_default_model.py",
    "test_default_fixture.py",
    "test_streaming.py",
    "test_chunking.py",
    "test_robustness.py",
    "test_long_audio.py",
    "test_postfilters.py",
    "test_speaker_learned.py",
    "test_stack.py",
    "test_whisper.py",
    "test_istft.py",
    "test_tokenizer.py",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in KERNEL_SENSITIVE_MODULES:
            item.add_marker(pytest.mark.kernels)


def speech_like(seconds: float = 1.0, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-speech-like signal: harmonics with a moving pitch and syllable envelope."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * time + rng.uniform(0, np.pi))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 20))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * time)) ** 2
    noise = 0.05 * rng.standard_normal(time.shape[0])
    return (0.1 * envelope * voiced + 0.01 * noise).astype(np.float32)


@pytest.fixture(name="speech_like", scope="session")
def speech_like_fixture():
    """The :func:`speech_like` generator, for test modules (conftest is not importable from them)."""
    return speech_like


def small_cache(root: Path, clips: list[dict], frontend: dict, speaker: dict) -> Path:
    """A feature cache at ``root/cache`` of :func:`speech_like` clips.

    ``clips``: one dict per clip with ``seconds`` and ``seed`` and optionally ``split``
    (default train), ``kind``, ``text`` and ``language``; ``frontend``/``speaker``: part configs.
    """
    import soundfile as sf

    from plutok import registry
    from plutok.training.cache import fill_cache

    rows = []
    for index, clip in enumerate(clips):
        path = root / f"u{index}.flac"
        sf.write(path, speech_like(clip["seconds"], seed=clip["seed"]), 16000)
        row = {"id": f"u{index}", "path": str(path), "split": clip.get("split", "train")}
        row.update({key: clip[key] for key in ("kind", "text", "language") if key in clip})
        rows.append(row)
    built = registry.build("frontend", frontend), registry.build("speaker", speaker)
    fill_cache(root / "cache", rows, *built, progress=False)
    return root / "cache"


def tiny_content_codec(**changes) -> dict:
    """Config of a tiny ``content`` codec (16 channels, one block per stage, VQ 16 x 4) with ``changes``."""
    config = {
        "name": "content",
        "channels": 16,
        "encoder_blocks": 1,
        "decoder_blocks": 1,
        "upsampled_channels": 8,
        "upsampled_blocks": 1,
        "content_channels": 8,
        "quantizer": {"name": "vq", "codebook_size": 16, "dim": 4},
    }
    config.update(changes)
    return config


def short_schedule(**changes):
    """A :class:`~plutok.settings.TrainerConfig` of a few tiny steps (every log, dev pass and
    checkpoint within them), with ``changes``."""
    from plutok.settings import TrainerConfig

    values = dict(
        steps=6,
        batch_size=3,
        segment_codes=12,
        log_every=1,
        eval_every=3,
        checkpoint_every=3,
        warmup_steps=1,
        init_batches=2,
    )
    values.update(changes)
    return TrainerConfig(**values)


@pytest.fixture(name="short_schedule", scope="session")
def short_schedule_fixture():
    """The :func:`short_schedule` builder, for test modules."""
    return short_schedule


@pytest.fixture(name="tiny_content_codec", scope="session")
def tiny_content_codec_fixture():
    """The :func:`tiny_content_codec` builder, for test modules."""
    return tiny_content_codec


@pytest.fixture(name="small_cache", scope="session")
def small_cache_fixture():
    """The :func:`small_cache` builder, for test modules."""
    return small_cache


def _five_clip_cache(root: Path, first_seed: int, normalize_by_speaker: bool) -> Path:
    """Five short clips (four train, one dev) of log-mel, 4 + 4 speaker coefficients."""
    clips = [
        {"seconds": 1.0 + 0.3 * index, "seed": first_seed + index, "split": "train" if index < 4 else "dev"}
        for index in range(5)
    ]
    return small_cache(
        root,
        clips,
        {"name": "log-mel", "normalize_by_speaker": normalize_by_speaker},
        {"name": "mel-statistics", "coefficients": 4},
    )


@pytest.fixture(scope="module")
def mel_cache(tmp_path_factory):
    """A cache of five short clips (four train, one dev) of speaker-normalised log-mel, for training tests."""
    return _five_clip_cache(tmp_path_factory.mktemp("mel-cache"), 10, normalize_by_speaker=True)


@pytest.fixture(scope="module")
def raw_mel_cache(tmp_path_factory):
    """The same of plain log-mel: the codec's input does not depend on the speaker vector."""
    return _five_clip_cache(tmp_path_factory.mktemp("raw-mel-cache"), 20, normalize_by_speaker=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A complete saved model: mel backbone, tiny random VQ-VAE (32 codes), BPE trained on its codes."""
    from plutok.bpe import CodeBPE
    from plutok.legacy.backbones.mel import MelBackbone
    from plutok.legacy.vqvae import VQVAE, VQVAEConfig
    from plutok.tokenizer import Plutok

    torch.manual_seed(0)
    backbone = MelBackbone()
    vqvae = VQVAE(VQVAEConfig(feature_dim=80, codebook_size=32, downsample=2, channels=8)).eval()
    code_sequences = []
    for seed in range(6):
        features, _ = backbone.analyze(speech_like(2.0, seed=seed))
        code_sequences.append(vqvae.encode(features))
    bpe = CodeBPE.train(code_sequences, 32, vocab_size=80, progress=False)
    directory = tmp_path_factory.mktemp("models") / "tiny"
    Plutok.from_backbone(backbone, vqvae, bpe, metadata={"description": "test model"}).save(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from plutok.tokenizer import Plutok

    return Plutok.from_pretrained(tiny_model_dir)


@pytest.fixture
def speech_wav(tmp_path) -> Path:
    import soundfile as sf

    path = tmp_path / "speech.wav"
    sf.write(path, speech_like(1.5, sample_rate=22050, seed=3), 22050, subtype="PCM_16")
    return path
