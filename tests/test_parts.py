"""The part contracts: a toy frontend, quantizer and vocoder plug in through the registry alone,
and a model whose analysis features differ from its synthesis features trains, saves, reloads
and round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from plutok import registry
from plutok.frontends.base import Frontend
from plutok.quantizers.base import Quantizer, QuantizerOutput, code_statistics
from plutok.vocoders.base import Vocoder


@registry.register("frontend", "toy-energy")
class ToyEnergyFrontend(Frontend):
    """Log energy of 6 sub-bands at 25 frames/s: 6 channels, not the 80-bin mel the codec writes."""

    sample_rate = 16000
    frames_per_second = 25.0
    feature_dim = 6

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // 640)

    def analyze(self, wav: np.ndarray, speaker: np.ndarray | None = None) -> np.ndarray:
        frames = self.num_frames(wav.shape[0])
        padded = np.pad(wav, (0, frames * 640 - wav.shape[0])).reshape(frames, 640)
        spectrum = np.abs(np.fft.rfft(padded, axis=1))[:, :318].reshape(frames, 6, -1)
        return np.log(spectrum.mean(axis=2) + 1e-4).T.astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ToyEnergyFrontend:
        return cls()


@registry.register("quantizer", "toy-sign")
class ToySignQuantizer(Quantizer):
    """Sign of each of 3 latent dimensions: 8 codes, straight-through."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("_bits", torch.tensor([1, 2, 4]))

    codebook_size = 8  # type: ignore[assignment]
    dim = 3  # type: ignore[assignment]

    def forward(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> QuantizerOutput:
        signs = torch.where(latent > 0, 1.0, -1.0)
        quantized = latent + (signs - latent).detach()
        codes = self.quantize(latent)
        perplexity, usage = code_statistics(codes, 8, mask)
        return QuantizerOutput(quantized, codes, latent.new_zeros(()), perplexity, usage)

    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        return ((latent > 0).long() * self._bits[None, :, None]).sum(dim=1)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return torch.where((codes[:, None, :] // self._bits[None, :, None]) % 2 == 1, 1.0, -1.0)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ToySignQuantizer:
        return cls()


@registry.register("vocoder", "toy-buzz")
class ToyBuzzVocoder(Vocoder):
    """A 100 Hz buzz whose loudness follows the mean log-mel of each frame (hop 160)."""

    sample_rate = 16000
    hop_length = 160
    feature_dim = 80
    context_frames = 0

    def synthesize(
        self, features: np.ndarray, speaker: np.ndarray | None = None, chunk_frames: int | None = None
    ):
        loudness = np.exp(np.clip(features.mean(axis=0), -12, 2)) * 0.01
        buzz = np.sin(2 * np.pi * 100 * np.arange(self.hop_length) / self.sample_rate)
        return (loudness[:, None] * buzz[None]).reshape(-1).astype(np.float32)

    def config(self) -> dict[str, Any]:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ToyBuzzVocoder:
        return cls()


def test_registry_builds_registered_parts_and_refuses_unknown_names():
    from plutok.errors import ModelError

    assert isinstance(registry.build("frontend", {"name": "toy-energy"}), ToyEnergyFrontend)
    assert "toy-sign" in registry.names("quantizer") and "vq" in registry.names("quantizer")
    with pytest.raises(ModelError, match="unknown vocoder 'nope'"):
        registry.build("vocoder", {"name": "nope"})


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory, speech_like, tiny_content_codec) -> Path:
    """A whole model trained here: toy frontend (6 x 25 Hz) -> content codec -> 80-bin mel (100 Hz) -> toy vocoder."""
    from plutok.training.assemble import assemble_model
    from plutok.training.cache import fill_cache
    from plutok.training.codec import train_codec
    from plutok.training.trainer import TrainerConfig

    root = tmp_path_factory.mktemp("toy")
    rows = []
    for index in range(6):
        path = root / f"clip{index}.wav"
        sf.write(path, speech_like(1.2 + 0.2 * index, seed=index), 16000)
        rows.append({"id": f"clip{index}", "path": str(path), "split": "dev" if index == 5 else "train"})
    speaker = registry.build("speaker", {"name": "mel-statistics", "coefficients": 8})
    counts = fill_cache(root / "cache", rows, ToyEnergyFrontend(), speaker, progress=False)
    assert counts == {"added": 6, "skipped": 0, "failed": 0}
    # Rerunning adds nothing: the cache resumes.
    assert fill_cache(root / "cache", rows, ToyEnergyFrontend(), speaker, progress=False)["skipped"] == 6
    schedule = TrainerConfig(
        steps=6, batch_size=4, segment_codes=20, log_every=3, eval_every=6, warmup_steps=2
    )
    train_codec(root / "cache", root / "run", tiny_content_codec(quantizer={"name": "toy-sign"}), schedule)
    assemble_model(
        root / "cache",
        root / "run" / "codec",
        root / "model",
        vocab_size=12,
        progress=False,
        vocoder={"name": "toy-buzz"},
    )
    return root / "model"


def test_model_with_different_analysis_and_synthesis_features_round_trips(
    toy_model_dir, speech_like, tmp_path
):
    from plutok.api import Plutok

    tok = Plutok.from_pretrained(toy_model_dir)
    assert tok.frontend.feature_dim == 6 and tok.codec.output_dim == 80
    assert tok.codes_per_second == 25.0 and tok.codec.synthesis_frames_per_code == 4
    wav = speech_like(1.0, seed=9)
    encoding = tok.encode(wav, 16000)
    assert encoding.num_codes == 25 and max(tok.ids_to_codes(encoding.ids)) < 8
    audio, rate = tok.decode(encoding)
    assert rate == 16000 and audio.shape == wav.shape and np.isfinite(audio).all()
    # Save -> reload: same weights, same fingerprint, same tokens and audio.
    tok.save(tmp_path / "again")
    again = Plutok.from_pretrained(tmp_path / "again")
    assert again.fingerprint == tok.fingerprint
    assert again.encode(wav, 16000).ids == encoding.ids
    np.testing.assert_array_equal(again.decode(encoding)[0], audio)
    # A .plt file round trip, and ids with the stored default voice.
    tok.save_plt(encoding, tmp_path / "x.plt")
    assert tok.load_plt(tmp_path / "x.plt").ids == encoding.ids
    generated, _ = tok.decode_ids(encoding.ids)
    assert generated.shape[0] == encoding.num_codes * 640


def test_saved_config_names_every_part_with_its_weights_digest(toy_model_dir):
    import json

    config = json.loads((toy_model_dir / "config.json").read_text())
    assert config["format_version"] == 2
    assert [config[kind]["name"] for kind in ("frontend", "speaker", "codec", "vocoder")] == [
        "toy-energy",
        "mel-statistics",
        "content",
        "toy-buzz",
    ]
    assert config["codec"]["quantizer"] == {"name": "toy-sign"}
    assert len(config["codec"]["weights_sha256"]) == 64 and len(config["default_speaker"]) == 16


def test_changed_codec_weights_are_refused(toy_model_dir, tmp_path):
    import json
    import shutil

    from plutok.api import Plutok
    from plutok.errors import ModelError

    copy = tmp_path / "tampered"
    shutil.copytree(toy_model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config["codec"]["weights_sha256"] = "0" * 64
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="codec weights differ"):
        Plutok.from_pretrained(copy)


def test_voice_swap_changes_only_the_voice(toy_model_dir, speech_like):
    from plutok.api import Plutok

    tok = Plutok.from_pretrained(toy_model_dir)
    source = tok.encode(speech_like(1.0, seed=1), 16000)
    other = tok.encode(0.2 * speech_like(1.0, seed=2), 16000)
    own, _ = tok.decode(source)
    swapped, _ = tok.decode(source, speaker=other)
    assert swapped.shape == own.shape and not np.allclose(swapped, own)
    np.testing.assert_array_equal(tok.decode(source, speaker=source.speaker)[0], own)
