"""Layers of the OpenVoice tone-color converter (a VITS-style model), inference only.

The module tree and parameter names mirror the published converter checkpoint
(``enc_q``, ``flow``, ``dec``, ``ref_enc``), so a checkpoint state dict maps onto
:class:`ToneColorConverter` key for key. Convolutions that the original wraps in
weight normalisation are plain layers here, marked with :func:`weight_normed`;
:func:`checkpoint_layout` gives the ``weight_g`` / ``weight_v`` names and shapes
the checkpoint stores for them, and :func:`fold_weight_norm` turns a checkpoint
state dict into plain weights (``weight = g * v / ||v||``, as the original
computes on every forward pass).

Shapes: ``B`` batch, ``C`` channels, ``T`` spectrogram frames. Masks of the
original are omitted: one utterance at a time, every frame valid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConverterConfig",
    "ToneColorConverter",
    "checkpoint_layout",
    "fold_weight_norm",
    "linear_spectrogram",
    "weight_normed",
]

LRELU_SLOPE = 0.1
REF_ENC_FILTERS = (32, 32, 64, 64, 128, 128)
REF_ENC_GRU_HIDDEN = 128
POSTERIOR_LAYERS = 16  # WaveNet layers of the posterior encoder
POSTERIOR_KERNEL = 5
FLOW_COUPLINGS = 4
FLOW_LAYERS = 4  # WaveNet layers inside each coupling
FLOW_KERNEL = 5


@dataclass(frozen=True)
class ConverterConfig:
    """Hyper-parameters of a tone-color converter (the ``data`` and ``model`` parts of its config.json)."""

    sampling_rate: int = 22050
    filter_length: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    inter_channels: int = 192
    hidden_channels: int = 192
    gin_channels: int = 256
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    zero_g: bool = True

    @property
    def spec_channels(self) -> int:
        return self.filter_length // 2 + 1

    @classmethod
    def from_original(cls, config: dict[str, Any]) -> ConverterConfig:
        """From an OpenVoice ``config.json`` dict (``{"data": {...}, "model": {...}}``).

        Raises:
            KeyError, TypeError, ValueError: a required entry is missing or malformed.
        """
        data, model = config["data"], config["model"]
        if int(data.get("n_speakers", 0)) != 0:
            raise ValueError(
                f"n_speakers is {data['n_speakers']}: a multi-speaker TTS model, not a tone-color "
                "converter (which has n_speakers 0 and a reference encoder)"
            )
        fields = {k: data[k] for k in ("sampling_rate", "filter_length", "hop_length", "win_length")}
        fields.update({k: model[k] for k in _MODEL_FIELDS if k in model and k != "zero_g"})
        fields["zero_g"] = bool(model.get("zero_g", False))
        for k in _MODEL_FIELDS:
            if k not in fields:
                raise KeyError(f"model.{k}")
        return cls.from_dict(fields)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ConverterConfig:
        """From :meth:`to_dict` output; validates sizes."""
        cfg = cls(
            sampling_rate=int(fields["sampling_rate"]),
            filter_length=int(fields["filter_length"]),
            hop_length=int(fields["hop_length"]),
            win_length=int(fields["win_length"]),
            inter_channels=int(fields["inter_channels"]),
            hidden_channels=int(fields["hidden_channels"]),
            gin_channels=int(fields["gin_channels"]),
            resblock=str(fields["resblock"]),
            resblock_kernel_sizes=tuple(int(k) for k in fields["resblock_kernel_sizes"]),
            resblock_dilation_sizes=tuple(
                tuple(int(d) for d in ds) for ds in fields["resblock_dilation_sizes"]
            ),
            upsample_rates=tuple(int(u) for u in fields["upsample_rates"]),
            upsample_initial_channel=int(fields["upsample_initial_channel"]),
            upsample_kernel_sizes=tuple(int(k) for k in fields["upsample_kernel_sizes"]),
            zero_g=bool(fields["zero_g"]),
        )
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (lists, not tuples)."""
        d = asdict(self)
        return {
            k: ([list(x) if isinstance(x, tuple) else x for x in v] if isinstance(v, tuple) else v)
            for k, v in d.items()
        }

    def validate(self) -> None:
        """Raise ValueError for sizes the architecture cannot be built with, or absurdly large ones."""
        from plutok.settings import (
            MAX_BLOCKS,
            MAX_FFT_SIZE,
            MAX_KERNEL_SIZE,
            MAX_SAMPLE_RATE,
            MAX_WIDTH,
            MIN_SAMPLE_RATE,
        )

        bounds = {
            "sampling_rate": (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE),
            **dict.fromkeys(("filter_length", "hop_length", "win_length"), (1, MAX_FFT_SIZE)),
            **dict.fromkeys(
                ("inter_channels", "hidden_channels", "gin_channels", "upsample_initial_channel"),
                (1, MAX_WIDTH),
            ),
        }
        for name, (low, high) in bounds.items():
            if not low <= getattr(self, name) <= high:
                raise ValueError(f"{name} must be in {low}..{high}, got {getattr(self, name)}")
        lists = (self.resblock_kernel_sizes, self.upsample_rates, self.upsample_kernel_sizes)
        if any(len(sizes) > MAX_BLOCKS for sizes in (*lists, *self.resblock_dilation_sizes)):
            raise ValueError(f"at most {MAX_BLOCKS} resblocks, upsampling stages and dilations")
        sizes = [*self.resblock_kernel_sizes, *self.upsample_kernel_sizes, *self.upsample_rates]
        sizes += [d for ds in self.resblock_dilation_sizes for d in ds]
        if any(not 1 <= size <= MAX_KERNEL_SIZE for size in sizes):
            raise ValueError(f"kernel sizes, rates and dilations must be in 1..{MAX_KERNEL_SIZE}")
        if self.resblock not in ("1", "2"):
            raise ValueError(f"resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if any(
            (k - u) % 2 or k < u for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes, strict=True)
        ):
            raise ValueError(
                "each upsample kernel size minus its rate must be even and >= 0, "
                "or the waveform length is not frames * hop_length"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        prod = 1
        for u in self.upsample_rates:
            prod *= u
        if prod != self.hop_length:
            raise ValueError(f"upsample rates multiply to {prod}, not hop_length {self.hop_length}")
        if self.inter_channels % 2:
            raise ValueError(f"inter_channels must be even, got {self.inter_channels}")
        if min(self.gin_channels, self.inter_channels, self.hidden_channels, self.hop_length) <= 0:
            raise ValueError("channel counts and hop_length must be positive")
        if self.win_length > self.filter_length or (self.filter_length - self.hop_length) % 2:
            raise ValueError("need win_length <= filter_length and an even filter_length - hop_length")
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError("upsample_initial_channel must be divisible by 2**len(upsample_rates)")


_MODEL_FIELDS = (
    "inter_channels",
    "hidden_channels",
    "gin_channels",
    "resblock",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "upsample_rates",
    "upsample_initial_channel",
    "upsample_kernel_sizes",
    "zero_g",
)


# --------------------------------------------------------------------------- weight norm bookkeeping


def weight_normed(module: nn.Module) -> nn.Module:
    """Mark a conv layer as stored with weight normalisation (``weight_g``/``weight_v``) in checkpoints."""
    module._plutok_weight_norm = True  # type: ignore[attr-defined]
    return module


def _weight_normed_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if getattr(m, "_plutok_weight_norm", False)]


def checkpoint_layout(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the original (unfolded) checkpoint state dict for ``model``."""
    layout = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for name in _weight_normed_names(model):
        shape = layout.pop(f"{name}.weight")
        layout[f"{name}.weight_g"] = (shape[0],) + (1,) * (len(shape) - 1)
        layout[f"{name}.weight_v"] = shape
    return layout


def fold_weight_norm(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain state dict for ``model`` from a checkpoint state dict that matches :func:`checkpoint_layout`."""
    folded = dict(state)
    for name in _weight_normed_names(model):
        g = folded.pop(f"{name}.weight_g").float()
        v = folded.pop(f"{name}.weight_v").float()
        folded[f"{name}.weight"] = torch._weight_norm(v, g, 0)
    return {k: t.float() if t.is_floating_point() else t for k, t in folded.items()}


# --------------------------------------------------------------------------- spectrogram


def linear_spectrogram(wav: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """Linear magnitude spectrogram as OpenVoice computes it.

    Args:
        wav: ``(B, samples)`` float32.
    Returns:
        ``(B, n_fft // 2 + 1, samples // hop)``: reflect-padded by ``(n_fft - hop) / 2`` each side,
        ``center=False``, periodic Hann window, ``sqrt(re^2 + im^2 + 1e-6)``.
    """
    pad = (n_fft - hop) // 2
    y = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    window = torch.hann_window(win, dtype=wav.dtype, device=wav.device)
    spec = torch.stft(
        y,
        n_fft,
        hop_length=hop,
        win_length=win,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    spec = torch.view_as_real(spec)
    return torch.sqrt(spec.pow(2).sum(-1) + 1e-6)


# --------------------------------------------------------------------------- building blocks


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class WN(nn.Module):
    """Gated, dilated WaveNet stack with global conditioning ``g``: ``(B, H, T) -> (B, H, T)``."""

    def __init__(self, hidden: int, kernel: int, dilation_rate: int, n_layers: int, gin: int):
        super().__init__()
        self.hidden = hidden
        self.n_layers = n_layers
        self.cond_layer = weight_normed(nn.Conv1d(gin, 2 * hidden * n_layers, 1))
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            self.in_layers.append(
                weight_normed(
                    nn.Conv1d(
                        hidden, 2 * hidden, kernel, dilation=dilation, padding=_padding(kernel, dilation)
                    )
                )
            )
            out = 2 * hidden if i < n_layers - 1 else hidden
            self.res_skip_layers.append(weight_normed(nn.Conv1d(hidden, out, 1)))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x: ``(B, H, T)``; g: ``(B, gin, 1)``."""
        h = self.hidden
        g = self.cond_layer(g)
        output = torch.zeros_like(x)
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers, strict=True)):
            a = in_layer(x) + g[:, 2 * h * i : 2 * h * (i + 1)]
            acts = torch.tanh(a[:, :h]) * torch.sigmoid(a[:, h:])
            rs = res_skip(acts)
            if i < self.n_layers - 1:
                x = x + rs[:, :h]
                output = output + rs[:, h:]
            else:
                output = output + rs
        return output


class PosteriorEncoder(nn.Module):
    """Spectrogram ``(B, spec, T)`` -> mean and log-std ``(B, inter, T)`` each."""

    def __init__(self, spec_channels: int, inter: int, hidden: int, gin: int):
        super().__init__()
        self.inter = inter
        self.pre = nn.Conv1d(spec_channels, hidden, 1)
        self.enc = WN(hidden, POSTERIOR_KERNEL, 1, POSTERIOR_LAYERS, gin)
        self.proj = nn.Conv1d(hidden, 2 * inter, 1)

    def forward(self, spec: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.proj(self.enc(self.pre(spec), g))
        return stats[:, : self.inter], stats[:, self.inter :]


class Flip(nn.Module):
    """Reverse the channel order (its own inverse)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling: the second channel half is shifted by a WaveNet of the first."""

    def __init__(self, channels: int, hidden: int, gin: int):
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, FLOW_KERNEL, 1, FLOW_LAYERS, gin)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        x0, x1 = x[:, : self.half], x[:, self.half :]
        m = self.post(self.enc(self.pre(x0), g))
        x1 = x1 - m if reverse else x1 + m
        return torch.cat([x0, x1], 1)


class ResidualCouplingBlock(nn.Module):
    """Normalising flow ``(B, inter, T) <-> (B, inter, T)`` conditioned on a speaker."""

    def __init__(self, channels: int, hidden: int, gin: int):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(FLOW_COUPLINGS):
            self.flows.append(ResidualCouplingLayer(channels, hidden, gin))
            self.flows.append(Flip())

    def forward(self, x: torch.Tensor, g: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        for flow in reversed(self.flows) if reverse else self.flows:
            x = flow(x) if isinstance(flow, Flip) else flow(x, g, reverse=reverse)
        return x


class ResBlock1(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_normed(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_normed(nn.Conv1d(channels, channels, kernel, padding=_padding(kernel))) for _ in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = c1(F.leaky_relu(x, LRELU_SLOPE))
            xt = c2(F.leaky_relu(xt, LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs = nn.ModuleList(
            weight_normed(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_padding(kernel, d)))
            for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """HiFi-GAN generator: ``(B, inter, T)`` + speaker ``(B, gin, 1)`` -> ``(B, 1, T * prod(upsample_rates))``."""

    def __init__(self, cfg: ConverterConfig):
        super().__init__()
        ch = cfg.upsample_initial_channel
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(cfg.inter_channels, ch, 7, 1, padding=3)
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes, strict=True)):
            self.ups.append(
                weight_normed(nn.ConvTranspose1d(ch // 2**i, ch // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            )
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes, strict=True):
                self.resblocks.append(block(ch // 2 ** (i + 1), rk, rd))
        self.conv_post = nn.Conv1d(ch // 2 ** len(cfg.upsample_rates), 1, 7, 1, padding=3, bias=False)
        self.cond = nn.Conv1d(cfg.gin_channels, ch, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x) + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for b in blocks[1:]:
                xs = xs + b(x)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as in the original
        return torch.tanh(x)


class ReferenceEncoder(nn.Module):
    """Spectrogram ``(B, T, spec)`` -> speaker embedding ``(B, gin)``: 2-D convs, a GRU, a projection."""

    def __init__(self, spec_channels: int, gin: int):
        super().__init__()
        filters = (1,) + REF_ENC_FILTERS
        self.convs = nn.ModuleList(
            weight_normed(nn.Conv2d(filters[i], filters[i + 1], 3, stride=2, padding=1))
            for i in range(len(REF_ENC_FILTERS))
        )
        freq = spec_channels
        for _ in REF_ENC_FILTERS:
            freq = (freq - 3 + 2) // 2 + 1
        self.gru = nn.GRU(REF_ENC_FILTERS[-1] * freq, REF_ENC_GRU_HIDDEN, batch_first=True)
        self.proj = nn.Linear(REF_ENC_GRU_HIDDEN, gin)
        self.layernorm = nn.LayerNorm(spec_channels)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        out = self.layernorm(spec.unsqueeze(1))  # (B, 1, T, spec)
        for conv in self.convs:
            out = F.relu(conv(out))
        out = out.transpose(1, 2)  # (B, T', C, F')
        out = out.reshape(out.shape[0], out.shape[1], -1)
        _, h = self.gru(out)  # h: (1, B, hidden)
        return self.proj(h[0])


class ToneColorConverter(nn.Module):
    """The converter parts of OpenVoice's ``SynthesizerTrn`` (no text encoder), keyed like the checkpoint."""

    def __init__(self, cfg: ConverterConfig):
        super().__init__()
        self.cfg = cfg
        self.dec = Generator(cfg)
        self.enc_q = PosteriorEncoder(
            cfg.spec_channels, cfg.inter_channels, cfg.hidden_channels, cfg.gin_channels
        )
        self.flow = ResidualCouplingBlock(cfg.inter_channels, cfg.hidden_channels, cfg.gin_channels)
        self.ref_enc = ReferenceEncoder(cfg.spec_channels, cfg.gin_channels)

    def _maybe_zero(self, g: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(g) if self.cfg.zero_g else g

    def encode(
        self, spec: torch.Tensor, g: torch.Tensor, tau: float = 0.0, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """spec ``(B, spec, T)``, g ``(B, gin, 1)`` -> ``z_p`` ``(B, inter, T)``."""
        m, logs = self.enc_q(spec, self._maybe_zero(g))
        z = m
        if tau > 0:
            noise = torch.randn(m.shape, generator=generator, dtype=m.dtype, device=m.device)
            z = m + noise * tau * torch.exp(logs)
        return self.flow(z, g)

    def decode(self, z_p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``z_p`` ``(B, inter, T)``, g ``(B, gin, 1)`` -> waveform ``(B, T * hop)``."""
        z = self.flow(z_p, g, reverse=True)
        return self.dec(z, self._maybe_zero(g))[:, 0]
