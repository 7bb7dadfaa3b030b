"""Finding a model: bundled names win, a folder only by its path, never from the working directory by accident."""

from __future__ import annotations

import shutil

import pytest

from plutok import model_directory
from plutok.api import Plutok
from plutok.errors import ModelError


@pytest.fixture
def lookalikes(tiny_model_dir, tmp_path, monkeypatch):
    """A working directory holding model folders named like bundled models, and one that is not."""
    for name in ("v1", "fast", "v2.4", "mine"):
        shutil.copytree(tiny_model_dir, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_bundled_name_is_the_bundled_model_even_beside_a_folder_of_that_name(lookalikes, tiny_model):
    assert Plutok.from_pretrained("v1").fingerprint != tiny_model.fingerprint
    assert Plutok.from_pretrained("./v1").fingerprint == tiny_model.fingerprint


def test_a_derived_bundled_name_wins_too(lookalikes, monkeypatch):
    built = []
    monkeypatch.setattr(model_directory, "_derived_model_parts", lambda name: built.append(name) or "bundled")
    assert model_directory.load_model_parts("fast") == "bundled" and built == ["fast"]


def test_a_folder_is_found_by_its_path_only(lookalikes, tiny_model):
    for name in ("mine", "v2.4"):  # v2.4: a retired name, so no bundled model answers to it
        with pytest.raises(
            ModelError, match=rf"'{name}' is not a bundled model .*write it as a path: \./{name}"
        ):
            Plutok.from_pretrained(name)
    for path in ("./mine", str(lookalikes / "mine"), lookalikes / "mine"):
        assert Plutok.from_pretrained(path).fingerprint == tiny_model.fingerprint
    with pytest.raises(ModelError, match="'nothing' is neither a bundled model .* nor a model folder"):
        Plutok.from_pretrained("nothing")
