"""Backbones: pretrained analysis/synthesis pairs behind one interface (:class:`Backbone`)."""

from __future__ import annotations

from typing import Any

from plutok import registry
from plutok.legacy.backbones.base import Backbone

__all__ = ["Backbone", "MelBackbone", "OpenVoiceBackbone", "backbone_from_config", "get_backbone_class"]


def get_backbone_class(name: str) -> type[Backbone]:
    """Backbone class registered under ``name`` (``"mel"`` or ``"openvoice"``, :mod:`plutok.registry`)."""
    return registry.get("backbone", name)


def backbone_from_config(config: dict[str, Any], directory=None) -> Backbone:
    """Build the backbone a model's ``config.json`` ``backbone`` section describes."""
    return registry.build("backbone", config, directory)


def __getattr__(name: str) -> Any:
    # Lazy so that importing plutok does not load the vocoder or OpenVoice code.
    if name == "MelBackbone":
        return get_backbone_class("mel")
    if name == "OpenVoiceBackbone":
        return get_backbone_class("openvoice")
    raise AttributeError(name)
