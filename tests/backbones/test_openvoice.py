"""OpenVoice tone-color converter backbone: matches the original code's outputs and checkpoint format."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from plutok.errors import AudioError, ModelError
from plutok.legacy.backbones import get_backbone_class
from plutok.legacy.backbones.openvoice import OpenVoiceBackbone
from plutok.legacy.backbones.openvoice_modules import ConverterConfig, ToneColorConverter, checkpoint_layout

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "openvoice"
TINY = ("tiny_v1", "tiny_v2")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _reference(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference fixtures not available: {path}")
    return path


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    directory = _reference(request.param)
    with np.load(directory / "io.npz") as io:
        data = dict(io)
    return request.param, directory, OpenVoiceBackbone.from_checkpoint(directory), data


def _max_err(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


# --------------------------------------------------------------------------- reference outputs


def test_reproduces_reference_outputs(tiny):
    name, _, bb, io = tiny
    assert bb.zero_g is (name == "tiny_v2")
    assert bb.spectrogram(io["wav"]).dtype == np.float32
    assert _max_err(bb.spectrogram(io["wav"]), io["spec"]) < 1e-4
    se = bb.speaker_embedding(io["wav"])
    assert se.dtype == np.float32 and se.shape == (bb.speaker_dim,)
    assert _max_err(se, io["se"]) < 1e-4
    z_p = bb.features(io["wav"], se)
    assert z_p.dtype == np.float32 and z_p.shape == (bb.feature_dim, bb.num_frames(len(io["wav"])))
    assert _max_err(z_p, io["z_p"]) < 1e-4
    decoded = bb.synthesize(io["z_p"], io["se"])
    assert decoded.dtype == np.float32 and decoded.shape == (z_p.shape[1] * bb.hop_length,)
    assert _max_err(decoded, io["decoded"]) < 1e-3
    assert _max_err(bb.synthesize(io["z_p"], io["se_other"]), io["decoded_other"]) < 1e-3


def test_zero_g_matters(tiny):
    """Flipping V1/V2 behaviour breaks agreement, so the fixture check above can tell them apart."""
    _, _, bb, io = tiny
    cfg = dataclasses.replace(bb.cfg, zero_g=not bb.zero_g)
    model = ToneColorConverter(cfg)
    model.load_state_dict(bb.model.state_dict())
    flipped = OpenVoiceBackbone(cfg, model)
    assert _max_err(flipped.features(io["wav"], io["se"]), io["z_p"]) > 1e-3
    assert _max_err(flipped.synthesize(io["z_p"], io["se"]), io["decoded"]) > 1e-3


def test_other_speaker_changes_output(tiny):
    _, _, bb, io = tiny
    assert _max_err(bb.synthesize(io["z_p"], io["se"]), bb.synthesize(io["z_p"], io["se_other"])) > 1e-3


# --------------------------------------------------------------------------- checkpoint format


def test_published_layout_matches_checkpoint_keys():
    published = json.loads((_reference("converter_state_dict.json")).read_text())
    cfg = ConverterConfig(
        sampling_rate=22050,
        filter_length=1024,
        hop_length=256,
        win_length=1024,
        inter_channels=192,
        hidden_channels=192,
        gin_channels=256,
        resblock="1",
        resblock_kernel_sizes=(3, 7, 11),
        resblock_dilation_sizes=((1, 3, 5),) * 3,
        upsample_rates=(8, 8, 2, 2),
        upsample_initial_channel=512,
        upsample_kernel_sizes=(16, 16, 4, 4),
        zero_g=True,
    )
    assert cfg == ConverterConfig()  # the defaults are the published sizes
    layout = checkpoint_layout(ToneColorConverter(cfg))
    assert sorted(layout) == sorted(published)
    assert {k: list(v) for k, v in layout.items()} == published


def test_tiny_layout_matches_tiny_checkpoint(tiny):
    _, directory, bb, _ = tiny
    state = torch.load(directory / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    layout = checkpoint_layout(ToneColorConverter(bb.cfg))
    assert layout == {k: tuple(v.shape) for k, v in state.items()}


def test_accepts_checkpoint_file_path(tiny):
    _, directory, bb, io = tiny
    other = OpenVoiceBackbone.from_checkpoint(directory / "checkpoint.pth")
    assert np.array_equal(other.speaker_embedding(io["wav"]), bb.speaker_embedding(io["wav"]))


def _copy_tiny(tmp_path: Path) -> Path:
    target = tmp_path / "ckpt"
    shutil.copytree(_reference("tiny_v2"), target)
    return target


def test_foreign_state_dict_names_keys(tmp_path):
    ckpt = _copy_tiny(tmp_path)
    state = torch.load(ckpt / "checkpoint.pth", map_location="cpu", weights_only=True)["model"]
    del state["enc_q.proj.bias"]
    state["emb_g.weight"] = torch.zeros(4, 32)
    state["dec.conv_pre.weight"] = torch.zeros(3, 3, 3)
    torch.save({"model": state}, ckpt / "checkpoint.pth")
    with pytest.raises(ModelError) as err:
        OpenVoiceBackbone.from_checkpoint(ckpt)
    message = str(err.value)
    assert "enc_q.proj.bias" in message and "emb_g.weight" in message and "dec.conv_pre.weight" in message


def test_config_size_mismatch_raises(tmp_path):
    ckpt = _copy_tiny(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["hidden_channels"] = 40
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"wrong shapes: .*enc_q"):
        OpenVoiceBackbone.from_checkpoint(ckpt)


@pytest.mark.parametrize("payload", [b"not a checkpoint", None])
def test_unreadable_or_missing_files_raise(tmp_path, payload):
    ckpt = _copy_tiny(tmp_path)
    if payload is None:
        (ckpt / "config.json").unlink()
    else:
        (ckpt / "checkpoint.pth").write_bytes(payload)
    with pytest.raises(ModelError):
        OpenVoiceBackbone.from_checkpoint(ckpt)


def test_non_converter_config_raises(tmp_path):
    ckpt = _copy_tiny(tmp_path)
    config = json.loads((ckpt / "config.json").read_text())
    config["data"]["n_speakers"] = 10
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="n_speakers"):
        OpenVoiceBackbone.from_checkpoint(ckpt)


# --------------------------------------------------------------------------- save / reload


def test_save_weights_reloads_identically(tiny, tmp_path):
    _, _, bb, io = tiny
    bb.save_weights(tmp_path)
    config = json.loads(json.dumps(bb.config()))  # must survive config.json
    assert config["name"] == "openvoice"
    assert not (tmp_path / "checkpoint.pth").exists()
    again = get_backbone_class(config["name"]).from_config(config, tmp_path)
    se = bb.speaker_embedding(io["wav"])
    assert np.array_equal(again.speaker_embedding(io["wav"]), se)
    z_p = bb.features(io["wav"], se)
    assert np.array_equal(again.features(io["wav"], se), z_p)
    assert np.array_equal(again.synthesize(z_p, se), bb.synthesize(z_p, se))
    assert again.config() == bb.config()


def test_from_config_rejects_wrong_weights(tmp_path):
    small = OpenVoiceBackbone.random(_odd_config())
    small.save_weights(tmp_path)
    config = small.config()
    config["converter"]["hidden_channels"] += 2
    with pytest.raises(ModelError, match="wrong shapes"):
        OpenVoiceBackbone.from_config(config, tmp_path)
    with pytest.raises(ModelError):
        OpenVoiceBackbone.from_config(small.config(), tmp_path / "nowhere")


@pytest.mark.parametrize(
    "weights", ["../outside.safetensors", "sub/../../outside.safetensors", "ABSOLUTE", "", 7]
)
def test_weights_outside_the_model_folder_are_refused(tmp_path, weights):
    """A config naming ``../../../../etc/passwd`` must not make Plutok open it."""
    small = OpenVoiceBackbone.random(_odd_config())
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    small.save_weights(tmp_path)  # a valid weights file, just outside the model folder
    (tmp_path / "backbone.safetensors").rename(tmp_path / "outside.safetensors")
    config = small.config()
    config["weights"] = str(tmp_path / "outside.safetensors") if weights == "ABSOLUTE" else weights
    with pytest.raises(ModelError, match="must be a file name inside the model folder"):
        OpenVoiceBackbone.from_config(config, model)


# --------------------------------------------------------------------------- sampling and input checks


def test_tau_sampling_is_seeded(tiny):
    _, _, bb, io = tiny
    se = io["se"]
    mean = bb.features(io["wav"], se)
    a = bb.features(io["wav"], se, tau=0.3, seed=7)
    b = bb.features(io["wav"], se, tau=0.3, seed=7)
    c = bb.features(io["wav"], se, tau=0.3, seed=8)
    assert np.array_equal(a, b)
    assert _max_err(a, mean) > 1e-3 and _max_err(a, c) > 1e-3
    assert np.array_equal(bb.features(io["wav"], se, tau=0.0, seed=7), mean)


@pytest.mark.parametrize(
    "wav",
    [
        np.zeros(0, np.float32),
        np.zeros(100, np.float32),
        np.zeros((2, 4000), np.float32),
        np.full(4000, np.nan, np.float32),
        np.zeros(4000, np.int16),
    ],
)
def test_bad_audio_raises(tiny, wav):
    _, _, bb, io = tiny
    with pytest.raises(AudioError):
        bb.speaker_embedding(wav)
    with pytest.raises(AudioError):
        bb.features(wav, io["se"])


def test_bad_shapes_raise(tiny):
    _, _, bb, io = tiny
    with pytest.raises(ModelError):
        bb.features(io["wav"], io["se"][:-1])
    with pytest.raises(ModelError):
        bb.synthesize(io["z_p"][:-1], io["se"])


# --------------------------------------------------------------------------- other sizes


def _odd_config() -> ConverterConfig:
    """Sizes unlike both the published and the tiny converter, resblock type 2, V1."""
    return ConverterConfig(
        sampling_rate=16000,
        filter_length=320,
        hop_length=80,
        win_length=300,
        inter_channels=10,
        hidden_channels=12,
        gin_channels=6,
        resblock="2",
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 3),),
        upsample_rates=(5, 4, 4),
        upsample_initial_channel=16,
        upsample_kernel_sizes=(11, 8, 8),
        zero_g=False,
    )


def test_other_sizes_shapes_and_flow_inverse():
    cfg = _odd_config()
    bb = OpenVoiceBackbone.random(cfg, seed=3)
    # Non-zero flow output layers, so the inverse check is not trivially the identity.
    torch.manual_seed(4)
    with torch.no_grad():
        for flow in bb.model.flow.flows[::2]:
            flow.post.weight.normal_(0, 0.3)
            flow.post.bias.normal_(0, 0.3)
    wav = np.random.default_rng(0).standard_normal(4321).astype(np.float32) * 0.1
    assert bb.sample_rate == 16000 and bb.frames_per_second == 200.0
    se = bb.speaker_embedding(wav)
    assert se.shape == (6,)
    z_p = bb.features(wav, se)
    assert z_p.shape == (10, 4321 // 80)
    with torch.inference_mode():
        g = torch.from_numpy(se).view(1, -1, 1)
        z = torch.from_numpy(z_p).unsqueeze(0)
        forward = bb.model.flow(z, g)
        assert float((forward - z).abs().max()) > 1e-2
        assert float((bb.model.flow(forward, g, reverse=True) - z).abs().max()) < 1e-4
    y = bb.synthesize(z_p, se)
    assert y.shape == (z_p.shape[1] * 80,) and y.dtype == np.float32
    assert np.all(np.abs(y) <= 1.0)
