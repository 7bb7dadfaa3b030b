"""VQ-VAE training: codebook maintenance, a tiny run, checkpoints and exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from plutok.errors import AudioError, ModelError
from plutok.legacy.training import SegmentSampler, TrainConfig, kmeans, train_vqvae
from plutok.legacy.vqvae import VQVAE, AffineVectorQuantizer, VQVAEConfig

torch.set_num_threads(1)


def clustered(clusters: int, per_cluster: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=generator) * 10
    points = centres.repeat_interleave(per_cluster, 0) + 0.1 * torch.randn(
        clusters * per_cluster, dim, generator=generator
    )
    return points, centres


def usage_of(quantizer: AffineVectorQuantizer, vectors: torch.Tensor) -> float:
    with torch.no_grad():
        codes = quantizer.nearest(vectors)
    return len(torch.unique(codes)) / quantizer.codebook_size


def v1_quantizer(codebook_size: int, dim: int, **training) -> AffineVectorQuantizer:
    """The v1 VQ-VAE's quantizer with train-vq's codebook settings (``training`` overrides them)."""
    return AffineVectorQuantizer(codebook_size, dim, {**TrainConfig().codebook_training(), **training})


def test_kmeans_finds_well_separated_clusters():
    points, centres = clustered(clusters=12, per_cluster=20, dim=5)
    centroids, sizes = kmeans(points, 12, iterations=5, generator=torch.Generator().manual_seed(1))
    distances = torch.cdist(centres, centroids)
    assert distances.min(1).values.max() < 0.5  # every true centre has a centroid on it
    assert sorted(sizes.tolist()) == [20.0] * 12


def test_kmeans_initialisation_uses_the_codebook():
    points, _ = clustered(clusters=32, per_cluster=16, dim=8, seed=2)
    torch.manual_seed(0)
    quantizer = v1_quantizer(32, 8, kmeans_iterations=10)
    before = usage_of(quantizer, points)
    quantizer.initialize(points)
    after = usage_of(quantizer, points)
    assert before < 0.8
    assert after >= 0.9


def test_initialisation_respects_affine_transform():
    points, _ = clustered(clusters=8, per_cluster=10, dim=4, seed=3)
    quantizer = v1_quantizer(8, 4, kmeans_iterations=5)
    with torch.no_grad():
        quantizer.affine_transform.scale.fill_(0.05)
        quantizer.affine_transform.bias.fill_(-0.2)
    quantizer.initialize(points)
    codes = quantizer.nearest(points)
    error = (quantizer.effective_codebook()[codes] - points).norm(dim=1).max()
    assert float(error.detach()) < 1.0


def test_dead_codes_are_revived():
    points, _ = clustered(clusters=16, per_cluster=8, dim=6, seed=4)
    quantizer = v1_quantizer(16, 6, dead_code_steps=3, replay_size=256)
    with torch.no_grad():  # half the codes sit on data, half far away where nothing ever lands
        quantizer.codebook.weight[:8] = points[::16][:8]
        quantizer.codebook.weight[8:] = 1000.0
    assert usage_of(quantizer, points) == 0.5
    resets = 0
    for _ in range(6):
        codes = quantizer.nearest(points)
        stats = quantizer.upkeep(points.T[None], codes[None])
        resets += stats["resets"]
    assert resets >= 8
    assert float(quantizer.codebook.weight[8:].detach().abs().max()) < 100  # moved onto real encoder outputs
    assert usage_of(quantizer, points) > 0.5
    assert stats["active"] == 1.0
    assert quantizer.total_resets == resets
    assert int(quantizer._counts.sum()) == 6 * len(points)  # the original layout's usage record


def test_ema_kmeans_moves_codes_to_cluster_means():
    points, centres = clustered(clusters=4, per_cluster=50, dim=3, seed=5)
    quantizer = v1_quantizer(4, 3, ema=True, ema_decay=0.8, dead_code_steps=0)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(centres + 2.0)  # close enough that each code keeps its cluster
    assert not quantizer.codebook.weight.requires_grad
    assert not quantizer.affine_transform.scale.requires_grad
    for _ in range(60):
        quantizer.upkeep(points.T[None], quantizer.nearest(points)[None])
    assert float((quantizer.effective_codebook() - centres).norm(dim=1).max()) < 0.2


def synthetic_features(count: int, frames: int, dim: int = 8, seed: int = 0) -> list[np.ndarray]:
    """Piecewise-constant 'phones' from a small inventory plus a little noise."""
    inventory = np.random.default_rng(1234).standard_normal((10, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    utterances = []
    for _ in range(count):
        labels = np.repeat(rng.integers(0, 10, size=frames // 4 + 1), 4)[:frames]
        utterances.append(
            (inventory[labels].T + 0.05 * rng.standard_normal((dim, frames))).astype(np.float32)
        )
    return utterances


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(
        steps=50,
        batch_size=4,
        segment_frames=32,
        learning_rate=3e-3,
        warmup_steps=5,
        log_every=10,
        eval_every=25,
        checkpoint_every=0,
        kmeans_init_vectors=256,
        kmeans_iterations=5,
        dead_code_steps=20,
        replay_size=512,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


MODEL = VQVAEConfig(feature_dim=8, codebook_size=32, downsample=2, channels=4)


@pytest.mark.parametrize("ema", [False, True])
def test_tiny_training_reduces_loss(ema):
    train = synthetic_features(12, 60)
    dev = synthetic_features(3, 50, seed=1)
    model_config = VQVAEConfig(feature_dim=8, codebook_size=32)
    untrained_config = tiny_config(steps=1, learning_rate=1e-9)
    _, untrained = train_vqvae(train, dev, model_config, untrained_config, progress=False)
    config = tiny_config(steps=120, kmeans=ema, eval_every=60)
    model, metrics = train_vqvae(train, dev, model_config, config, progress=False)
    assert metrics["step"] == 120
    assert metrics["dev_loss"] < 0.75 * untrained["dev_loss"]
    assert metrics["train_loss"] < 0.85 * metrics["history"][0]["loss"]
    assert metrics["usage"] > 0.4 and metrics["perplexity"] > 8
    assert metrics["dev_usage"] > 0.3
    assert not model.training
    assert model.encode(dev[0]).shape == (25,)


def test_checkpoints_and_final_model_are_written(tmp_path):
    train = synthetic_features(6, 40)
    model, _ = train_vqvae(
        train,
        [],
        MODEL,
        tiny_config(steps=12, checkpoint_every=4, keep_checkpoints=2),
        tmp_path,
        progress=False,
    )
    # The two newest checkpoints: tensors + state (safetensors + JSON, no pickles).
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        f"step-{step:07d}{suffix}" for step in (8, 12) for suffix in (".json", ".safetensors")
    ]
    assert json.loads((tmp_path / "checkpoints" / "step-0000012.json").read_text())["step"] == 12
    assert not list(tmp_path.rglob("*.part"))
    loaded = VQVAE.load(tmp_path)
    np.testing.assert_array_equal(loaded.encode(train[0]), model.encode(train[0]))


@pytest.mark.parametrize("ema", [False, True])
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path, monkeypatch, ema):
    train = synthetic_features(8, 48)
    config = tiny_config(steps=20, checkpoint_every=5, dead_code_steps=3, kmeans=ema)
    reference, _ = train_vqvae(train, [], MODEL, config, tmp_path / "straight", progress=False)

    calls = {"count": 0}
    original_upkeep = AffineVectorQuantizer.upkeep

    def interrupted_upkeep(self, latent, codes, mask=None):
        calls["count"] += 1
        if calls["count"] == 13:  # killed during step 13: the checkpoint of step 10 is the latest
            raise KeyboardInterrupt
        return original_upkeep(self, latent, codes, mask)

    monkeypatch.setattr(AffineVectorQuantizer, "upkeep", interrupted_upkeep)
    with pytest.raises(KeyboardInterrupt):
        train_vqvae(train, [], MODEL, config, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(AffineVectorQuantizer, "upkeep", original_upkeep)
    newest = sorted((tmp_path / "resumed" / "checkpoints").glob("*.json"))[-1]
    assert json.loads(newest.read_text())["step"] == 10

    resumed, metrics = train_vqvae(
        train, [], MODEL, config, tmp_path / "resumed", resume=True, progress=False
    )
    assert metrics["step"] == 20
    for key, value in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


@pytest.mark.parametrize("ema", [False, True])
def test_the_seed_alone_fixes_a_run(ema):
    train = synthetic_features(6, 48)
    config = tiny_config(steps=8, dead_code_steps=2, kmeans=ema)
    first, _ = train_vqvae(train, [], MODEL, config, progress=False)
    second, _ = train_vqvae(train, [], MODEL, config, progress=False)
    other, _ = train_vqvae(
        train, [], MODEL, tiny_config(steps=8, dead_code_steps=2, kmeans=ema, seed=1), progress=False
    )
    for key, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[key], value), key
    assert not torch.equal(other.vq_layer.codebook.weight, first.vq_layer.codebook.weight)


def test_resume_rejects_a_different_architecture(tmp_path):
    train = synthetic_features(4, 40)
    train_vqvae(train, [], MODEL, tiny_config(steps=2, checkpoint_every=1), tmp_path, progress=False)
    other = VQVAEConfig(feature_dim=8, codebook_size=16, downsample=2, channels=4)
    with pytest.raises(ModelError, match="checkpoint"):
        train_vqvae(train, [], other, tiny_config(steps=4), tmp_path, resume=True, progress=False)


def test_bad_training_data_is_reported():
    with pytest.raises(AudioError, match="segment_frames"):
        SegmentSampler([np.zeros((8, 10), np.float32)], segment_frames=32, seed=0)
    with pytest.raises(ModelError, match="shape"):
        train_vqvae([np.zeros((7, 50), np.float32)], [], MODEL, tiny_config(), progress=False)
    bad = np.zeros((8, 50), np.float32)
    bad[0, 0] = np.inf
    with pytest.raises(AudioError, match="NaN or inf"):
        train_vqvae([bad], [], MODEL, tiny_config(), progress=False)


def test_sampler_is_seeded_and_restorable():
    data = synthetic_features(5, 64)
    first = SegmentSampler(data, 16, seed=3)
    state = first.state()
    batch = first.batch(4)
    second = SegmentSampler(data, 16, seed=99)
    second.set_state(state)
    np.testing.assert_array_equal(second.batch(4), batch)
    assert batch.shape == (4, 8, 16)


def test_learning_rate_schedule():
    config = TrainConfig(steps=100, learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert config.learning_rate_at(0) == pytest.approx(0.1)
    assert config.learning_rate_at(9) == pytest.approx(1.0)
    assert config.learning_rate_at(99) == pytest.approx(0.1, abs=0.01)
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_schedule_names_are_the_shared_trainers_and_the_old_ones_still_work():
    from plutok.cli import build_parser
    from plutok.legacy.training import _trainer_config
    from plutok.settings import TrainerConfig

    # One vocabulary with TrainerConfig: log_every / eval_every / checkpoint_every.
    config = TrainConfig(log_every=3, eval_every=7, checkpoint_every=5)
    schedule = _trainer_config(config, code_frames=8, world_size=1)
    assert (schedule.log_every, schedule.eval_every, schedule.checkpoint_every) == (3, 7, 5)
    assert {"log_every", "eval_every", "checkpoint_every"} <= set(vars(TrainerConfig()))
    # Settings saved with the earlier names still read.
    old = TrainConfig.from_dict({"log_interval": 3, "eval_interval": 7, "checkpoint_interval": 5})
    assert old == config
    # train-vq takes --eval-every / --checkpoint-every, and the earlier --*-interval flags.
    for flags in (
        ["--eval-every", "7", "--checkpoint-every", "5"],
        ["--eval-interval", "7", "--checkpoint-interval", "5"],
    ):
        args = build_parser().parse_args(["train-vq", "feats", "-o", "out", *flags])
        assert (args.eval_every, args.checkpoint_every) == (7, 5)
