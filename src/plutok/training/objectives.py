"""Every training objective: what the trainer minimises, apart from the models' forward passes.

A model computes (``encode_tensor``, ``decode_tensor``, a vocoder's ``spectrum``); an
objective here scores what it computed against a batch:

* **the content codec** (:class:`ContentCodecObjective`): L1 on the speaker-normalised
  log-mel, plus L1 on its time and frequency differences (``gradient_weight``: an L1 on
  values alone rewards blurred spectra, which the vocoder turns into buzz), plus
  ``content_weight * (1 - cos)`` between the content head's prediction and the
  standardised analysis features (the quantised latent must keep what the ASR encoder
  saw), plus the quantizer's own loss (codebook + commitment for ``vq``; 0 for ``fsq``).
  With ``envelope_weight`` > 0 each mel band's trajectory over 300 ms segments of speech
  must *correlate* with the target's (:func:`envelope_loss`): an L1 is satisfied by a
  trajectory of the right level but the wrong shape, while intelligibility (STOI, ASR)
  lives in the shape. ``band_envelope_weight`` asks the same in STOI's own terms
  (:func:`band_envelope_loss`). With ``ctc_weight`` > 0 the phoneme head reads the
  utterance's espeak-ng phonemes from the code vectors under a CTC loss
  (:func:`ctc_phoneme_loss`): the codes must carry which sounds were said.
* **the v1 codec** (:class:`VQVAECodecObjective`): L1 + L2 reconstruction, codebook and
  0.25 x commitment loss.
* **the iSTFT vocoder** (:class:`ISTFTDistillationObjective`): complex-STFT and
  log-magnitude L1 against the teacher's waveform plus :func:`multi_resolution_stft_loss`.

An objective is called as ``objective(model, batch) -> (loss, metrics)``; one that
quantizes also returns, from :meth:`Objective.quantizer_parts`, what the trainer's
codebook upkeep needs from the last call.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from plutok.frontends.mel import MelSettings, slaney_mel_points

__all__ = [
    "ContentCodecObjective",
    "ISTFTDistillationObjective",
    "ModelLoss",
    "Objective",
    "ObjectiveWrapper",
    "VQVAECodecObjective",
    "band_envelope_loss",
    "content_loss",
    "ctc_phoneme_loss",
    "envelope_loss",
    "log_mel_loss",
    "masked_mean",
    "multi_resolution_stft_loss",
    "tensors_under",
    "reconstruction_loss",
    "third_octave_bands",
]

#: Envelope segments: 30 log-mel frames (300 ms at 100 frames/s; STOI uses 384 ms), hop 15.
ENVELOPE_FRAMES = 30
#: Band-envelope segments: 38 frames (380 ms; STOI: 30 frames of 12.8 ms = 384 ms), hop 4.
BAND_ENVELOPE_FRAMES = 38
BAND_ENVELOPE_HOP = 4
#: STOI's one-third-octave bands: 15, the lowest centred at 150 Hz.
STOI_BANDS = 15
STOI_LOWEST_CENTRE = 150.0
#: A target frame is speech when its mean over the bands of the speaker-normalised
#: log-mel is above this. Normalised speech sits near 0 and silence near -3: a noise
#: floor's trajectory cannot be predicted from codes, so it is left out.
SPEECH_LEVEL = -2.0


class Objective:
    """``objective(model, batch) -> (loss, metrics)``: a scalar to minimise and named scalars to log.

    An objective that trains something of its own beside the model (the adversarial
    term's discriminator, :mod:`plutok.training.adversarial`) overrides the hooks below:
    the trainer moves it to the device, gives every rank rank 0's :meth:`trained_modules`,
    calls :meth:`after_step` after each optimiser step of the model, and keeps
    :meth:`state_tensors` in its checkpoints. What the objective trains *with* the model
    (a learned speaker encoder, :mod:`plutok.training.speaker`) is named by
    :meth:`joint_modules`: their parameters join the model's optimiser.
    """

    def __call__(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def to(self, device: torch.device) -> Objective:
        """Move what the objective trains to ``device``."""
        return self

    def trained_modules(self) -> list[nn.Module]:
        """What the objective trains (every rank starts from rank 0's weights of them)."""
        return []

    def joint_modules(self) -> list[nn.Module]:
        """Modules the model's optimiser trains with the model (also in :meth:`trained_modules`)."""
        return []

    def after_step(self, model: Any) -> dict[str, float]:
        """Train what the objective owns, after the model's step; metrics to log."""
        return {}

    def config(self) -> dict[str, Any]:
        """Settings a checkpoint records (a resumed run must have the same)."""
        return {}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors a resumed run needs (written into the trainer's checkpoints)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from :meth:`state_tensors`."""

    def quantizer_parts(
        self, model: Any
    ) -> tuple[Any | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """``(quantizer, latent, codes, code_mask)`` of the last call, for the trainer's upkeep."""
        return None, None, None, None


class ObjectiveWrapper(Objective):
    """An objective around ``base`` (a term added to the codec's loss, a speaker network trained
    with it): every hook is ``base``'s, and a subclass extends the ones it needs. ``base``'s
    state tensors are kept under ``base/``."""

    def __init__(self, base: Objective) -> None:
        self.base = base

    def to(self, device: torch.device) -> ObjectiveWrapper:
        self.base.to(device)
        return self

    def trained_modules(self) -> list[nn.Module]:
        return self.base.trained_modules()

    def joint_modules(self) -> list[nn.Module]:
        return self.base.joint_modules()

    def after_step(self, model: Any) -> dict[str, float]:
        return self.base.after_step(model)

    def config(self) -> dict[str, Any]:
        return self.base.config()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"base/{key}": value for key, value in self.base.state_tensors().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.base.load_state_tensors(tensors_under(tensors, "base/"))

    def quantizer_parts(self, model: Any):
        return self.base.quantizer_parts(model)


def tensors_under(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose names start with ``prefix``, named without it."""
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


class ModelLoss(Objective):
    """The model's own ``loss(batch)`` and ``quantizer_parts()`` (training wrappers such as the v1 VQ-VAE's)."""

    def __call__(self, model: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model.loss(batch)

    def quantizer_parts(self, model: Any):
        upkeep = getattr(model, "quantizer_parts", None)
        return upkeep() if upkeep is not None else (None, None, None, None)


# -- terms --------------------------------------------------------------------------------


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``(B, C, T)`` values over the frames where ``mask`` ``(B, T)`` is 1."""
    weights = mask[:, None, :].to(values.dtype)
    return (values * weights).sum() / (weights.sum() * values.shape[1]).clamp(min=1)


def log_mel_loss(
    prediction: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(l1, gradient)`` of log-mels ``(B, C, T)`` over the real frames ``frame_mask`` ``(B, T)``.

    ``l1``: mean absolute error; ``gradient``: the same on the differences along time
    (pairs of real frames) plus along frequency.
    """
    l1 = masked_mean((prediction - target).abs(), frame_mask)
    time_diff = (prediction.diff(dim=-1) - target.diff(dim=-1)).abs()
    freq_diff = (prediction.diff(dim=1) - target.diff(dim=1)).abs()
    gradient = masked_mean(time_diff, frame_mask[:, 1:] * frame_mask[:, :-1]) + masked_mean(
        freq_diff, frame_mask
    )
    return l1, gradient


def content_loss(predicted: torch.Tensor, target: torch.Tensor, codes_mask: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` over real codes between ``(B, C, T)`` predicted and target features."""
    cosine = F.cosine_similarity(predicted, target, dim=1)
    return ((1 - cosine) * codes_mask).sum() / codes_mask.sum().clamp(min=1)


def ctc_phoneme_loss(
    log_probs: torch.Tensor, frames: torch.Tensor, labels: torch.Tensor, lengths: torch.Tensor
) -> torch.Tensor:
    """Mean CTC loss per phoneme: ``log_probs`` ``(B, classes, T)`` (class 0 blank), ``frames`` ``(B,)``
    real frames per row, ``labels`` ``(B, L)`` and ``lengths`` ``(B,)`` (every row has labels)."""
    loss = F.ctc_loss(
        log_probs.float().permute(2, 0, 1),
        labels,
        frames,
        lengths,
        blank=0,
        reduction="sum",
        zero_infinity=True,  # a transcript too long for its audio must not give inf
    )
    return loss / lengths.sum()


def envelope_loss(prediction: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - Pearson correlation`` of band trajectories over speech segments.

    ``prediction``, ``target``: speaker-normalised log-mel ``(B, C, T)`` at 100 frames/s;
    ``frame_mask`` ``(B, T)``: 1 on real frames. Segments of :data:`ENVELOPE_FRAMES`
    frames (hop half that) count when they lie inside the mask and at least half their
    frames are speech (:data:`SPEECH_LEVEL`); a band that is flat in the target (std below
    0.05) has no trajectory to follow and is skipped. 0 when no segment counts.
    """
    frames = prediction.shape[-1]
    if frames < ENVELOPE_FRAMES:
        return prediction.new_zeros(())
    hop = ENVELOPE_FRAMES // 2
    predicted = prediction.float().unfold(-1, ENVELOPE_FRAMES, hop)  # (B, C, S, frames)
    wanted = target.float().unfold(-1, ENVELOPE_FRAMES, hop)
    inside = frame_mask.float().unfold(-1, ENVELOPE_FRAMES, hop).amin(dim=-1)  # (B, S)
    speech = (wanted.mean(dim=1) > SPEECH_LEVEL).float().mean(dim=-1) >= 0.5  # (B, S)
    varying = wanted.std(dim=-1) > 0.05  # (B, C, S)
    weight = (inside * speech)[:, None, :] * varying
    correlation = F.cosine_similarity(
        predicted - predicted.mean(dim=-1, keepdim=True), wanted - wanted.mean(dim=-1, keepdim=True), dim=-1
    )
    return ((1 - correlation) * weight).sum() / weight.sum().clamp(min=1)


def third_octave_bands(n_mels: int, settings: MelSettings | None = None) -> torch.Tensor:
    """``(bands, n_mels)``: STOI's one-third-octave bands (15, centres 150 Hz to 3.8 kHz) as
    weights on the log-mel bins.

    A bin belongs to the band its Slaney centre frequency falls in, weighted by its width
    in Hz: Slaney-normalised filters average the magnitude over their width, so
    ``width * mel**2`` is the bin's share of the band's power. Bands without a bin (a
    coarse mel) are left out.
    """
    mel = MelSettings(**{**asdict(settings or MelSettings()), "n_mels": n_mels})
    points = slaney_mel_points(mel.n_mels, mel.fmin, mel.fmax)
    centres, widths = points[1:-1], (points[2:] - points[:-2]) / 2
    rows = []
    for band in range(STOI_BANDS):
        low, high = (STOI_LOWEST_CENTRE * 2 ** ((2 * band + side) / 6) for side in (-1, 1))
        inside = (centres >= low) & (centres < high)
        if inside.any():
            rows.append(np.where(inside, widths, 0.0))
    return torch.tensor(np.stack(rows) if rows else np.zeros((0, n_mels)), dtype=torch.float32)


def band_envelope_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    frame_mask: torch.Tensor,
    scale: torch.Tensor,
    offset: torch.Tensor,
    bands: torch.Tensor,
) -> torch.Tensor:
    """Mean ``1 - Pearson correlation`` of one-third-octave band amplitudes over speech segments.

    STOI's view, on log-mels: ``prediction`` and ``target`` ``(B, C, T)`` speaker-normalised
    at 100 frames/s are mapped back (``x * scale + offset``, ``(B, C, 1)`` each) to the
    natural log of the mel magnitude, then to the linear amplitude of the bands ``bands``
    ``(bands, C)`` (:func:`third_octave_bands`). Correlations are taken over segments of
    :data:`BAND_ENVELOPE_FRAMES` frames (hop :data:`BAND_ENVELOPE_HOP`) that lie inside
    ``frame_mask`` ``(B, T)`` with at least half their frames within 40 dB of the crop's
    loudest frame (STOI drops quieter frames); linear amplitude weights the loud parts of
    each trajectory, as STOI does, where :func:`envelope_loss` weights every level alike.
    A band constant over a segment in the target is skipped; 0 when no segment counts.
    """
    frames = prediction.shape[-1]
    if frames < BAND_ENVELOPE_FRAMES or bands.shape[0] == 0:
        return prediction.new_zeros(())
    # exp() of log magnitudes spans ~20 orders of magnitude: float32 throughout, also
    # inside a bf16/fp16 autocast region on a GPU.
    with torch.autocast(prediction.device.type, enabled=False):
        bands = bands.to(prediction.device)

        def band_power(normalised: torch.Tensor) -> torch.Tensor:
            log_magnitude = normalised.float() * scale.float() + offset.float()
            return torch.einsum("kc,bct->bkt", bands, torch.exp(2 * log_magnitude.clamp(max=20)))

        predicted = (
            (band_power(prediction) + 1e-10).sqrt().unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP)
        )
        wanted_power = band_power(target)
        wanted = (wanted_power + 1e-10).sqrt().unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP)
        level = 10 * torch.log10(wanted_power.sum(dim=1) + 1e-10)  # (B, T) dB
        loudest = level.masked_fill(frame_mask <= 0, -1e9).amax(dim=-1, keepdim=True)
        audible = (level >= loudest - 40).float() * frame_mask
        inside = frame_mask.float().unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP).amin(dim=-1)  # (B, S)
        speech = audible.unfold(-1, BAND_ENVELOPE_FRAMES, BAND_ENVELOPE_HOP).mean(dim=-1) >= 0.5
        varying = wanted.std(dim=-1) > 1e-3 * wanted.mean(dim=-1)  # (B, K, S)
        weight = (inside * speech)[:, None, :] * varying
        correlation = F.cosine_similarity(
            predicted - predicted.mean(dim=-1, keepdim=True),
            wanted - wanted.mean(dim=-1, keepdim=True),
            dim=-1,
        )
        return ((1 - correlation) * weight).sum() / weight.sum().clamp(min=1)


def multi_resolution_stft_loss(
    predicted: torch.Tensor, target: torch.Tensor, sizes: tuple[int, ...] = (256, 512, 1024, 2048)
) -> torch.Tensor:
    """Mean over STFT sizes (hop = size / 4) of spectral convergence + log-magnitude L1, ``(B, N)`` waves."""
    total = predicted.new_zeros(())
    for size in sizes:
        window = torch.hann_window(size, device=predicted.device)
        spectra = [
            torch.stft(wave, size, size // 4, window=window, return_complex=True).abs()
            for wave in (predicted, target)
        ]
        convergence = torch.linalg.norm(spectra[1] - spectra[0]) / torch.linalg.norm(spectra[1]).clamp(
            min=1e-7
        )
        log_l1 = (torch.log(spectra[0] + 1e-5) - torch.log(spectra[1] + 1e-5)).abs().mean()
        total = total + convergence + log_l1
    return total / len(sizes)


# -- objectives ---------------------------------------------------------------------------


class ContentCodecObjective(Objective):
    """The content codec's loss (module docstring); weights from :class:`~plutok.settings.ContentObjectiveSettings`.

    ``update_codebook`` False (a decoder trained on frozen codes) stops the codebook upkeep.
    """

    def __init__(self, settings: Any, update_codebook: bool = True) -> None:
        self.settings = settings
        self.update_codebook = update_codebook
        self._bands: dict[int, torch.Tensor] = {}
        self._last: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        #: ``(decoded, target, frame_mask)`` of the last call: the decoded speaker-normalised
        #: log-mel ``(B, C, T)`` still in the graph, its target and the real frames ``(B, T)``.
        self.last_synthesis: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def _stoi_bands(self, output_dim: int) -> torch.Tensor:
        if output_dim not in self._bands:
            self._bands[output_dim] = third_octave_bands(output_dim)
        return self._bands[output_dim]

    def __call__(self, codec: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        s = self.settings
        latent = codec.latent(batch.analysis)
        codes_mask = batch.code_mask[:, : latent.shape[-1]]
        quantized = codec.quantizer(latent, codes_mask)
        self._last = (codec.quantizer, latent.detach(), quantized.codes, codes_mask)
        prediction = codec.synthesize_from_vectors(quantized.quantized, batch.speaker)
        frames = min(prediction.shape[-1], batch.target.shape[-1])
        prediction, target = prediction[..., :frames], batch.target[..., :frames]
        frame_mask = codes_mask.repeat_interleave(codec.synthesis_frames_per_code, dim=1)[:, :frames]
        self.last_synthesis = (prediction, target, frame_mask)
        mel_l1, gradient = log_mel_loss(prediction, target, frame_mask)
        content_target = codec.content_target(batch.analysis)[..., : latent.shape[-1]]
        content = content_loss(codec.predict_content(quantized.quantized), content_target, codes_mask)
        total = mel_l1 + s.gradient_weight * gradient + s.content_weight * content + quantized.loss
        metrics = {
            "mel_l1": mel_l1,
            "gradient": gradient,
            "content": content,
            "quantizer": quantized.loss,
            "perplexity": quantized.perplexity,
            "usage": quantized.usage,
        }
        if s.envelope_weight > 0:
            envelope = envelope_loss(prediction, target, frame_mask)
            total = total + s.envelope_weight * envelope
            metrics["envelope"] = envelope
        elif not codec.training:  # reported on dev either way, so runs with and without compare
            metrics["envelope"] = envelope_loss(prediction, target, frame_mask)
        if batch.target_scale is not None and (s.band_envelope_weight > 0 or not codec.training):
            # Reported on dev either way, as the envelope term is.
            bands = self._stoi_bands(prediction.shape[1])
            band = band_envelope_loss(
                prediction, target, frame_mask, batch.target_scale, batch.target_offset, bands
            )
            metrics["band_envelope"] = band
            if s.band_envelope_weight > 0:
                total = total + s.band_envelope_weight * band
        if s.ctc_weight > 0 and codec.has_phoneme_head and batch.phoneme_lengths is not None:
            rows = batch.phoneme_lengths > 0
            if bool(rows.any()):
                log_probs = codec.phoneme_log_probs(quantized.quantized[rows])
                ctc_frames = (codes_mask[rows].sum(dim=1) * codec.phoneme_frames_per_code).long()
                ctc = ctc_phoneme_loss(
                    log_probs, ctc_frames, batch.phonemes[rows], batch.phoneme_lengths[rows]
                )
                total = total + s.ctc_weight * ctc
                metrics["ctc"] = ctc
        return total, metrics

    def quantizer_parts(self, codec: Any):
        if self._last is None or not self.update_codebook:
            return None, None, None, None
        return self._last


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + L2 (mean squared) error between features of the same shape (the v1 VQ-VAE's)."""
    return F.l1_loss(reconstruction, target) + F.mse_loss(reconstruction, target)


class VQVAECodecObjective(Objective):
    """The v1 VQ-VAE (the ``vqvae`` codec, :class:`~plutok.legacy.codec.VQVAECodec`, and ``train-vq``).

    :func:`reconstruction_loss` + ``commitment_weight`` x commitment, plus the codebook
    loss unless the codebook learns without gradients (``codebook_gradient=False``: the
    EMA k-means codebook of ``train-vq --kmeans``).
    """

    def __init__(self, commitment_weight: float = 0.25, codebook_gradient: bool = True) -> None:
        self.commitment_weight = commitment_weight
        self.codebook_gradient = codebook_gradient

    def __call__(self, codec: Any, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.score(codec.model(batch.analysis), batch.target)

    def score(self, output: Any, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss and metrics of a :class:`~plutok.legacy.vqvae.VQVAEOutput` against features ``(B, C, T)``."""
        reconstruction = reconstruction_loss(output.reconstruction, target)
        total = reconstruction + self.commitment_weight * output.commitment_loss
        if self.codebook_gradient:
            total = total + output.codebook_loss
        return total, {
            "reconstruction": reconstruction,
            "perplexity": output.perplexity,
            "usage": output.usage,
        }


class ISTFTDistillationObjective(Objective):
    """Distillation of :class:`~plutok.vocoders.istft.ISTFTNet` from the teacher's waveform
    (:class:`~plutok.training.vocoder.VocoderBatch`).

    ``spectrum``: L1 between the predicted and the teacher's complex STFT (same frames;
    the batch's wave carries the ``(n_fft - hop) / 2`` samples of context each side that
    the crop's edge frames need); ``log_magnitude``: L1 of their log-magnitudes (quiet
    frames count too); ``multi_resolution``: spectral convergence + log-magnitude L1 of the
    synthesised waveform at four other STFT sizes (what the ear hears, not only this
    framing), away from the crop's edges.
    """

    def __call__(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from plutok.vocoders.istft import istft_same

        s = net.settings
        margin = (s.n_fft - s.hop_length) // 2
        predicted = net.spectrum(batch.log_mel)
        target = torch.stft(
            batch.wave, s.n_fft, s.hop_length, win_length=s.n_fft, window=net.window,
            center=False, return_complex=True,
        )  # fmt: skip
        frames = min(predicted.shape[-1], target.shape[-1])
        predicted, target = predicted[..., :frames], target[..., :frames]
        spectrum = (torch.view_as_real(predicted) - torch.view_as_real(target)).abs().mean()
        log_magnitude = (torch.log(predicted.abs() + 1e-5) - torch.log(target.abs() + 1e-5)).abs().mean()
        wave = istft_same(predicted, s.n_fft, s.hop_length, net.window)
        teacher = batch.wave[..., margin : margin + wave.shape[-1]]
        # The synthesised wave lacks the overlap of frames beyond the crop in its first and
        # last (n_fft - hop) / 2 samples: those are left out of the waveform loss.
        multi_resolution = multi_resolution_stft_loss(wave[..., margin:-margin], teacher[..., margin:-margin])
        total = spectrum + log_magnitude + multi_resolution
        return total, {
            "spectrum": spectrum,
            "log_magnitude": log_magnitude,
            "multi_resolution": multi_resolution,
        }
