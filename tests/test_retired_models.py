"""Models earlier releases bundled (v2.0-v2.4): out of the package, and every way to reach one
(``from_pretrained``, a ``.plt`` file, an ``Encoding``, a token-shard row) fails with one line
that names the model, its fingerprint, the release that shipped it and the commit that has it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from importlib import resources

import pytest

from plutok.api import Plutok
from plutok.catalog import (
    BUNDLED_MODELS,
    DERIVED_MODELS,
    RETIRED_MODELS,
    bundled_model_names,
    retired_model,
    retired_model_named,
)
from plutok.cli import main
from plutok.errors import ContainerError, ModelError

V2_4 = retired_model_named("v2.4")
RETIRED_NAMES = ["v2.4", "v2.4-fast", "v2.3", "v2.3-fast", "v2.2", "v2.2-fast", "v2.1", "v2.1-fast", "v2.0"]


def assert_names_the_retired_model(message: str, model=V2_4) -> None:
    assert "\n" not in message.strip()
    assert f"model {model.name!r}" in message and model.fingerprint[:16] in message
    assert f"Plutok {model.release}" in message and model.commit[:10] in message
    assert f"--model {model.model}" in message and model.folder in message


def test_the_package_ships_the_default_its_fast_vocoder_and_v1_only():
    assets = resources.files("plutok") / "assets"
    assert sorted(item.name for item in assets.iterdir() if item.is_dir()) == ["default", "v1", "vocoders"]
    assert bundled_model_names() == ["default", "v1", "fast"]
    # What keeps the wheel under 25 MB: one model directory more would not fit.
    total = sum(path.stat().st_size for path in _files(assets))
    assert total < 20 * 2**20


def _files(folder):
    for item in folder.iterdir():
        yield from _files(item) if item.is_dir() else [item]


def test_the_retired_table_is_complete_and_unambiguous():
    assert {model.name for model in RETIRED_MODELS} >= set(RETIRED_NAMES)
    assert not set(RETIRED_NAMES) & set(bundled_model_names())
    for model in RETIRED_MODELS:
        assert re.fullmatch(r"[0-9a-f]{64}", model.fingerprint)
        assert re.fullmatch(r"[0-9a-f]{40}", model.commit)
        assert model.model in (*BUNDLED_MODELS, *DERIVED_MODELS) or model.model == model.name
    prefixes = [model.fingerprint[:16] for model in RETIRED_MODELS]
    assert len(set(prefixes)) == len(prefixes)  # a .plt's 8 bytes name one model
    assert retired_model(bytes.fromhex(V2_4.fingerprint[:16])) is V2_4
    assert retired_model(V2_4.fingerprint.upper()) is V2_4
    assert retired_model(V2_4.fingerprint[:8]) is None  # too short to name a model
    assert retired_model("00" * 32) is None


@pytest.mark.parametrize("name", RETIRED_NAMES)
def test_from_pretrained_of_a_retired_name_is_one_line(name):
    with pytest.raises(ModelError) as raised:
        Plutok.from_pretrained(name)
    assert_names_the_retired_model(str(raised.value), retired_model_named(name))
    assert "no longer shipped" in str(raised.value)


def test_a_folder_called_like_a_retired_model_still_loads(tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_model_dir, tmp_path / "v2.4")
    monkeypatch.chdir(tmp_path)
    # A folder is found by its path; the retired name itself never hides it.
    assert Plutok.from_pretrained("./v2.4").fingerprint == Plutok.from_pretrained(tiny_model_dir).fingerprint


@pytest.fixture
def retired_encoding(tiny_model, speech_like):
    """An encoding of the tiny model carrying v2.4's fingerprint, as a v2.4 ``.plt`` file would."""
    encoding = tiny_model.encode(speech_like(0.5), 16000)
    return replace(encoding, fingerprint=bytes.fromhex(V2_4.fingerprint[:16]))


def test_a_plt_of_a_retired_model_is_refused_with_one_line(
    tiny_model, tiny_model_dir, retired_encoding, tmp_path, capsys
):
    path = tiny_model.save_plt(retired_encoding, tmp_path / "old.plt")
    with pytest.raises(ContainerError) as raised:
        tiny_model.load_plt(path)
    assert_names_the_retired_model(str(raised.value))
    assert main(["decode", str(path), "-o", str(tmp_path / "old.wav"), "--model", str(tiny_model_dir)]) == 1
    err = capsys.readouterr().err
    assert_names_the_retired_model(err)
    assert not (tmp_path / "old.wav").exists()


def test_info_of_a_retired_models_plt_names_the_model(tiny_model, retired_encoding, tmp_path, capsys):
    path = tiny_model.save_plt(retired_encoding, tmp_path / "old.plt")
    assert main(["info", str(path), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["model_fingerprint"] == V2_4.fingerprint[:16]
    assert_names_the_retired_model(facts["model"])
    # A .plt of a model that is still bundled (or unknown) has no such line.
    path = tiny_model.save_plt(replace(retired_encoding, fingerprint=tiny_model.fingerprint_bytes), path)
    assert main(["info", str(path), "--json"]) == 0
    assert "model" not in json.loads(capsys.readouterr().out)


def test_another_foreign_plt_keeps_its_message(tiny_model, retired_encoding, tmp_path):
    path = tiny_model.save_plt(replace(retired_encoding, fingerprint=b"\x07" * 8), tmp_path / "x.plt")
    with pytest.raises(ContainerError, match="another model"):
        tiny_model.load_plt(path)


def test_an_encoding_of_a_retired_model_is_refused(tiny_model, retired_encoding):
    with pytest.raises(ModelError) as raised:
        tiny_model.decode(retired_encoding)
    assert_names_the_retired_model(str(raised.value))
    # An encoding of this model, or of no model in particular, still decodes.
    tiny_model.decode(replace(retired_encoding, fingerprint=tiny_model.fingerprint_bytes))
    tiny_model.decode(replace(retired_encoding, fingerprint=b"\0" * 8))


def test_a_token_row_of_a_retired_model_is_refused_with_one_line(
    tiny_model, tiny_model_dir, retired_encoding, tmp_path, capsys
):
    row = {
        "path": "a.wav",
        "duration": retired_encoding.num_samples / retired_encoding.sample_rate,
        "sample_rate": retired_encoding.sample_rate,
        "num_samples": retired_encoding.num_samples,
        "num_codes": retired_encoding.num_codes,
        "token_ids": list(retired_encoding.ids),
        "speaker": [float(value) for value in retired_encoding.speaker],
        "fingerprint": V2_4.fingerprint,
    }
    shard = tmp_path / "tokens.jsonl"
    shard.write_text(json.dumps(row) + "\n")
    code = main(
        ["decode", str(shard), "--row", "0", "-o", str(tmp_path / "a.wav"), "--model", str(tiny_model_dir)]
    )
    assert code == 1
    assert_names_the_retired_model(capsys.readouterr().err)


@pytest.mark.slow
def test_the_cli_without_model_names_the_retired_model(retired_encoding, tmp_path, capsys):
    # The user's path: `plutok decode old.plt` tries the default and every bundled model first.
    default = Plutok.from_pretrained()
    assert not {default.fingerprint[:16], Plutok.from_pretrained("fast").fingerprint[:16]} & {
        model.fingerprint[:16] for model in RETIRED_MODELS
    }
    path = tmp_path / "old.plt"
    from plutok.container import write_plt

    write_plt(path, retired_encoding.to_plt())
    assert main(["decode", str(path), "-o", str(tmp_path / "old.wav"), "-q"]) == 1
    assert_names_the_retired_model(capsys.readouterr().err)
