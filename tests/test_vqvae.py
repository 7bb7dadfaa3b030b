"""VQ-VAE: exact reproduction of the original, shapes, invariants, errors and I/O."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from plutok.errors import AudioError, ModelError, TokenError
from plutok.legacy.vqvae import CONFIG_NAME, VQVAE, WEIGHTS_NAME, VQVAEConfig

torch.set_num_threads(1)

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "plutok_vqvae"


def reference(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference fixture {path} not available")
    return path


def random_model(
    feature_dim: int = 6, codebook_size: int = 16, downsample: int = 2, seed: int = 0, **kw
) -> VQVAE:
    torch.manual_seed(seed)
    model = VQVAE(VQVAEConfig(feature_dim, codebook_size, downsample, **kw))
    with torch.no_grad():  # spread the codes so that many of them are picked
        model.vq_layer.codebook.weight.normal_(0, 0.3)
    return model


def features(channels: int, frames: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((channels, frames)).astype(np.float32)


# ----- the original --------------------------------------------------------------------------------


def test_reproduces_original_tiny_fixture():
    model = VQVAE.from_original(reference("tiny/model.pth"))
    data = np.load(reference("tiny/io.npz"))
    assert (model.feature_dim, model.codebook_size, model.downsample) == (24, 200, 2)
    codes = model.encode(data["x"])
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, data["ids"])
    decoded = model.decode(data["ids"])
    assert decoded.shape == data["decoded"].shape
    # The reference's own bound: 1e-5 of the largest value (values reach the hundreds). Measured
    # 5.6e-7 relative (1.8e-4 absolute) under native, AVX2 and generic kernels, 1 and 2 threads.
    assert np.abs(decoded - data["decoded"]).max() < 1e-5 * np.abs(data["decoded"]).max()


@pytest.mark.parametrize(
    ("listing", "feature_dim"), [("vqvae_state_dict.json", 192), ("tiny/vqvae_state_dict.json", 24)]
)
def test_default_layout_equals_original_checkpoint(listing, feature_dim):
    expected = json.loads(reference(listing).read_text())
    model = VQVAE(VQVAEConfig(feature_dim=feature_dim, codebook_size=200))
    actual = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert actual == expected


def test_saved_model_loads_as_original(tmp_path):
    model = random_model(feature_dim=6, codebook_size=12)
    torch.save(model.state_dict(), tmp_path / "model.pth")
    again = VQVAE.from_original(tmp_path / "model.pth")
    x = features(6, 20)
    np.testing.assert_array_equal(again.encode(x), model.encode(x))


def test_from_original_reports_missing_unexpected_and_bad_shapes(tmp_path):
    state = random_model(feature_dim=6, codebook_size=12).state_dict()
    del state["decoder.5.conv.bias"]
    state["encoder.99.weight"] = torch.zeros(1)
    state["decoder.9.weight"] = torch.zeros(6, 6, 5)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(ModelError) as caught:
        VQVAE.from_original(tmp_path / "broken.pth")
    message = str(caught.value)
    assert "decoder.5.conv.bias" in message and "encoder.99.weight" in message
    assert "decoder.9.weight" in message


def test_from_original_rejects_non_checkpoints(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        VQVAE.from_original(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelError):
        VQVAE.from_original(tmp_path / "garbage.pth")
    torch.save({"something": 3}, tmp_path / "other.pth")
    with pytest.raises(ModelError):
        VQVAE.from_original(tmp_path / "other.pth")


# ----- shapes and invariants -----------------------------------------------------------------------


@pytest.mark.parametrize("downsample", [1, 2, 4])
@pytest.mark.parametrize("frames", [4, 9, 16, 23])
def test_encode_decode_shapes(downsample, frames):
    model = random_model(downsample=downsample)
    codes = model.encode(features(6, frames))
    assert codes.shape == (-(-frames // downsample),)
    assert codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < model.codebook_size
    decoded = model.decode(codes)
    assert decoded.shape == (6, downsample * len(codes))
    assert decoded.dtype == np.float32


@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_decode_of_codes_equals_forward_reconstruction(downsample):
    model = random_model(downsample=downsample, seed=3)
    x = features(6, 32, seed=1)
    with torch.no_grad():
        output = model(torch.from_numpy(x)[None])
    codes = model.encode(x)
    np.testing.assert_array_equal(output.codes[0].numpy(), codes)
    assert len(np.unique(codes)) > 1
    np.testing.assert_allclose(model.decode(codes), output.reconstruction[0].numpy(), atol=1e-5)
    # the quantized vectors are exactly the chosen (effective) code vectors
    codebook = model.vq_layer.effective_codebook().detach()
    np.testing.assert_allclose(output.quantized[0].T.numpy(), codebook[output.codes[0]].numpy(), atol=1e-6)


def test_codes_are_nearest_effective_code_vectors():
    model = random_model(seed=5)
    with torch.no_grad():
        model.vq_layer.affine_transform.scale.normal_(0, 0.05)
        model.vq_layer.affine_transform.bias.normal_(0, 0.05)
    x = features(6, 30, seed=2)
    with torch.no_grad():
        encoded = model.encode_tensor(torch.from_numpy(x)[None])[0].T
        effective = (1 + 10 * model.vq_layer.affine_transform.scale) * model.vq_layer.codebook.weight
        effective = effective + 10 * model.vq_layer.affine_transform.bias
        expected = torch.cdist(encoded.double(), effective.double()).argmin(1).numpy()
    np.testing.assert_array_equal(model.encode(x), expected)


def test_forward_straight_through_gradients_reach_encoder_and_codebook():
    model = random_model()
    model.train()
    output = model(torch.from_numpy(features(6, 16))[None])
    (output.reconstruction.pow(2).mean() + output.codebook_loss + output.commitment_loss).backward()
    assert model.encoder[0].conv.weight.grad is not None and model.encoder[0].conv.weight.grad.abs().sum() > 0
    assert model.vq_layer.codebook.weight.grad.abs().sum() > 0
    assert model.vq_layer.affine_transform.scale.grad.abs().sum() > 0
    assert 0 < float(output.usage) <= 1 and 1 <= float(output.perplexity) <= model.codebook_size


def test_encode_is_deterministic_and_leaves_training_mode():
    model = random_model()
    model.train()
    x = features(6, 40)
    first = model.encode(x)
    np.testing.assert_array_equal(first, model.encode(x))
    assert model.training


def test_channels_override_adds_projections():
    model = random_model(feature_dim=5, channels=4)
    assert model.config.code_dim == 16
    assert "input_proj.weight" in model.state_dict() and "output_proj.weight" in model.state_dict()
    codes = model.encode(features(5, 10))
    assert model.decode(codes).shape == (5, 10)


def test_factorised_normalised_latents():
    model = random_model(feature_dim=5, latent_dim=3, normalize_latents=True, codebook_size=16)
    assert model.config.code_dim == 3 and model.vq_layer.codebook.weight.shape == (16, 3)
    assert {"latent_in.weight", "latent_out.weight"} <= set(model.state_dict())
    encoded = model.encode_tensor(torch.from_numpy(features(5, 12))[None])
    assert encoded.shape == (1, 3, 6)
    torch.testing.assert_close(encoded.norm(dim=1), torch.ones(1, 6))  # on the unit sphere
    codes = model.encode(features(5, 12))
    assert model.decode(codes).shape == (5, 12)
    # The default keeps the original layout: no latent projections.
    assert not any(key.startswith("latent_") for key in random_model(feature_dim=5).state_dict())


def test_half_precision_storage_is_lossless_after_rounding(tmp_path):
    model = random_model(seed=3).round_to_half()
    weights = model.save(tmp_path)
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        assert handle.get_tensor("encoder.1.weight").dtype == torch.float16
    loaded = VQVAE.load(tmp_path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # Values beyond float16's range are never rounded to inf.
    huge = random_model(seed=5)
    with torch.no_grad():
        huge.vq_layer.codebook.weight[0, 0] = 1e6
    huge.round_to_half()
    assert torch.isfinite(huge.vq_layer.codebook.weight).all()
    # Unrounded weights are kept in float32: saving never changes a value.
    unrounded = random_model(seed=4)
    unrounded.save(tmp_path / "full")
    with safe_open(str(tmp_path / "full" / WEIGHTS_NAME), framework="pt") as handle:
        assert handle.get_tensor("encoder.1.weight").dtype == torch.float32


# ----- errors --------------------------------------------------------------------------------------


def test_decode_rejects_bad_codes():
    model = random_model(codebook_size=16)
    with pytest.raises(TokenError, match="16 at position 1"):
        model.decode(np.array([3, 16, 2]))
    with pytest.raises(TokenError, match="-1 at position 0"):
        model.decode([-1, 4])
    with pytest.raises(TokenError, match="empty"):
        model.decode(np.array([], dtype=np.int64))
    with pytest.raises(TokenError, match="1-D"):
        model.decode(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TokenError, match="integers"):
        model.decode(np.array([0.5, 1.0]))
    assert model.decode([0, 15]).shape == (6, 4)


def test_encode_rejects_bad_features():
    model = random_model(downsample=4)
    with pytest.raises(AudioError, match="too short"):
        model.encode(features(6, 3))
    with pytest.raises(ModelError, match="channels"):
        model.encode(features(7, 20))
    with pytest.raises(AudioError):
        model.encode(np.zeros(20, dtype=np.float32))
    bad = features(6, 20)
    bad[2, 3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        model.encode(bad)


def test_config_round_trip_and_validation():
    config = VQVAEConfig(feature_dim=80, codebook_size=256, downsample=4, channels=64)
    assert VQVAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ModelError, match="unknown"):
        VQVAEConfig.from_dict({**config.to_dict(), "colour": "red"})
    with pytest.raises(ModelError, match="downsample"):
        VQVAEConfig(feature_dim=80, downsample=3)
    with pytest.raises(ModelError, match="feature_dim"):
        VQVAEConfig(feature_dim=0)


# ----- save / load ---------------------------------------------------------------------------------


@pytest.mark.parametrize("downsample", [1, 4])
def test_save_load_is_bit_identical(tmp_path, downsample):
    model = random_model(downsample=downsample, seed=7)
    with torch.no_grad():
        model.vq_layer.affine_transform.bias.normal_(0, 0.01)
    weights = model.save(tmp_path / "model")
    assert weights == tmp_path / "model" / WEIGHTS_NAME and (tmp_path / "model" / CONFIG_NAME).is_file()
    for source in (tmp_path / "model", weights):
        loaded = VQVAE.load(source)
        assert loaded.config == model.config
        for key, value in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    x = features(6, 37, seed=4)
    np.testing.assert_array_equal(loaded.encode(x), model.encode(x))
    codes = model.encode(x)
    assert np.array_equal(loaded.decode(codes), model.decode(codes))
    # without vqvae.json the config comes from the safetensors metadata
    (tmp_path / "model" / CONFIG_NAME).unlink()
    assert VQVAE.load(weights).config == model.config


def test_load_rejects_mismatched_or_corrupt_files(tmp_path):
    model = random_model()
    model.save(tmp_path)
    with pytest.raises(ModelError, match="wrong shapes"):
        VQVAE.load(tmp_path, config=VQVAEConfig(feature_dim=6, codebook_size=17))
    with pytest.raises(ModelError, match="not found"):
        VQVAE.load(tmp_path / "nowhere")
    (tmp_path / WEIGHTS_NAME).write_bytes(b"\x00" * 20)
    with pytest.raises(ModelError):
        VQVAE.load(tmp_path)
