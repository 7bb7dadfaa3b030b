"""v1 backbones are looked up in the one part registry (no registry of their own)."""

from __future__ import annotations

import pytest

from plutok import registry
from plutok.errors import ModelError
from plutok.legacy.backbones import backbone_from_config, get_backbone_class


def test_builtin_backbones_come_from_the_registry() -> None:
    assert registry.names("backbone")[:2] == ["mel", "openvoice"]
    assert get_backbone_class("mel") is registry.get("backbone", "mel")


def test_a_registered_backbone_is_built_from_its_config_section() -> None:
    @registry.register("backbone", "toy-backbone")
    class ToyBackbone:
        def __init__(self, gain: float) -> None:
            self.gain = gain

        @classmethod
        def from_config(cls, config, directory=None):
            return cls(config["gain"])

    built = backbone_from_config({"name": "toy-backbone", "gain": 2.0})
    assert isinstance(built, ToyBackbone) and built.gain == 2.0


def test_an_unknown_backbone_is_a_model_error_naming_the_known_ones() -> None:
    with pytest.raises(ModelError, match="unknown backbone 'nope'; known: mel, openvoice"):
        get_backbone_class("nope")
