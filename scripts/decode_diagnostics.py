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
codes its own decoder renders best, in its crudest form -- real codes of the model's
token space (the library's code search, ``plutok eval --search``, goes further). All need
short utterances (one decoding chunk); the model card's numbers came from ``--split dev
--kind real --metrics stoi`` and ``--split dev-unseen``.
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


def fitted_latent(parts: object, waveform: np.ndarray, steps: int) -> tuple[torch.Tensor, np.ndarray]:
    """``(latent (1, D, T_codes), speaker)``: the encoder's latent moved by ``steps`` Adam steps
    to lower the L1 distance between what the decoder (post-filter included) makes of it and
    the utterance's own speaker-normalised log-mel."""
    codec = parts.codec
    speaker = parts.speaker.embed(waveform)
    analysis = parts.frontend.normalized(parts.frontend.analyze(waveform, speaker), speaker, parts.speaker)
    target = parts.speaker.normalize(parts.speaker.log_mel(waveform), speaker)
    # The decoder reads the speaker vector a .plt file stores: float16.
    condition = torch.from_numpy(speaker.astype(np.float16).astype(np.float32))[None]
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
            decoded = codec.synthesize_from_vectors(latent, condition)
            if parts.postfilter is not None:
                decoded = parts.postfilter.apply_tensor(decoded)
            frames = min(decoded.shape[-1], wanted.shape[-1])
            loss = (decoded[..., :frames] - wanted[..., :frames]).abs().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return latent.detach(), speaker


def patch_fitted(steps: int, as_codes: bool) -> None:
    latents: dict[str, torch.Tensor] = {}

    def codes_of_waveform(parts: object, waveform: np.ndarray, *_: object) -> tuple:
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
            raise SystemExit(
                "fitted decoding needs each utterance decoded in one chunk, right after encoding"
            )
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
    elif mode.startswith("variance-scale="):
        patch_variance_scale(float(mode.split("=", 1)[1]))
    else:
        print(f"unknown diagnostic {mode!r}\n{__doc__}", file=sys.stderr)
        return 2
    return cli.main([manifest, "--model", model, *options])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
