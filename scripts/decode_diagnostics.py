"""Diagnostics of where decoding loses quality: ``plutok eval`` with the codec's decode step changed.

    python scripts/decode_diagnostics.py unquantized MODEL MANIFEST [plutok eval options]
    python scripts/decode_diagnostics.py variance-scale=1.2 MODEL MANIFEST [plutok eval options]
    python scripts/decode_diagnostics.py fitted-latent=STEPS MODEL MANIFEST [plutok eval options]
    python scripts/decode_diagnostics.py fitted-codes=STEPS MODEL MANIFEST [plutok eval options]

``unquantized``: every utterance is decoded from the encoder's latent, normalised as the
codebook's vectors are, instead of from its codes: what the quantizer costs.
``variance-scale=A``: the decoder's speaker-normalised log-mel is scaled by ``A`` about each
band's mean over the utterance (a global-variance postfilter): whether flat spectra cost
intelligibility. ``fitted-latent=STEPS``: each utterance is decoded from a latent fitted
to its own log-mel (``STEPS`` Adam steps on the decoder's L1 error, decoder frozen,
starting from the encoder's latent): what the decoder can render of this voice when its
input is the best one, an oracle no encoder reaches. ``fitted-codes=STEPS``: the nearest
codes of that fitted latent, decoded as any codes are: an encoder that searches for the
codes its own decoder renders best (analysis by synthesis) -- real codes of the model's
token space. All need short utterances (one decoding chunk); the model card's numbers
came from ``--split dev --kind real --metrics stoi`` and ``--split dev-unseen``.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.nn.functional as F

from plutok import encode_path
from plutok.codec.content import ContentCodec
from plutok.evaluation import cli


def patch_unquantized() -> None:
    encode = ContentCodec.encode_tensor
    latents: dict[str, torch.Tensor] = {}

    def encode_tensor(self: ContentCodec, analysis: torch.Tensor) -> torch.Tensor:
        latent = self.latent(analysis)
        latents["last"] = F.normalize(latent, dim=1) if self.quantizer.settings.get("normalize") else latent
        return encode(self, analysis)

    def decode_tensor(
        self: ContentCodec, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: object = None
    ) -> torch.Tensor:
        latent = latents.get("last")
        if latent is None or latent.shape[-1] != codes.shape[-1]:
            raise SystemExit(
                "unquantized decoding needs each utterance decoded in one chunk, right after encoding"
            )
        return self.synthesize_from_vectors(latent, speaker)

    ContentCodec.encode_tensor, ContentCodec.decode_tensor = encode_tensor, decode_tensor


def patch_variance_scale(scale: float) -> None:
    decode = ContentCodec.decode_tensor

    def decode_tensor(
        self: ContentCodec, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: object = None
    ) -> torch.Tensor:
        features = decode(self, codes, speaker)
        mean = features.mean(dim=-1, keepdim=True)
        return mean + scale * (features - mean)

    ContentCodec.decode_tensor = decode_tensor


def fitted_latent(
    parts: object, waveform: np.ndarray, steps: int, sphere: bool = False
) -> tuple[torch.Tensor, np.ndarray]:
    """``(latent (1, D, T_codes), speaker)``: the encoder's latent moved by ``steps`` Adam steps
    to lower the L1 distance between what the decoder (post-filter included) makes of it and
    the utterance's own speaker-normalised log-mel."""
    codec = parts.codec
    speaker = parts.speaker.embed(waveform)
    analysis = parts.frontend.normalized(parts.frontend.analyze(waveform, speaker), speaker, parts.speaker)
    target = parts.speaker.normalize(parts.speaker.log_mel(waveform), speaker)
    # The decoder reads the speaker vector a .plt file stores: float16.
    condition = torch.from_numpy(speaker.astype(np.float16).astype(np.float32))[None]
    gain = torch.ones(target.shape[0], 1)
    if parts.postfilter is not None:
        gain = torch.as_tensor(parts.postfilter.gain, dtype=torch.float32)[:, None]
    codec.eval()
    for parameter in codec.parameters():
        parameter.requires_grad_(False)
    with torch.inference_mode(False), torch.enable_grad():
        latent = codec.latent(torch.from_numpy(np.ascontiguousarray(analysis, dtype=np.float32))[None])
        if codec.quantizer.settings.get("normalize"):
            latent = F.normalize(latent, dim=1)
        latent = latent.detach().clone().requires_grad_(True)
        wanted = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None]
        optimizer = torch.optim.Adam([latent], lr=0.01)
        for _ in range(steps):
            vectors = F.normalize(latent, dim=1) if sphere else latent
            decoded = codec.synthesize_from_vectors(vectors, condition) * gain
            frames = min(decoded.shape[-1], wanted.shape[-1])
            loss = (decoded[..., :frames] - wanted[..., :frames]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    latent = latent.detach()
    return (F.normalize(latent, dim=1) if sphere else latent), speaker


def searched_codes(
    parts: object, waveform: np.ndarray, candidates: int, sweeps: int, fit_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (T_codes,), speaker)`` chosen by analysis by synthesis: start from the nearest
    codes of the fitted latent (:func:`fitted_latent`, on the unit sphere), then sweep over
    the frames, trying each frame's ``candidates`` codes nearest that latent and keeping
    the one whose decoding (post-filter included) is nearest the utterance's own log-mel
    in L1. A code changes the decoder's output only within ``decoder_context`` codes, so
    frames further apart than twice that are decided together, exactly as one at a time."""
    codec = parts.codec
    latent, speaker = fitted_latent(parts, waveform, fit_steps, sphere=True)
    target = parts.speaker.normalize(parts.speaker.log_mel(waveform), speaker)
    wanted = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))[None]
    condition = torch.from_numpy(speaker.astype(np.float16).astype(np.float32))[None]
    gain = torch.ones(target.shape[0], 1)
    if parts.postfilter is not None:
        gain = torch.as_tensor(parts.postfilter.gain, dtype=torch.float32)[:, None]
    vectors = codec.quantizer.vectors()
    rows = latent[0].T
    codes = codec.quantizer.nearest(rows)
    count = codes.shape[0]
    choices = torch.cdist(rows, vectors).topk(candidates, largest=False).indices  # (T, K)
    context = codec.decoder_context
    per_code = codec.synthesis_frames_per_code
    stride = 2 * context + 1
    with torch.inference_mode():

        def frame_errors(trials: torch.Tensor) -> torch.Tensor:
            decoded = codec.synthesize_from_vectors(vectors[trials].permute(0, 2, 1), condition) * gain
            frames = min(decoded.shape[-1], wanted.shape[-1])
            errors = (decoded[..., :frames] - wanted[..., :frames]).abs().mean(dim=1)
            return F.pad(errors, (0, count * per_code - frames))  # (K, T * per_code)

        for _ in range(sweeps):
            for first in range(min(stride, count)):
                frames = torch.arange(first, count, stride)
                trials = codes.repeat(candidates + 1, 1)
                trials[1:, frames] = choices[frames].T
                windows = frame_errors(trials).view(candidates + 1, count, per_code).sum(dim=-1)
                # each chosen frame's loss: the output frames of the codes within its context
                summed = F.avg_pool1d(windows[:, None], 2 * context + 1, 1, padding=context)[:, 0]
                best = summed[:, frames].argmin(dim=0)  # 0: keep the current code
                changed = best > 0
                codes[frames[changed]] = choices[frames[changed], best[changed] - 1]
    return codes.numpy().astype(np.int64), speaker


def fitted_speaker(parts: object, waveform: np.ndarray, codes: np.ndarray, speaker: np.ndarray, steps: int) -> np.ndarray:
    """The speaker vector moved by ``steps`` Adam steps to lower the L1 distance between the
    decoding of ``codes`` (post-filter and de-normalisation included) and the utterance's
    own log-mel, in the log-mel's own units: the vector a .plt file sends is free to be
    whichever one the decoder renders this voice best from. Mel-statistics speakers only."""
    codec, encoder = parts.codec, parts.speaker
    raw = torch.from_numpy(np.ascontiguousarray(encoder.log_mel(waveform), dtype=np.float32))[None]
    basis = torch.as_tensor(encoder._basis, dtype=torch.float32)
    std_basis = torch.as_tensor(encoder._std_basis, dtype=torch.float32)
    gain = torch.ones(raw.shape[1], 1)
    if parts.postfilter is not None:
        gain = torch.as_tensor(parts.postfilter.gain, dtype=torch.float32)[:, None]
    vectors = codec.quantizer.vectors()[torch.from_numpy(codes)].T[None]
    for parameter in codec.parameters():
        parameter.requires_grad_(False)
    with torch.inference_mode(False), torch.enable_grad():
        vector = torch.from_numpy(speaker.astype(np.float16).astype(np.float32))[None].requires_grad_(True)
        optimizer = torch.optim.Adam([vector], lr=0.01)
        split = encoder.coefficients
        for _ in range(steps):
            mean = (basis.T @ vector[0, :split])[:, None]
            std = torch.exp(std_basis.T @ vector[0, split:]).clamp(min=0.05)[:, None]
            decoded = codec.synthesize_from_vectors(vectors, vector) * gain * std + mean
            frames = min(decoded.shape[-1], raw.shape[-1])
            loss = (decoded[..., :frames] - raw[..., :frames]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return vector.detach()[0].numpy().astype(np.float32)


def patch_searched(candidates: int, sweeps: int, fit_steps: int, speaker_steps: int = 0) -> None:
    def codes_of_waveform(parts: object, waveform: np.ndarray, chunk_codes: int | None) -> tuple:
        waveform = np.asarray(waveform, dtype=np.float32)
        codes, speaker = searched_codes(parts, waveform, candidates, sweeps, fit_steps)
        if speaker_steps:
            speaker = fitted_speaker(parts, waveform, codes, speaker, speaker_steps)
        return codes, speaker

    encode_path.codes_of_waveform = codes_of_waveform


def patch_fitted(steps: int, as_codes: bool) -> None:
    latents: dict[str, torch.Tensor] = {}

    def codes_of_waveform(parts: object, waveform: np.ndarray, chunk_codes: int | None) -> tuple:
        latent, speaker = fitted_latent(parts, np.asarray(waveform, dtype=np.float32), steps)
        quantizer = parts.codec.quantizer
        rows = latent[0].T
        if quantizer.settings.get("normalize"):
            rows = F.normalize(rows, dim=1)
        codes = quantizer.nearest(rows).cpu().numpy().astype(np.int64)
        latents["last"] = latent
        return codes, speaker

    encode_path.codes_of_waveform = codes_of_waveform
    if as_codes:
        return

    def decode_tensor(
        self: ContentCodec, codes: torch.Tensor, speaker: torch.Tensor | None, sampling: object = None
    ) -> torch.Tensor:
        latent = latents.get("last")
        if latent is None or latent.shape[-1] != codes.shape[-1]:
            raise SystemExit("fitted decoding needs each utterance decoded in one chunk, right after encoding")
        return self.synthesize_from_vectors(latent, speaker)

    ContentCodec.decode_tensor = decode_tensor


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    mode, model, manifest, *options = argv
    if mode == "unquantized":
        patch_unquantized()
    elif mode.startswith(("fitted-latent=", "fitted-codes=")):
        patch_fitted(int(mode.split("=", 1)[1]), as_codes=mode.startswith("fitted-codes="))
    elif mode.startswith("searched-codes="):
        patch_searched(*(int(part) for part in mode.split("=", 1)[1].split(",")))
    elif mode.startswith("variance-scale="):
        patch_variance_scale(float(mode.split("=", 1)[1]))
    else:
        print(f"unknown diagnostic {mode!r}\n{__doc__}", file=sys.stderr)
        return 2
    return cli.main([manifest, "--model", model, *options])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
