"""``plutok export-onnx``: the decode path as one ONNX graph, for decoding without torch.

::

    codes (1, N) int64, speaker (1, S) float32
      -> code vectors (table lookup) -> codec decoder (speaker-conditioned) -> normalised log-mel
      -> the model's global-variance post-filter, if it has one (a gain per band)
      -> speaker de-normalisation (mean and std rebuilt from the speaker vector's DCT coefficients)
      -> fast vocoder (ConvNeXt -> log-magnitude and phase -> inverse STFT) -> waveform (1, N * samples_per_code)

Everything runs at the code and frame rates except the last step, and the inverse STFT
is written with real matrix products and a transposed convolution (ONNX has no inverse
FFT operator), so the graph runs in ONNX Runtime on any CPU. ``N`` is a dynamic axis.
Beside the graph, ``<name>.tokens.json`` holds what turns token ids into codes without the
``tokenizers`` library (``codes_of_token[id]``), the model's default voice, the sample
rate and the samples per code: with ``onnxruntime`` and ``numpy`` a program decodes a
language model's token ids (docs/onnx.md).

The codec must be a speaker-conditioned codec with ``synthesize_from_vectors`` (the v2
``content`` codec), the speaker part the ``mel-statistics`` encoder. A model whose vocoder
is not the fast ``istft-16k`` one (HiFi-GAN) is exported with the bundled fast vocoder,
which reads the same log-mel: the same tokens, the ``fast`` model's sound.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

__all__ = ["TOKENS_SUFFIX", "configure_parser", "decode_graph", "export_onnx", "run"]

#: The token table's name beside the ONNX file: ``decode.onnx`` -> ``decode.tokens.json``.
TOKENS_SUFFIX = ".tokens.json"
#: ONNX opset of the export (LayerNormalization needs 17).
OPSET = 17


def decode_graph(parts: Any) -> Any:
    """The decode path of a model's parts as a ``torch.nn.Module``: ``(codes (1, N), speaker (1, S)) -> (1, samples)``.

    The module holds copies of the parts' weights in float32; its output equals
    :func:`plutok.synthesis.synthesize` on one chunk (same codes, speaker, no resampling).
    """
    import numpy as np
    import torch
    from torch import nn

    from plutok.errors import ModelError
    from plutok.vocoders.istft import ISTFTVocoder

    codec, speaker_part, vocoder = parts.codec, parts.speaker, _fast_vocoder(parts)
    if not hasattr(codec, "synthesize_from_vectors") or not getattr(codec, "speaker_conditioned", False):
        raise ModelError(f"ONNX export needs a v2 speaker-conditioned codec, not {codec.name!r}")
    from plutok.speaker.learned import LearnedMelSpeaker
    from plutok.speaker.mel_statistics import MelStatisticsSpeaker

    # De-normalisation reads the statistics; a learned-mel vector's learned values only condition the decoder.
    statistics = speaker_part.statistics if isinstance(speaker_part, LearnedMelSpeaker) else speaker_part
    if not isinstance(statistics, MelStatisticsSpeaker):
        raise ModelError(
            f"ONNX export needs a mel-statistics or learned-mel speaker part, not {speaker_part.name!r}"
        )
    assert isinstance(vocoder, ISTFTVocoder)
    postfilter = getattr(parts, "postfilter", None)
    if postfilter is not None and not hasattr(postfilter, "gain"):
        raise ModelError(f"ONNX export knows the global-variance post-filter, not {postfilter.name!r}")
    # The post-filter as a per-channel gain (ones without one): the same product as in synthesis.py.
    gain = torch.ones(codec.output_dim) if postfilter is None else torch.from_numpy(postfilter.gain)
    with torch.no_grad():
        table = codec.quantizer.dequantize(torch.arange(codec.codebook_size)[None])[0].T.float()  # (K, D)
    net = vocoder.net
    settings = net.settings
    n_fft, hop = settings.n_fft, settings.hop_length
    bins = n_fft // 2 + 1
    # irfft of n_fft points as two real products: sample n of frame t is
    # sum_k weight_k (Re X_k cos(2 pi k n / N) - Im X_k sin(2 pi k n / N)) / N.
    k = np.arange(bins)[:, None]
    n = np.arange(n_fft)[None, :]
    weight = np.where((k == 0) | (k == n_fft // 2), 1.0, 2.0) / n_fft
    window = net.window.double().cpu().numpy()
    cos_basis = torch.tensor(weight * np.cos(2 * np.pi * k * n / n_fft) * window, dtype=torch.float32)
    sin_basis = torch.tensor(weight * np.sin(2 * np.pi * k * n / n_fft) * window, dtype=torch.float32)
    basis = torch.tensor(statistics._basis, dtype=torch.float32)  # (coefficients, n_mels)
    std_basis = torch.tensor(statistics._std_basis, dtype=torch.float32)  # (std_coefficients, n_mels)
    from plutok.speaker.mel_statistics import _MIN_STD as min_std

    class DecodeGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.codec = codec
            self.net = net
            self.register_buffer("table", table)
            self.register_buffer("cos_basis", cos_basis.T.contiguous())  # (n_fft, bins)
            self.register_buffer("sin_basis", sin_basis.T.contiguous())
            self.register_buffer("speaker_basis", basis)
            self.register_buffer("speaker_std_basis", std_basis)
            self.register_buffer("gain", gain.float()[None, :, None])
            self.register_buffer("identity", torch.eye(n_fft)[:, None, :])  # overlap-add kernel
            self.register_buffer("window_square", net.window.float().square()[None, None, :])
            self.coefficients, self.std_end = basis.shape[0], basis.shape[0] + std_basis.shape[0]

        def forward(self, codes: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
            vectors = nn.functional.embedding(codes, self.table).transpose(1, 2)  # (1, D, N)
            normalised = self.codec.synthesize_from_vectors(vectors, speaker) * self.gain  # (1, n_mels, 4 N)
            mean = (speaker[:, : self.coefficients] @ self.speaker_basis)[:, :, None]
            std = torch.exp(speaker[:, self.coefficients : self.std_end] @ self.speaker_std_basis)
            std = std.clamp(min=min_std)[:, :, None]
            log_mel = normalised * std + mean
            output = self._network(log_mel)
            log_magnitude, phase = output[:, :bins], output[:, bins:]
            magnitude = torch.exp(log_magnitude.clamp(max=7.0))
            real, imaginary = magnitude * torch.cos(phase), magnitude * torch.sin(phase)  # (1, bins, T)
            pieces = torch.matmul(self.cos_basis, real) - torch.matmul(
                self.sin_basis, imaginary
            )  # (1, n_fft, T), windowed
            wave = nn.functional.conv_transpose1d(pieces, self.identity, stride=hop)[:, 0]
            ones = torch.ones_like(real[:, :1])  # (1, 1, T)
            envelope = nn.functional.conv_transpose1d(ones, self.window_square, stride=hop)[:, 0]
            wave = wave / envelope.clamp(min=1e-8)
            pad = (n_fft - hop) // 2
            return wave[:, pad : wave.shape[1] - pad]

        def _network(self, log_mel: torch.Tensor) -> torch.Tensor:
            net = self.net
            hidden = net.embed((log_mel - net.mel_mean) / net.mel_std)
            hidden = net.embed_norm(hidden.transpose(1, 2)).transpose(1, 2)
            hidden = net.blocks(hidden)
            return net.head(net.output_norm(hidden.transpose(1, 2))).transpose(1, 2)

    return DecodeGraph().float().eval()


def _fast_vocoder(parts: Any) -> Any:
    """The model's vocoder if it is the fast one, else the bundled fast vocoder (same log-mel in)."""
    from plutok.errors import ModelError
    from plutok.vocoders.istft import ISTFTVocoder

    if isinstance(parts.vocoder, ISTFTVocoder):
        return parts.vocoder
    from plutok.model_directory import load_model_parts

    fast = load_model_parts("fast").vocoder
    if fast.feature_dim != parts.vocoder.feature_dim or fast.hop_length != parts.vocoder.hop_length:
        raise ModelError("the model's vocoder reads other features than the bundled fast vocoder")
    return fast


def token_table(parts: Any) -> dict[str, Any]:
    """What ``tokens.json`` holds: the codes of every token id, the default voice, rates."""
    bpe = parts.bpe
    codes_of_token = [bpe.decode([token_id]).tolist() for token_id in range(bpe.vocab_size)]
    codec, vocoder = parts.codec, parts.vocoder
    return {
        "codes_of_token": codes_of_token,
        "default_speaker": parts.default_speaker,
        "sample_rate": vocoder.sample_rate,
        "samples_per_code": codec.synthesis_frames_per_code * vocoder.hop_length,
        "codebook_size": codec.codebook_size,
        "speaker_dim": len(parts.default_speaker) if parts.default_speaker else None,
    }


def export_onnx(model: str | os.PathLike | None, output: str | os.PathLike) -> dict[str, Any]:
    """Write the decode graph of ``model`` (a folder or bundled name) to ``output``, its token table beside it.

    ``decode.onnx`` gets ``decode.tokens.json`` (a file of that name that is not such a
    table is not overwritten).

    Returns a summary (paths, opset, vocoder, the model's fingerprint).
    """
    import importlib.util

    import torch

    from plutok.errors import PlutokError
    from plutok.files import atomic_path, atomic_write_text
    from plutok.model_directory import fingerprint, load_model_parts

    if importlib.util.find_spec("onnx") is None:
        raise PlutokError("export-onnx needs the onnx package: pip install 'plutok[onnx]' (or onnx)")
    output = Path(output)
    tokens = output.with_name(output.stem + TOKENS_SUFFIX)
    if tokens.exists() and not _is_token_table(tokens):
        raise PlutokError(f"{tokens}: exists and is not a token table of plutok export-onnx; not overwriting")
    parts = load_model_parts(model)
    graph = decode_graph(parts)
    speaker_dim = parts.speaker.speaker_dim
    codes = torch.zeros(1, 8, dtype=torch.int64)
    speaker = torch.tensor([parts.default_speaker or [0.0] * speaker_dim], dtype=torch.float32)
    with atomic_path(output) as temporary, torch.no_grad(), warnings.catch_warnings():
        # torch calls this exporter legacy; the torch.export-based one needs onnxscript as well.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            graph,
            (codes, speaker),
            str(temporary),
            dynamo=False,  # the TorchScript-based exporter: needs onnx only
            input_names=["codes", "speaker"],
            output_names=["waveform"],
            dynamic_axes={"codes": {1: "codes"}, "waveform": {1: "samples"}},
            opset_version=OPSET,
        )
    table = token_table(parts)
    table["fingerprint"] = fingerprint(parts)
    atomic_write_text(tokens, json.dumps(table) + "\n")
    return {
        "onnx": str(output),
        "tokens": str(tokens),
        "opset": OPSET,
        "vocoder": _fast_vocoder(parts).name,
        "fingerprint": table["fingerprint"],
    }


def _is_token_table(path: Path) -> bool:
    try:
        return "codes_of_token" in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return False


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", default="fast", help="model folder or bundled name (default: fast)"
    )
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DECODE.onnx",
        help="the ONNX file; its token table goes beside it (decode.onnx: decode.tokens.json)",
    )


def run(args: argparse.Namespace) -> int:
    print(json.dumps(export_onnx(args.model, args.output)))
    return 0
