"""Token agreement across forced CPU kernel sets (plutok.evaluation.kernels)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from plutok.evaluation import kernels


def test_compare_counts_changed_codes_and_length_changes():
    reference = {"a": {"codes": [1, 2, 3, 4], "ids": [7]}, "b": {"codes": [5, 6], "ids": [8]}}
    other = {"a": {"codes": [1, 9, 3, 4], "ids": [9]}, "b": {"codes": [5, 6, 6], "ids": [8]}}
    row = kernels.compare("generic", reference, other)
    assert (row.clips, row.clips_changed, row.codes, row.codes_changed) == (2, 2, 7, 2)
    assert row.token_ids_changed_clips == 1 and row.code_agreement == pytest.approx(5 / 7)
    assert row.speaker_changed_clips == 0  # runs without speaker vectors compare equal
    reference["a"]["speaker"], other["a"]["speaker"] = [0.5, 1.0], [0.5, 1.25]
    assert kernels.compare("generic", reference, other).speaker_changed_clips == 1


def test_native_is_always_available_and_generic_needs_no_cpu_flag():
    available = kernels.available_kernel_sets()
    assert {"native", "generic"} <= set(available)
    assert set(available) <= set(kernels.KERNEL_SETS)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Four 1.7 s clips of the bundled sample (real speech)."""
    from plutok.model_directory import default_model_path

    wav, rate = sf.read(default_model_path().parent / "sample.flac", dtype="float32")
    folder = tmp_path_factory.mktemp("clips")
    size = len(wav) // 4
    paths = []
    for index in range(4):
        path = folder / f"clip{index}.flac"
        sf.write(path, wav[index * size : (index + 1) * size], rate)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_float32_frontend_gives_the_same_codes_under_generic_kernels(clips, tmp_path):
    # Measured with int8 Whisper features: 3-4 % of codes change under generic or AVX2
    # kernels; with float32 features none did (see docs/benchmarks.md).
    model = kernels._model_with_compute_type("default", "float32", tmp_path)
    native = kernels.encode_under("native", model, clips)
    generic = kernels.encode_under("generic", model, clips)
    row = kernels.compare("generic", native, generic)
    assert row.codes > 100 and row.codes_changed == 0, row
    assert np.all([len(native[path]["ids"]) > 0 for path in clips])


def test_a_search_run_records_the_searched_codes_and_fitted_vectors(clips):
    from plutok import CodeSearch, Plutok
    from plutok.audio import load_audio

    run = kernels.encode_under("native", "fast", clips[:1], search="2,1,2,2")
    wav, rate = load_audio(clips[0])
    expected = Plutok.from_pretrained("fast", search=CodeSearch(2, 1, 2, 2)).encode(wav, rate)
    assert run[clips[0]]["ids"] == expected.ids
    assert run[clips[0]]["speaker"] == expected.speaker.tolist()
