"""Quantizers: one contract (VQ, FSQ), exact code <-> vector maps, upkeep inside the quantizer."""

from __future__ import annotations

import pytest
import torch

from plutok import registry


@pytest.mark.parametrize(
    "config", [{"name": "fsq", "levels": [8, 5, 5, 5]}, {"name": "vq", "codebook_size": 64, "dim": 8}]
)
def test_forward_quantize_dequantize_agree(config):
    quantizer = registry.build("quantizer", config)
    torch.manual_seed(0)
    latent = torch.randn(3, quantizer.dim, 40) * 2
    output = quantizer(latent)
    codes = quantizer.quantize(latent)
    assert codes.shape == (3, 40) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < quantizer.codebook_size
    assert torch.equal(output.codes, codes)
    torch.testing.assert_close(quantizer.dequantize(codes), output.quantized.detach())
    # Straight-through: the gradient reaches the latent.
    latent.requires_grad_(True)
    quantizer(latent).quantized.sum().backward()
    assert latent.grad is not None and latent.grad.abs().sum() > 0


def test_fsq_every_code_is_reachable_and_round_trips():
    quantizer = registry.build("quantizer", {"name": "fsq", "levels": [8, 5, 3]})
    assert quantizer.codebook_size == 120
    codes = torch.arange(120)[None]
    vectors = quantizer.dequantize(codes)
    # A latent that squashes to just inside each code's integer (x 0.98) rounds back to that code.
    half_width = quantizer._levels[None, :, None] // 2
    offset = torch.where(quantizer._levels[None, :, None] % 2 == 0, 0.5, 0.0)
    half = (quantizer._levels[None, :, None] - 1) * (1 - 1e-3) / 2
    latent = torch.atanh((0.98 * vectors * half_width + offset) / half) - torch.atanh(offset / half)
    assert torch.equal(quantizer.quantize(latent), codes)


def test_vq_kmeans_init_and_dead_code_replacement():
    quantizer = registry.build(
        "quantizer", {"name": "vq", "codebook_size": 16, "dim": 4, "dead_code_steps": 3}
    )
    torch.manual_seed(1)
    data = torch.randn(2000, 4)
    quantizer.initialize(data)
    before = quantizer.vectors().detach().clone()
    # Latents that all fall on one code: the other 15 die and are moved onto recent latents.
    latent = torch.nn.functional.normalize(torch.ones(1, 4, 50) + 0.01 * torch.randn(1, 4, 50), dim=1)
    resets = 0.0
    for _ in range(4):
        output = quantizer(latent)
        resets += quantizer.upkeep(latent, output.codes)["resets"]
    assert resets >= 14
    assert not torch.allclose(before, quantizer.vectors())


def test_vq_ema_moves_codes_to_their_latents():
    quantizer = registry.build(
        "quantizer",
        {"name": "vq", "codebook_size": 4, "dim": 2, "ema": True, "normalize": False, "ema_decay": 0.5},
    )
    quantizer.initialize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]).repeat(10, 1))
    latent = torch.tensor([[[2.0], [0.1]]])  # nearest to code (1, 0)
    output = quantizer(latent)
    quantizer.upkeep(latent, output.codes)
    assert quantizer.vectors()[int(output.codes)][0] > 1.0
    assert not quantizer.codebook.requires_grad
