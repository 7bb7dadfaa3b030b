"""The bundled default model keeps its behaviour: fingerprint, tokens and decoded audio.

The fixture (`tests/fixtures/default/sample-3s-expected.npz`, written by
`scripts/make_behaviour_fixtures.py`) holds what the default model gave for the first
3 s of the bundled sample before the codec was split into registered parts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

FIXTURE = Path(__file__).parent / "fixtures" / "default" / "sample-3s-expected.npz"
# Summation order differs between CPU kernel sets (measured in tests/test_compat.py).
KERNEL_TOLERANCE = 5e-4
# The fixture stores the waveform as float16: rounding moves a sample by at most 2**-11 of it.
FLOAT16_RELATIVE = 2.0**-11


@pytest.fixture(scope="module")
def default_model():
    from plutok.api import Plutok

    return Plutok.from_pretrained()


@pytest.fixture(scope="module")
def expected():
    return np.load(FIXTURE)


@pytest.fixture(scope="module")
def encoding(default_model, expected):
    from plutok.model_directory import default_model_path

    wav, rate = sf.read(default_model_path().parent / "sample.flac", dtype="float32")
    return default_model.encode(wav[: int(3.0 * rate)], rate)


def test_default_model_keeps_its_fingerprint(default_model, expected):
    assert default_model.fingerprint == str(expected["fingerprint"])


@pytest.mark.slow
def test_default_model_gives_the_same_tokens(default_model, expected, encoding):
    assert encoding.ids == expected["ids"].tolist()
    np.testing.assert_array_equal(default_model.ids_to_codes(encoding.ids), expected["codes"])
    np.testing.assert_array_equal(encoding.speaker, expected["speaker"])


@pytest.mark.slow
def test_default_model_decodes_the_same_audio(default_model, expected, encoding):
    decoded, rate = default_model.decode(encoding)
    assert rate == int(expected["sample_rate"]) and decoded.shape == expected["decoded"].shape
    reference = expected["decoded"].astype(np.float32)
    np.testing.assert_allclose(decoded, reference, rtol=FLOAT16_RELATIVE, atol=KERNEL_TOLERANCE)
