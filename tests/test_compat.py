"""v1 keeps working: the 0.1 bundled model, its .plt files and its tokens.

The fixture was made with Plutok 0.1 (before the stage redesign): a 1.5 s clip of the
bundled sample encoded by the then-default model (`tests/fixtures/v1/sample-1.5s.plt`),
with the ids, codes, model fingerprint and decoded waveform 0.1 produced
(`sample-1.5s-expected.npz`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
# The fixture was decoded on an AVX-512 machine. Elsewhere the vocoder's float summation order
# differs: the largest difference measured is 1.1e-4 (Xeon with AVX-512 forced onto ATen
# default/AVX2/AVX-512, oneDNN SSE4.1/AVX2/AVX-512 and 1 or 2 threads), 6.7e-6 on an AVX2 EPYC;
# the decoded peak is 0.56, so 5e-4 is -61 dB below it, while one wrong code moves samples by ~0.1.
KERNEL_TOLERANCE = 5e-4


@pytest.fixture(scope="module")
def v1_model():
    from plutok.api import Plutok

    return Plutok.from_pretrained("v1")


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURES / "sample-1.5s-expected.npz")


def test_v1_model_keeps_its_fingerprint(v1_model, expected):
    assert v1_model.fingerprint == bytes(expected["fingerprint"]).hex()


@pytest.mark.slow
def test_v1_plt_decodes_as_in_0_1(v1_model, expected):
    encoding = v1_model.load_plt(FIXTURES / "sample-1.5s.plt")
    assert encoding.ids == expected["ids"].tolist()
    decoded, rate = v1_model.decode(encoding)
    assert rate == 16000 and decoded.shape == expected["decoded"].shape
    np.testing.assert_allclose(decoded, expected["decoded"], rtol=0, atol=KERNEL_TOLERANCE)


def test_v1_encoding_gives_the_same_tokens(v1_model, expected):
    from plutok.model_directory import default_model_path

    wav, rate = sf.read(default_model_path().parent / "sample.flac", dtype="float32")
    encoding = v1_model.encode(wav[: int(1.5 * rate)], rate)
    assert encoding.ids == expected["ids"].tolist()
    np.testing.assert_array_equal(v1_model.ids_to_codes(encoding.ids), expected["codes"])
    np.testing.assert_array_equal(encoding.speaker, expected["speaker"])


def test_a_v1_plt_is_refused_by_another_model(expected, tiny_model):
    from plutok.errors import ContainerError

    with pytest.raises(ContainerError, match="another model|fingerprint"):
        tiny_model.load_plt(FIXTURES / "sample-1.5s.plt")


@pytest.mark.slow
def test_the_cli_decodes_a_plt_of_a_bundled_older_model_without_being_told(expected, tmp_path, capsys):
    from plutok.cli import main

    output = tmp_path / "decoded.wav"
    assert main(["decode", str(FIXTURES / "sample-1.5s.plt"), "-o", str(output), "-q"]) == 0
    assert "bundled model 'v1'" in capsys.readouterr().err
    decoded, rate = sf.read(output, dtype="float32")
    assert rate == 16000 and decoded.shape == expected["decoded"].shape
    # Through a 16-bit WAV: within one quantisation step of the 0.1 decode, and the kernels' spread.
    np.testing.assert_allclose(decoded, expected["decoded"], rtol=0, atol=1.5 / 32768 + KERNEL_TOLERANCE)
    # Told which model, the CLI uses that one and refuses the file.
    assert (
        main(
            ["decode", str(FIXTURES / "sample-1.5s.plt"), "-o", str(tmp_path / "x.wav"), "--model", "default"]
        )
        == 1
    )
    assert "another model" in capsys.readouterr().err
