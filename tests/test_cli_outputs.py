"""The two options of ``resolve_outputs`` that the CLI adds: mirrored folder layouts and other formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from plutok.errors import PlutokError
from plutok.io.outputs import resolve_outputs


def test_names_mirror_a_folder_layout(tmp_path):
    inputs = [tmp_path / "in" / "spk1" / "a.plt", tmp_path / "in" / "spk2" / "a.plt"]
    names = [Path("spk1/a.plt"), Path("spk2/a.plt")]
    out = str(tmp_path / "out") + "/"
    assert resolve_outputs(inputs, out, ".decoded", ".wav", names=names) == [
        tmp_path / "out" / "spk1" / "a.wav",
        tmp_path / "out" / "spk2" / "a.wav",
    ]
    with pytest.raises(PlutokError, match="both be written"):  # the default: file names only
        resolve_outputs(inputs, out, ".decoded", ".wav")
    with pytest.raises(ValueError, match="relative path"):
        resolve_outputs(inputs[:1], out, ".decoded", ".wav", names=[Path("../up.plt")])
    # Names only place outputs inside a folder; beside the input they change nothing.
    assert resolve_outputs(inputs[:1], None, ".decoded", ".wav", names=names[:1]) == [
        tmp_path / "in" / "spk1" / "a.decoded.wav"
    ]


def test_check_format_replaces_the_audio_check(tmp_path):
    def plt_only(path: Path) -> None:
        if path.suffix != ".plt":
            raise PlutokError(f"{path}: not .plt")

    source = tmp_path / "a.wav"
    assert resolve_outputs([source], None, "", ".plt", check_format=plt_only) == [tmp_path / "a.plt"]
    with pytest.raises(PlutokError, match="not .plt"):
        resolve_outputs([source], str(tmp_path / "x.wav"), "", ".plt", check_format=plt_only)
