"""The models bundled with the package, by name (no heavy imports: ``--help`` lists them)."""

from __future__ import annotations

__all__ = ["BUNDLED_MODELS", "DERIVED_MODELS", "bundled_model_names"]

#: Models bundled with the package, by the name ``from_pretrained`` / ``--model`` accept.
BUNDLED_MODELS = {
    "default": "default",
    "v2.4": "v2.4",
    "v2.3": "v2.3",
    "v2.2": "v2.2",
    "v2.1": "v2.1",
    "v2.0": "v2.0",
    "v1": "v1",
}
#: Bundled models that are another bundled model with one part replaced, so its weights
#: are not shipped twice: name -> (base model, part kind, folder under assets/ holding
#: that part's config.json and weights). ``fast``: the default with the iSTFT vocoder;
#: ``v2.4-fast`` / ``v2.3-fast`` / ``v2.2-fast`` / ``v2.1-fast``: ``fast`` as it was on
#: v2.4 (0.5.x) / v2.3 (0.4.x) / v2.2 (0.3.x) / v2.1 (0.2.x), so their ``.plt`` files keep
#: decoding.
DERIVED_MODELS = {
    "fast": ("default", "vocoder", "vocoders/istft-16k"),
    "v2.4-fast": ("v2.4", "vocoder", "vocoders/istft-16k"),
    "v2.3-fast": ("v2.3", "vocoder", "vocoders/istft-16k"),
    "v2.2-fast": ("v2.2", "vocoder", "vocoders/istft-16k"),
    "v2.1-fast": ("v2.1", "vocoder", "vocoders/istft-16k"),
}


def bundled_model_names() -> list[str]:
    """Every name :func:`plutok.hub.load_model_parts` accepts besides a folder."""
    return [*BUNDLED_MODELS, *DERIVED_MODELS]
