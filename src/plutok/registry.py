"""Name -> class for every part of a model (docs/architecture.md, "The registry").

A model's ``config.json`` names each part by its registered name; :func:`build`
turns a config section back into the part. Built-in parts are listed in
``_BUILTIN`` as ``"module:Class"`` so that nothing heavy is imported until a part
is used. A codec is assembled from parts of the kinds ``encoder``, ``quantizer`` and
``decoder``, each built here from its section of the codec's config. A new part is a new file plus one line here, or, from outside the
package, a call to :func:`register` before the model is loaded::

    @register("vocoder", "my-vocoder")
    class MyVocoder(Vocoder): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from plutok.errors import ModelError

__all__ = ["KINDS", "build", "get", "names", "option_settings", "register", "settings_class"]

#: ``backbone``: the v1 analysis/synthesis pairs of format-v1 models (``plutok.legacy.backbones``),
#: each split into a frontend, speaker encoder and vocoder when such a model loads.
KINDS = ("frontend", "speaker", "codec", "encoder", "quantizer", "decoder", "postfilter", "vocoder", "backbone")

_BUILTIN: dict[str, dict[str, str]] = {
    "frontend": {
        "log-mel": "plutok.frontends.mel:LogMelFrontend",
        "whisper-encoder": "plutok.frontends.whisper:WhisperEncoderFrontend",
        "stack": "plutok.frontends.stack:StackedFrontend",
    },
    "speaker": {
        "mel-statistics": "plutok.speaker.mel_statistics:MelStatisticsSpeaker",
        "learned-mel": "plutok.speaker.learned:LearnedMelSpeaker",
    },
    "codec": {
        "vqvae": "plutok.legacy.codec:VQVAECodec",
        "content": "plutok.codec.content:ContentCodec",
    },
    "encoder": {
        "convnext": "plutok.codec.encoders.convnext:ConvNeXtEncoder",
    },
    "decoder": {
        "convnext-film": "plutok.codec.decoders.convnext:ConvNeXtDecoder",
    },
    "quantizer": {
        "vq": "plutok.quantizers.vq:VectorQuantizer",
        "fsq": "plutok.quantizers.fsq:FiniteScalarQuantizer",
    },
    "postfilter": {
        "global-variance": "plutok.postfilters.global_variance:GlobalVariancePostfilter",
    },
    "vocoder": {
        "hifigan-16k": "plutok.vocoders.hifigan:PackagedHiFiGAN",
        "istft-16k": "plutok.vocoders.istft:ISTFTVocoder",
    },
    "backbone": {
        "mel": "plutok.legacy.backbones.mel:MelBackbone",
        "openvoice": "plutok.legacy.backbones.openvoice:OpenVoiceBackbone",
    },
}
_REGISTERED: dict[str, dict[str, type]] = {kind: {} for kind in KINDS}
#: The settings dataclasses of built-in codec parts, importable without torch: ``plutok
#: train-codec`` makes its ``--encoder-*``/``--decoder-*`` options from them at start-up.
#: A part registered from outside the package gives its own (``settings_class``).
_BUILTIN_SETTINGS: dict[str, dict[str, str]] = {
    "encoder": {"convnext": "plutok.settings:ConvNeXtEncoderSettings"},
    "decoder": {"convnext-film": "plutok.settings:ConvNeXtDecoderSettings"},
}

T = TypeVar("T", bound=type)


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` the part of ``kind`` called ``name`` (sets ``cls.name``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown part kind {kind!r}; kinds: {', '.join(KINDS)}")

    def decorate(cls: T) -> T:
        cls.name = name  # type: ignore[attr-defined]
        _REGISTERED[kind][name] = cls
        return cls

    return decorate


def names(kind: str) -> list[str]:
    """Every registered name of ``kind``, built-in ones first."""
    return [*_BUILTIN.get(kind, {}), *(n for n in _REGISTERED[kind] if n not in _BUILTIN.get(kind, {}))]


def get(kind: str, name: str) -> type:
    """The class registered as ``name`` for ``kind``; :class:`ModelError` when unknown."""
    if name in _REGISTERED[kind]:
        return _REGISTERED[kind][name]
    target = _BUILTIN.get(kind, {}).get(name)
    if target is None:
        raise ModelError(f"unknown {kind} {name!r}; known: {', '.join(names(kind))}")
    module, attribute = target.split(":")
    cls = getattr(importlib.import_module(module), attribute)
    _REGISTERED[kind].setdefault(name, cls)
    return cls


# Most parameters a codec or vocoder may have (1 GB as float32; Plutok's have under 50 M).
# Each size in a config is bounded by its settings, but sizes multiply: 8,192 channels
# times kernels of 255 is 17 G parameters a layer.
MAX_PARAMETERS = 1 << 28


def _check_parameter_count(kind: str, cls: type, config: dict[str, Any]) -> None:
    """Build the part on the meta device (no memory) and refuse it over :data:`MAX_PARAMETERS`."""
    import torch

    with torch.device("meta"):
        part = cls.from_config(config, None)
    modules = [part] if isinstance(part, torch.nn.Module) else []
    modules += [value for value in vars(part).values() if isinstance(value, torch.nn.Module)]
    count = sum(parameter.numel() for module in modules for parameter in module.parameters())
    if count > MAX_PARAMETERS:
        raise ModelError(f"{kind} config asks for {count:,} parameters; at most {MAX_PARAMETERS:,}")


def build(kind: str, config: dict[str, Any], directory: Path | None = None) -> Any:
    """The part a config section describes (``config["name"]`` picks the class).

    Codecs and vocoders are first built on torch's meta device, so a config whose sizes
    multiply to more than :data:`MAX_PARAMETERS` is refused before anything is allocated.
    """
    if not isinstance(config, dict) or not isinstance(config.get("name"), str):
        raise ModelError(f"{kind} config must be a JSON object with a 'name', got {config!r}")
    cls = get(kind, config["name"])
    if kind in ("codec", "vocoder"):
        _check_parameter_count(kind, cls, config)
    return cls.from_config(config, directory)


def settings_class(kind: str, name: str) -> type | None:
    """The settings dataclass of a part (``None`` when it declares none), without importing
    a built-in part's module (torch) when its settings are listed in ``_BUILTIN_SETTINGS``."""
    target = _BUILTIN_SETTINGS.get(kind, {}).get(name)
    if target is not None and name not in _REGISTERED[kind]:
        module, attribute = target.split(":")
        return getattr(importlib.import_module(module), attribute)
    return getattr(get(kind, name), "settings_class", None)


def option_settings(kind: str) -> dict[str, type]:
    """``{name: settings class}`` of the parts of ``kind`` whose settings are known without
    importing a built-in part's module: what a command line can offer options for at start-up."""
    found = {}
    for name in names(kind):
        if name in _BUILTIN.get(kind, {}) and name not in _BUILTIN_SETTINGS.get(kind, {}):
            continue  # its settings would import its module (torch); a JSON section still works
        cls = settings_class(kind, name)
        if cls is not None:
            found[name] = cls
    return found
