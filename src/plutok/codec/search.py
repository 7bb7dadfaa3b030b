"""Code search: codes chosen by what the model's own decoder makes of them (analysis by synthesis).

The plain encoder quantizes its latent to the nearest code vector, one frame at a time,
without looking at what the decoder will render. The encoder has the audio, though, and
the model holds the decoder, so it can check: :func:`search_codes` starts from the
nearest codes, then tries, frame by frame, the codes nearest a latent fitted to the
utterance and keeps whichever brings the decoding (speaker-normalised log-mel) nearer the
utterance's own, in L1 -- the codec's training loss. The codes stay codes of the same
codebook, so any decoder of the model's token space reads them; only the encoder side
(and its speed) changes. It is the classic analysis-by-synthesis loop of speech coders
(CELP's codebook search), here over a neural decoder.

Two stages, both deterministic (no random numbers):

1. *Fit.* ``fit_steps`` Adam steps move the encoder's latent, kept on the unit sphere
   where the codebook lives, to lower the decoder's L1 error; the ``candidates`` codes
   nearest the fitted latent are each frame's candidates.
2. *Sweeps.* Starting from the plain codes or the nearest codes of the fitted latent
   (whichever decodes nearer), each sweep visits every frame and keeps the candidate
   that lowers the error most, if any. A code changes the decoder's output only within
   ``decoder_context`` codes, so frames more than twice that apart are decided in one
   batched decoding, exactly as if one at a time.

Only improvements are kept, so the searched codes never decode further from the audio
(in this L1) than the plain ones. The search reads the whole utterance: it runs on audio
encoded in one pass (one codec chunk), and its codes are not those of the plain encoder.
With ``fit_steps`` and ``sweeps`` 0 the codes are the plain encoder's. The search runs in
float32 on copies of the encoder and decoder (the model's own modules are left as they
are). Unlike plain encoding, whose codes are the same on every x86-64 CPU, a near-tie
between two candidates can resolve differently under other float kernels: measured on
14 unseen-speaker dev clips, 3 of 661 searched codes differed between AVX-512 and generic
kernels (docs/default-model.md, "Code search").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from plutok.errors import ModelError

__all__ = ["CodeSearch", "check_searchable", "search_codes"]


@dataclass(frozen=True)
class CodeSearch:
    """Settings of :func:`search_codes`.

    Attributes:
        candidates: codes tried at each frame (the nearest to the fitted latent).
        sweeps: passes over all frames; each keeps only changes that lower the error.
        fit_steps: Adam steps fitting the latent before the candidates are drawn (0: the
            candidates are the codes nearest the encoder's own latent).
        learning_rate: the fit's Adam step size (the latent has unit length).
    """

    candidates: int = 8
    sweeps: int = 2
    fit_steps: int = 25
    learning_rate: float = 0.01

    def __post_init__(self) -> None:
        for name, low in (("candidates", 1), ("sweeps", 0), ("fit_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ModelError(f"code search: {name} must be an integer >= {low}, got {value!r}")
        if not self.learning_rate > 0:
            raise ModelError(f"code search: learning_rate must be positive, got {self.learning_rate!r}")

    @classmethod
    def parse(cls, text: str) -> CodeSearch:
        """Settings from ``"CANDIDATES[,SWEEPS[,FIT_STEPS]]"`` (the CLI's ``--search``); ``""``: the defaults."""
        if not text.strip():
            return cls()
        try:
            values = [int(part) for part in text.split(",")]
        except ValueError:
            raise ModelError(
                f"code search: expected CANDIDATES[,SWEEPS[,FIT_STEPS]] (integers), got {text!r}"
            ) from None
        if len(values) > 3:
            raise ModelError(
                f"code search: at most three numbers (candidates, sweeps, fit steps), got {text!r}"
            )
        return cls(*values)


def check_searchable(codec: object) -> None:
    """:class:`ModelError` unless ``codec`` is a codec the search can drive: a latent, a
    codebook of vectors (``vq``) and a decoder of synthesis features."""
    quantizer = getattr(codec, "quantizer", None)
    needs = ("encoder", "decoder", "synthesis_frames_per_code", "decoder_context")
    if not all(hasattr(codec, name) for name in needs) or not hasattr(quantizer, "vectors"):
        raise ModelError(
            "code search needs a v2 codec with a codebook quantizer (vq) and a log-mel decoder; "
            "this model has none"
        )


def search_codes(
    codec: object, analysis: np.ndarray, target: np.ndarray, speaker: np.ndarray | None, search: CodeSearch
) -> np.ndarray:
    """Codes int64 ``(T_codes,)`` of one utterance, chosen by analysis by synthesis (module docstring).

    Args:
        codec: a v2 codec (:func:`check_searchable`).
        analysis: the encoder's input ``(C_in, T_in)``, normalised as for plain encoding.
        target: what the decoder should write ``(C_out, frames)`` -- the utterance's log-mel
            normalised by its speaker vector, at ``synthesis_frames_per_code`` frames per code.
        speaker: the speaker vector the decoding will be conditioned on ``(speaker_dim,)``
            (as a .plt file stores it: float16 values), or None for an unconditioned decoder.
        search: the settings.
    """
    check_searchable(codec)
    device = next(codec.parameters()).device
    # Copies: the model's own modules (shared, perhaps half precision on a GPU) are untouched.
    encoder = copy.deepcopy(codec.encoder).to(torch.float32).eval().requires_grad_(False)
    decoder = copy.deepcopy(codec.decoder).to(torch.float32).eval().requires_grad_(False)
    quantizer = codec.quantizer
    with torch.no_grad():
        vectors = quantizer.vectors().detach().to(torch.float32)
        features = torch.as_tensor(np.ascontiguousarray(analysis), dtype=torch.float32, device=device)[None]
        latent = encoder(features)[0]
    if _normalized(codec):
        latent = F.normalize(latent, dim=0)
    count = latent.shape[-1]
    per_code = codec.synthesis_frames_per_code
    wanted = torch.as_tensor(np.ascontiguousarray(target), dtype=torch.float32, device=device)[None]
    frames = min(count * per_code, wanted.shape[-1])
    wanted = wanted[..., :frames]
    condition = None
    if speaker is not None and codec.speaker_conditioned:
        condition = torch.as_tensor(np.asarray(speaker), dtype=torch.float32, device=device)[None]

    def frame_errors(batch: torch.Tensor) -> torch.Tensor:
        """L1 error per output frame ``(B, count * per_code)`` of latent vectors ``(B, D, count)``."""
        cond = None if condition is None else condition.expand(batch.shape[0], -1)
        decoded = decoder(batch, cond)[..., :frames]
        return F.pad((decoded - wanted).abs().mean(dim=1), (0, count * per_code - frames))

    fitted = latent
    if search.fit_steps:
        with torch.inference_mode(False), torch.enable_grad():
            variable = latent[None].clone().requires_grad_(True)
            optimizer = torch.optim.Adam([variable], lr=search.learning_rate)
            for _ in range(search.fit_steps):
                loss = frame_errors(_on_sphere(codec, variable)).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        fitted = _on_sphere(codec, variable.detach())[0]
    with torch.no_grad():
        # The quantizer's own nearest-code search: with nothing fitted or swept, plain codes.
        starts = torch.stack([quantizer.nearest(latent.T), quantizer.nearest(fitted.T)])
        totals = frame_errors(vectors[starts].permute(0, 2, 1)).sum(dim=1)
        codes = starts[int(totals.argmin())].clone()
        tried = min(search.candidates, vectors.shape[0])
        choices = torch.cdist(fitted.T, vectors).topk(tried, largest=False).indices  # (count, tried)
        context = codec.decoder_context
        stride = 2 * context + 1
        for _ in range(search.sweeps):
            for first in range(min(stride, count)):
                positions = torch.arange(first, count, stride, device=device)
                trials = codes.repeat(tried + 1, 1)  # row 0: the codes as they are
                trials[1:, positions] = choices[positions].T
                errors = (
                    frame_errors(vectors[trials].permute(0, 2, 1)).view(tried + 1, count, per_code).sum(-1)
                )
                # A position's share: the error of the output frames within its context.
                windowed = F.avg_pool1d(errors[:, None], stride, 1, padding=context)[:, 0]
                best = windowed[:, positions].argmin(dim=0)
                moved = best > 0
                codes[positions[moved]] = choices[positions[moved], best[moved] - 1]
    return codes.cpu().numpy().astype(np.int64)


def _normalized(codec: object) -> bool:
    return bool(codec.quantizer.config().get("normalize"))


def _on_sphere(codec: object, latent: torch.Tensor) -> torch.Tensor:
    """``(B, D, T)`` latents as the codebook holds them: unit length where the quantizer normalises."""
    return F.normalize(latent, dim=1) if _normalized(codec) else latent
