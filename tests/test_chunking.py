"""One chunking helper: chunked output equals one pass for every ratio of output to input steps."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from plutok.chunking import chunked_apply, chunked_apply_to_blocks, plan_windows
from plutok.legacy.codec import VQVAECodec


def _stage(ratio: Fraction):
    """A random conv stage with a receptive field of +-6 input steps and ``ratio`` outputs per step."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(2, 2, kernel_size=13, padding=6)
    signal = torch.randn(2, 230)

    def process(begin: int, end: int) -> np.ndarray:
        with torch.no_grad():
            out = conv(signal[None, :, begin:end])[0].numpy()
        if ratio > 1:
            return np.repeat(out, int(ratio), axis=-1)
        return out[..., :: int(1 / ratio)] if ratio < 1 else out

    return process


@pytest.mark.parametrize("ratio", [Fraction(1), Fraction(1, 2), Fraction(3)])
@pytest.mark.parametrize("fixed", [False, True])
def test_chunked_equals_one_pass(ratio, fixed):
    process = _stage(ratio)
    reference = process(0, 230)
    for chunk in (2, 10, 50):
        result = chunked_apply(process, 230, chunk, 6, ratio, fixed_window=fixed)
        np.testing.assert_allclose(result, reference, rtol=0, atol=1e-6)


def test_windows_cover_every_output_once():
    windows = plan_windows(1003, 100, 8, Fraction(1, 4))
    assert sum(w.count for w in windows) == 251
    assert windows[0].first == 0 and all(w.first == 2 for w in windows[1:])  # 8 steps of context = 2 outputs
    fixed = plan_windows(1003, 100, 8, 1, fixed_window=True)
    assert {w.end - w.begin for w in fixed} == {116} and fixed[-1].end == 1003


def test_a_chunk_that_cuts_an_output_is_refused():
    with pytest.raises(ValueError):
        plan_windows(100, 10, 4, Fraction(1, 4))


def test_labelled_stages_report_their_windows():
    from plutok.chunking import report_progress

    process = _stage(Fraction(1))
    heard = []
    with report_progress(lambda *event: heard.append(event)):
        labelled = chunked_apply(process, 230, 50, 6, label="vocoder")
        chunked_apply(process, 230, 50, 6)  # unlabelled: silent
        chunked_apply(process, 230, None, 6, label="one pass")
    chunked_apply(process, 230, 50, 6, label="outside")  # no listener: nothing, no error
    assert heard == [("vocoder", done, 5) for done in range(1, 6)] + [("one pass", 1, 1)]
    np.testing.assert_allclose(labelled, process(0, 230), rtol=0, atol=1e-6)


@pytest.mark.parametrize("ratio", [Fraction(1), Fraction(1, 2)])
@pytest.mark.parametrize("sizes", [[230], [1] * 230, [7, 3, 100, 1, 119], [60, 60, 60, 50]])
def test_blocks_give_what_one_array_gives(ratio, sizes):
    """Input that arrives in blocks of any size (smaller than the context, or all at once)
    gives exactly the chunked result over the joined array, one window at a time."""
    signal = np.random.default_rng(0).standard_normal((2, 230)).astype(np.float32)
    ends = np.cumsum(sizes)
    blocks = [signal[:, end - size : end] for size, end in zip(sizes, ends, strict=True)]
    step = int(1 / ratio)
    seen: list[int] = []

    def process(steps: np.ndarray) -> np.ndarray:
        # A running sum: any shift of a window's begin or end changes the result.
        seen.append(steps.shape[-1])
        return np.cumsum(steps, axis=-1)[..., ::step]

    for chunk in (2, 10, 50, None):
        expected = chunked_apply(lambda b, e: process(signal[:, b:e]), 230, chunk, 6, ratio)
        seen.clear()
        result = chunked_apply_to_blocks(process, iter(blocks), 230, chunk, 6, ratio)
        np.testing.assert_array_equal(result, expected)
        assert max(seen) <= (230 if chunk is None else chunk + 12)


def test_blocks_that_do_not_add_up_are_refused():
    blocks = [np.zeros((1, 10)), np.zeros((1, 10))]
    with pytest.raises(ValueError, match="expected 30"):
        chunked_apply_to_blocks(lambda steps: steps, iter(blocks), 30, 4, 2)
    with pytest.raises(ValueError, match="more than the expected 15"):
        chunked_apply_to_blocks(lambda steps: steps, iter(blocks), 15, 4, 2)


def _reach(forward, inputs: torch.Tensor, first: int, last: int) -> tuple[int, int]:
    """Input steps ``[lo, hi]`` that outputs ``first .. last - 1`` of ``forward(inputs)`` depend on."""
    inputs = inputs.clone().requires_grad_(True)
    forward(inputs)[..., first:last].abs().sum().backward()
    touched = torch.nonzero(inputs.grad.abs().sum(dim=(0, 1))).flatten()
    return int(touched.min()), int(touched.max())


@pytest.mark.parametrize("frames_per_code", [1, 2, 4])
def test_every_part_declares_a_context_that_covers_what_it_reads(frames_per_code):
    """One rule (``layers.receptive_field``) for every part: v2 encoder and decoder, v1 VQ-VAE, iSTFT."""
    from plutok.codec.decoders.convnext import ConvNeXtDecoder
    from plutok.codec.encoders.convnext import ConvNeXtEncoder
    from plutok.legacy.vqvae import VQVAE, VQVAEConfig
    from plutok.settings import ConvNeXtDecoderSettings, ConvNeXtEncoderSettings, ISTFTVocoderSettings
    from plutok.vocoders.istft import ISTFTNet

    torch.manual_seed(0)
    code = 40  # the code whose inputs are looked at, far from both ends
    encoder = ConvNeXtEncoder(
        ConvNeXtEncoderSettings(
            input_dim=6, latent_dim=3, frames_per_code=frames_per_code, channels=8, blocks=2, kernel_size=5
        )
    )
    low, high = _reach(encoder, torch.randn(1, 6, 80 * frames_per_code), code, code + 1)
    assert code * frames_per_code - low <= encoder.context
    assert high - ((code + 1) * frames_per_code - 1) <= encoder.context
    assert encoder.context % frames_per_code == 0

    decoder = ConvNeXtDecoder(
        ConvNeXtDecoderSettings(
            latent_dim=3,
            output_dim=5,
            speaker_dim=2,
            channels=8,
            blocks=2,
            upsampled_channels=8,
            upsampled_blocks=3,
            kernel_size=5,
        )
    )
    low, high = _reach(lambda x: decoder(x, None), torch.randn(1, 3, 80), 4 * code, 4 * code + 4)
    assert max(code - low, high - code) <= decoder.context

    for downsample in (1, 2, 4):
        codec = VQVAECodec(
            VQVAE(VQVAEConfig(feature_dim=4, codebook_size=8, downsample=downsample, channels=3))
        )
        model = codec.model
        low, high = _reach(model.encode_tensor, torch.randn(1, 4, 80 * downsample), code, code + 1)
        assert code * downsample - low <= codec.encoder_context
        assert high - ((code + 1) * downsample - 1) <= codec.encoder_context
        frames = slice(code * downsample, (code + 1) * downsample)
        low, high = _reach(
            model.decode_tensor, torch.randn(1, model.config.code_dim, 80), frames.start, frames.stop
        )
        assert max(code - low, high - code) <= codec.decoder_context

    net = ISTFTNet(ISTFTVocoderSettings(channels=8, blocks=2, kernel_size=5, n_mels=4))
    low, high = _reach(lambda x: net.spectrum(x).abs(), torch.randn(1, 4, 80), code, code + 1)
    assert max(code - low, high - code) <= net.context_frames
