"""A codec is an encoder, a quantizer and a decoder, each a registered part.

A decoder added from this file alone (one class plus ``registry.register``) is trained
with ``train-codec``, assembled into a model, saved, reloaded and decoded; the flat
``codec`` section of the first v2 models still reads and writes as it did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from plutok import registry
from plutok.codec.decoders.base import CodecDecoder
from plutok.parts import settings_from_config
from plutok.settings import SamplingSettings


@dataclass(frozen=True)
class ToyConvSettings:
    latent_dim: int = 4
    output_dim: int = 80
    frames_per_code: int = 4
    kernel_size: int = 3
    #: Scale of the seeded noise added to the output (a stand-in for a sampling decoder).
    noise: float = 0.01


@registry.register("decoder", "toy-conv")
class ToyConvDecoder(CodecDecoder):
    """One convolution from code vectors to ``frames_per_code`` frames per code, plus seeded noise."""

    settings_class = ToyConvSettings
    samples = True

    def __init__(self, settings: ToyConvSettings) -> None:
        super().__init__()
        self.settings = settings
        s = settings
        self.conv = nn.Conv1d(
            s.latent_dim, s.output_dim * s.frames_per_code, s.kernel_size, padding=s.kernel_size // 2
        )

    latent_dim = property(lambda self: self.settings.latent_dim)
    output_dim = property(lambda self: self.settings.output_dim)
    frames_per_code = property(lambda self: self.settings.frames_per_code)
    context = property(lambda self: self.settings.kernel_size // 2)

    def forward(self, vectors, speaker, sampling=None):
        sampling = sampling or SamplingSettings()
        batch, _, codes = vectors.shape
        frames = self.conv(vectors).view(batch, self.output_dim, self.frames_per_code, codes)
        frames = frames.permute(0, 1, 3, 2).reshape(batch, self.output_dim, codes * self.frames_per_code)
        noise = torch.randn(frames.shape, generator=torch.Generator().manual_seed(sampling.seed))
        return frames + self.settings.noise * noise.to(frames.device)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.settings)}

    @classmethod
    def from_config(cls, config: dict[str, Any], directory: Path | None = None) -> ToyConvDecoder:
        return cls(settings_from_config(ToyConvSettings, config, "toy-conv decoder"))


TOY_CODEC = {
    "name": "content",
    "encoder": {"name": "convnext", "frames_per_code": 4, "channels": 16, "blocks": 1},
    "quantizer": {"name": "vq", "codebook_size": 16, "dim": 4},
    "decoder": {"name": "toy-conv"},
    "heads": {"content_channels": 8},
}


def _schedule(**changes):
    from plutok.training.trainer import TrainerConfig

    values = dict(steps=4, batch_size=3, segment_codes=12, log_every=2, eval_every=4, warmup_steps=1)
    return TrainerConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def toy_run(mel_cache, tmp_path_factory):
    from plutok.training.codec import train_codec

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("toy-run")
    codec, metrics = train_codec(mel_cache, run, TOY_CODEC, _schedule())
    return run, codec, metrics


def test_a_decoder_registered_here_trains_saves_and_decodes(toy_run, mel_cache, tmp_path, speech_like):
    from plutok.api import Plutok
    from plutok.training.assemble import assemble_model

    run, codec, metrics = toy_run
    assert isinstance(codec.decoder, ToyConvDecoder) and np.isfinite(metrics["dev_mel_l1"])
    saved = json.loads((run / "codec" / "config.json").read_text())["codec"]
    assert saved["decoder"]["name"] == "toy-conv" and saved["decoder"]["latent_dim"] == 4
    model = assemble_model(mel_cache, run / "codec", tmp_path / "model", vocab_size=20, progress=False)
    wav = speech_like(1.3, seed=5)
    encoding = model.encode(wav, 16000)
    decoded, rate = model.decode(encoding)
    assert rate == 16000 and decoded.shape == wav.shape and np.isfinite(decoded).all()
    again = Plutok.from_pretrained(tmp_path / "model")
    assert again.fingerprint == model.fingerprint and again.encode(wav, 16000).ids == encoding.ids
    np.testing.assert_array_equal(again.decode(encoding)[0], decoded)


def test_sampling_settings_reach_the_decoder_and_default_to_one_seed(toy_run):
    codec = toy_run[1].eval()
    codes = torch.randint(0, 16, (1, 9))
    with torch.no_grad():
        first, again = codec.decode_tensor(codes, None), codec.decode_tensor(codes, None)
        other = codec.decode_tensor(codes, None, SamplingSettings(seed=1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    torch.testing.assert_close(codec.decode_tensor(codes, None, SamplingSettings(seed=0)), first)


def test_chunked_decoding_uses_the_decoders_receptive_field(toy_run):
    codec = toy_run[1]
    codes = np.random.default_rng(0).integers(0, 16, 23)
    # The toy's noise is drawn per call, so compare with it off: only the context matters here.
    quiet = registry.build(
        "codec", {**codec.config(), "decoder": {**codec.config()["decoder"], "noise": 0.0}}
    )
    quiet.load_state_dict(codec.state_dict())
    np.testing.assert_allclose(quiet.decode_long(codes, None, 5), quiet.decode(codes), rtol=0, atol=1e-5)


def test_train_codec_options_come_from_the_given_parts_settings(mel_cache, tmp_path, capsys):
    from plutok.cli import main

    with pytest.raises(SystemExit):
        main(["train-codec", "--help"])
    assert "--decoder-noise" in capsys.readouterr().out  # the toy's own setting, from its class
    common = [str(mel_cache), "--encoder-frames-per-code", "4", "--encoder-channels", "16"]
    common += ["--encoder-blocks", "1", "--content-channels", "8", "--steps", "2", "--batch-size", "2"]
    common += ["--segment-codes", "12", "--eval-every", "2", "--warmup-steps", "1", "--init-batches", "1"]
    common += ["--quantizer", '{"name": "vq", "codebook_size": 16, "dim": 4}']
    code = main(
        ["train-codec", "-o", str(tmp_path / "run"), "--decoder", "toy-conv", "--decoder-noise", "0.5"]
        + common
    )
    assert code == 0
    saved = json.loads((tmp_path / "run" / "codec" / "config.json").read_text())["codec"]
    assert saved["decoder"] == {**asdict(ToyConvSettings(noise=0.5)), "name": "toy-conv"}
    capsys.readouterr()
    wrong = ["--decoder", "toy-conv", "--decoder-upsampled-blocks", "2"]
    assert main(["train-codec", "-o", str(tmp_path / "bad")] + wrong + common) != 0
    assert "the decoder 'toy-conv' has no setting 'upsampled_blocks'" in capsys.readouterr().err


def test_the_flat_codec_section_maps_onto_the_parts_and_back(tiny_content_codec):
    from plutok.codec.decoders.convnext import ConvNeXtDecoder
    from plutok.codec.encoders.convnext import ConvNeXtEncoder

    flat = tiny_content_codec(input_dim=6, output_dim=5, speaker_dim=3, envelope_weight=1.0)
    codec = registry.build("codec", flat)
    assert isinstance(codec.encoder, ConvNeXtEncoder) and isinstance(codec.decoder, ConvNeXtDecoder)
    assert codec.encoder.settings.channels == 16 and codec.decoder.settings.upsampled_channels == 8
    assert codec.objective.envelope_weight == 1.0 and codec.heads.content_channels == 8
    written = codec.config()
    assert "encoder" not in written and written["envelope_weight"] == 1.0 and written["channels"] == 16
    # The weights keep the first v2 codec's names: files written before the split load.
    assert {
        "encoder_in.weight",
        "decoder_in.weight",
        "to_output.weight",
        "analysis_mean",
        "speaker_mean",
    } <= set(codec.state_dict())
    # Parts that do not share the flat form's widths are written part by part, and read back.
    parts = {"name": "content", "encoder": {**codec.encoder.config(), "channels": 12}}
    parts |= {"decoder": codec.decoder.config(), "quantizer": written["quantizer"]}
    nested = registry.build("codec", parts)
    assert nested.config()["encoder"]["channels"] == 12
    assert registry.build("codec", nested.config()).config() == nested.config()


def test_a_new_decoder_learns_the_codes_of_a_saved_codec(
    mel_cache, tiny_content_codec, tmp_path, speech_like
):
    """``--init-from BASE --freeze-codes`` with another decoder: same codes and token ids, new decoder."""
    from plutok.api import Plutok
    from plutok.cli import main
    from plutok.training.assemble import assemble_model, load_trained_codec, replace_decoder
    from plutok.training.codec import train_codec

    torch.manual_seed(0)
    flat = tiny_content_codec(analysis_frames_per_code=4)
    base, _ = train_codec(mel_cache, tmp_path / "base", flat, _schedule(steps=2))
    schedule = ["--steps", "2", "--batch-size", "3", "--segment-codes", "12", "--warmup-steps", "1"]
    # The run reads the saved codec's architecture; only the decoder is named.
    args = [str(mel_cache), "-o", str(tmp_path / "toy"), "--init-from", str(tmp_path / "base" / "codec")]
    assert main(["train-codec", *args, "--freeze-codes", "--decoder", "toy-conv", *schedule]) == 0
    toy = load_trained_codec(tmp_path / "toy" / "codec")
    assert isinstance(toy.decoder, ToyConvDecoder) and toy.heads == base.heads
    analysis = torch.randn(2, base.input_dim, 40)
    assert torch.equal(toy.encode_tensor(analysis), base.encode_tensor(analysis))
    base_model = assemble_model(
        mel_cache, tmp_path / "base" / "codec", tmp_path / "base-model", 24, progress=False
    )
    replace_decoder(tmp_path / "base-model", tmp_path / "toy" / "codec", tmp_path / "toy-model")
    toy_model = Plutok.from_pretrained(tmp_path / "toy-model")
    wav = speech_like(1.2, seed=8)
    encoding = base_model.encode(wav, 16000)
    assert toy_model.encode(wav, 16000).ids == encoding.ids
    assert isinstance(toy_model.codec.decoder, ToyConvDecoder)
    assert toy_model.decode_ids(encoding.ids, encoding.speaker)[0].shape[0] > 0


def test_a_saved_codecs_parts_are_kept_unless_another_decoder_is_named():
    from plutok.training.codec import ArchitectureConflict, starting_point

    start = starting_point(
        "default", {"decoder": {"name": "toy-conv", "noise": 0.5}, "objective": {"ctc_weight": 1.0}}
    )
    saved = json.loads((start.directory / "config.json").read_text())["codec"]
    assert start.codec["decoder"] == {"name": "toy-conv", "noise": 0.5}
    assert (
        start.codec["encoder"]["blocks"] == saved["encoder_blocks"]
        and start.codec["quantizer"] == saved["quantizer"]
    )
    assert (
        start.codec["objective"]["ctc_weight"] == 1.0
        and start.codec["heads"]["content_dim"] == saved["content_dim"]
    )
    # The parts' options of the saved parts read as the flat settings they are.
    assert starting_point("default", {"decoder": {"blocks": 6}}).codec["decoder_blocks"] == 6
    with pytest.raises(ArchitectureConflict, match="--encoder-blocks 1 contradicts default's encoder"):
        starting_point("default", {"encoder": {"blocks": 1}, "decoder": {"name": "toy-conv"}})
    with pytest.raises(ArchitectureConflict, match="--channels 128 contradicts"):
        starting_point("default", {"encoder": {"channels": 128}})
