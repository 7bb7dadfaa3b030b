"""plutok export-onnx: ONNX Runtime decodes token ids as torch does, and the documented numpy-only example runs."""

from __future__ import annotations

import json
import re
import wave
from pathlib import Path

import numpy as np
import pytest

from plutok.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "onnx.md"

# kernels: the 1e-4 margins hold under forced generic kernels too (CI reruns these).
pytestmark = [pytest.mark.slow, pytest.mark.kernels]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    folder = tmp_path_factory.mktemp("onnx")
    assert main(["export-onnx", "fast", "-o", str(folder / "decode.onnx")]) == 0
    return folder


def test_onnx_runtime_decodes_as_torch_does(exported):
    import onnxruntime
    import torch

    from plutok.api import Plutok
    from plutok.export import decode_graph

    model = Plutok.from_pretrained("fast")
    table = json.loads((exported / "decode.tokens.json").read_text())
    assert table["fingerprint"] == model.fingerprint and table["sample_rate"] == model.sample_rate
    ids = np.random.default_rng(0).integers(0, model.vocab_size, size=40)
    codes = np.array([c for i in ids for c in table["codes_of_token"][i]], dtype=np.int64)
    np.testing.assert_array_equal(codes, model.ids_to_codes(ids))  # the table is the BPE's
    speaker = np.array([table["default_speaker"]], dtype=np.float32)
    session = onnxruntime.InferenceSession(str(exported / "decode.onnx"), providers=["CPUExecutionProvider"])
    graph = decode_graph(model.parts)
    for length in (5, codes.shape[0]):  # the length axis is dynamic
        (onnx_wave,) = session.run(None, {"codes": codes[None, :length], "speaker": speaker})
        with torch.no_grad():
            torch_wave = graph(torch.from_numpy(codes[None, :length]), torch.from_numpy(speaker)).numpy()
        assert onnx_wave.shape == (1, length * table["samples_per_code"])
        np.testing.assert_allclose(onnx_wave, torch_wave, rtol=0, atol=1e-4)
    # The torch graph is the library's decode (in one chunk) of all the ids.
    library, _ = Plutok(model.parts, chunk_seconds=None).decode_ids(ids)
    np.testing.assert_allclose(torch_wave[0], library, rtol=0, atol=1e-4)


def test_the_documented_numpy_example_runs(exported, monkeypatch):
    import onnxruntime

    example = re.search(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert "import torch" not in example and "plutok" not in example
    table = json.loads((exported / "decode.tokens.json").read_text())
    ids = [3, 17, 256, 4000, 9]
    (exported / "ids.txt").write_text(" ".join(map(str, ids)) + "\n")
    monkeypatch.chdir(exported)
    exec(compile(example, str(DOC), "exec"), {})
    with wave.open(str(exported / "speech.wav")) as written:
        samples = np.frombuffer(written.readframes(written.getnframes()), dtype="<i2") / 32767
        assert written.getframerate() == 16000
    codes = np.array([c for i in ids for c in table["codes_of_token"][i]], dtype=np.int64)
    session = onnxruntime.InferenceSession("decode.onnx", providers=["CPUExecutionProvider"])
    (expected,) = session.run(
        None, {"codes": codes[None], "speaker": np.array([table["default_speaker"]], np.float32)}
    )
    np.testing.assert_allclose(samples, np.clip(expected[0], -1, 1), atol=1 / 32767 + 1e-6)


def test_export_never_replaces_a_file_it_did_not_write(tmp_path, capsys):
    (tmp_path / "decode.tokens.json").write_text('{"mine": true}\n')
    assert main(["export-onnx", "fast", "-o", str(tmp_path / "decode.onnx")]) == 1
    assert "not a token table of plutok export-onnx; not overwriting" in capsys.readouterr().err
    assert not (tmp_path / "decode.onnx").exists()
