"""Code search (analysis by synthesis): codes the model's decoder renders nearer the audio.

What users rely on: searched codes are codes of the same token space (the plain model
decodes them), they decode nearer the input than the plain encoder's codes, the search
is repeatable, with nothing to search it is the plain encoder, every encoding path
(one clip, files, the CLI) searches alike, and what it cannot do is refused in one line.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from plutok import CodeSearch
from plutok.api import Plutok
from plutok.codec.search import fit_speaker, search_codes
from plutok.errors import AudioError, ModelError
from plutok.model_directory import load_model_parts

#: Small settings so that the tests run in seconds on the bundled fast model.
QUICK = CodeSearch(candidates=4, sweeps=1, fit_steps=5, speaker_steps=5)


@pytest.fixture(scope="module")
def parts():
    return load_model_parts("fast")


@pytest.fixture(scope="module")
def clip(speech_like):
    return speech_like(1.6, seed=4)


def _inputs(parts, wav):
    """Normalised analysis, normalised log-mel target and the speaker vector as a .plt stores it."""
    speaker = parts.speaker.embed(wav)
    analysis = parts.frontend.normalized(parts.frontend.analyze(wav, speaker), speaker, parts.speaker)
    stored = speaker.astype(np.float16).astype(np.float32)
    return analysis, parts.speaker.normalize(parts.speaker.log_mel(wav), stored), stored


def _error(parts, codes, target, speaker):
    decoded = parts.codec.decode(codes, speaker)
    frames = min(decoded.shape[1], target.shape[1])
    return float(np.abs(decoded[:, :frames] - target[:, :frames]).mean())


@pytest.mark.parametrize(
    "changes",
    [{"candidates": 0}, {"sweeps": -1}, {"fit_steps": 1.5}, {"candidates": True}, {"learning_rate": 0.0}],
)
def test_bad_settings_are_one_model_error(changes):
    with pytest.raises(ModelError, match="code search"):
        CodeSearch(**changes)


def test_settings_parse_from_the_command_line_form():
    assert CodeSearch.parse("") == CodeSearch()
    assert CodeSearch.parse("16") == CodeSearch(candidates=16)
    assert CodeSearch.parse("16,3,0") == CodeSearch(16, 3, 0)
    assert CodeSearch.parse("16,3,0,0") == CodeSearch(16, 3, 0, speaker_steps=0)
    for text in ("a", "1,2,3,4,5", "8,,2"):
        with pytest.raises(ModelError, match="code search"):
            CodeSearch.parse(text)


def test_searched_codes_decode_nearer_the_audio(parts, clip):
    analysis, target, speaker = _inputs(parts, clip)
    plain = parts.codec.encode(analysis)
    searched = search_codes(parts.codec, analysis, target, speaker, QUICK)
    assert searched.shape == plain.shape and searched.dtype == np.int64
    assert 0 <= searched.min() and searched.max() < parts.codec.codebook_size
    assert np.any(searched != plain)
    plain_error, searched_error = (
        _error(parts, plain, target, speaker),
        _error(parts, searched, target, speaker),
    )
    # Only improvements are kept: never further, and here clearly nearer.
    assert searched_error < 0.97 * plain_error
    # More candidates and sweeps search further.
    wider = search_codes(parts.codec, analysis, target, speaker, CodeSearch(8, 2, 5))
    assert _error(parts, wider, target, speaker) <= searched_error + 1e-6


def test_search_is_repeatable_and_nothing_to_search_is_the_plain_encoder(parts, clip):
    analysis, target, speaker = _inputs(parts, clip)
    first = search_codes(parts.codec, analysis, target, speaker, QUICK)
    np.testing.assert_array_equal(search_codes(parts.codec, analysis, target, speaker, QUICK), first)
    idle = search_codes(parts.codec, analysis, target, speaker, CodeSearch(sweeps=0, fit_steps=0))
    np.testing.assert_array_equal(idle, parts.codec.encode(analysis))
    # A whole model with nothing to search encodes as the plain one (speaker vector included).
    nothing = CodeSearch(sweeps=0, fit_steps=0, speaker_steps=0)
    searched, plain = Plutok(parts, search=nothing).encode(clip, 16000), Plutok(parts).encode(clip, 16000)
    assert searched.ids == plain.ids
    np.testing.assert_array_equal(searched.speaker, plain.speaker)


def test_the_fitted_speaker_vector_renders_the_voice_nearer(parts, clip):
    analysis, target, speaker = _inputs(parts, clip)
    codes = parts.codec.encode(analysis)
    log_mel = parts.speaker.log_mel(clip)

    def error(vector):
        decoded = parts.speaker.denormalize(parts.postfilter.apply(parts.codec.decode(codes, vector)), vector)
        frames = min(decoded.shape[1], log_mel.shape[1])
        return float(np.abs(decoded[:, :frames] - log_mel[:, :frames]).mean())

    fitted = fit_speaker(parts.codec, codes, log_mel, speaker, parts.speaker, CodeSearch(), parts.postfilter)
    assert fitted.shape == speaker.shape and fitted.dtype == np.float32 and np.any(fitted != speaker)
    assert error(fitted.astype(np.float16).astype(np.float32)) < 0.99 * error(speaker)
    kept = fit_speaker(parts.codec, codes, log_mel, speaker, parts.speaker, CodeSearch(speaker_steps=0))
    np.testing.assert_array_equal(kept, speaker)


def test_the_model_encodes_with_search_in_its_own_token_space(parts, clip, tmp_path):
    plain, searching = Plutok(parts), Plutok(parts, search=QUICK)
    assert searching.search == QUICK and plain.search is None
    encoding = searching.encode(clip, 16000)
    assert encoding.fingerprint == plain.encode(clip, 16000).fingerprint
    analysis, target, speaker = _inputs(parts, clip)
    codes = search_codes(parts.codec, analysis, target, speaker, QUICK, parts.postfilter)
    np.testing.assert_array_equal(plain.ids_to_codes(encoding.ids), codes)
    log_mel = parts.speaker.log_mel(clip)
    fitted = fit_speaker(parts.codec, codes, log_mel, speaker, parts.speaker, QUICK, parts.postfilter)
    np.testing.assert_array_equal(encoding.speaker, fitted.astype(np.float16).astype(np.float32))
    audio, rate = plain.decode(encoding)
    assert rate == plain.sample_rate and audio.shape[0] == round(1.6 * rate)
    # Files (read and batched by another path) search alike.
    path = tmp_path / "clip.wav"
    sf.write(path, clip, 16000, subtype="FLOAT")
    ((_, from_file),) = list(searching.encode_files([path], progress=False))
    assert from_file.ids == encoding.ids


def test_what_search_cannot_do_is_refused(parts, clip, tiny_model_dir):
    with pytest.raises(AudioError, match="code search reads the whole utterance.*up to 1.48 s"):
        Plutok(parts, chunk_seconds=0.5, search=QUICK).encode(clip, 16000)
    # One pass (no chunks) takes any length.
    assert len(Plutok(parts, chunk_seconds=None, search=QUICK).encode(clip, 16000).ids) > 0
    with pytest.raises(ModelError, match="code search needs a v2 codec"):
        Plutok.from_pretrained(tiny_model_dir, search=QUICK)
    with pytest.raises(ModelError, match="CodeSearch"):
        Plutok(parts, search="8,2")  # type: ignore[arg-type]


def test_cli_encodes_with_search(clip, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, clip, 16000, subtype="FLOAT")
    out = tmp_path / "clip.plt"
    command = [sys.executable, "-m", "plutok", "encode", str(path), "-o", str(out), "--model", "fast"]
    done = subprocess.run(
        [*command, "--search", "--search-settings", "4,1,5,5"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    searched = Plutok.from_pretrained("fast").load_plt(out)
    expected = Plutok.from_pretrained("fast", search=QUICK).encode(clip, 16000)
    assert searched.ids == expected.ids
    refused = subprocess.run([*command, "--search-settings", "4"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--search-settings needs --search" in refused.stderr


def test_the_torch_forms_the_search_fits_through_equal_the_numpy_ones(parts):
    """Post-filter and de-normalisation, as the search computes them, are what decoding applies."""
    import torch

    from plutok.postfilters.global_variance import GlobalVariancePostfilter
    from plutok.speaker.learned import LearnedMelSpeaker

    rng = np.random.default_rng(5)
    features = rng.standard_normal((80, 30)).astype(np.float32)
    speaker = np.asarray(parts.default_speaker, np.float32)
    postfilter = GlobalVariancePostfilter(rng.uniform(0.9, 1.2, 80))
    filtered = postfilter.apply_tensor(torch.from_numpy(features)[None])[0].numpy()
    np.testing.assert_allclose(filtered, postfilter.apply(features), rtol=1e-6)
    denormalized = parts.speaker.denormalize_tensor(
        torch.from_numpy(features)[None], torch.from_numpy(speaker)[None]
    )
    np.testing.assert_allclose(
        denormalized[0].numpy(), parts.speaker.denormalize(features, speaker), atol=1e-4
    )
    # A learned-mel vector de-normalises with its statistics part; its learned values only condition.
    learned = LearnedMelSpeaker(coefficients=16, std_coefficients=8, learned_dim=8)
    vector = np.concatenate([speaker[:24], rng.uniform(-1, 1, 8)]).astype(np.float32)
    torch_form = learned.denormalize_tensor(torch.from_numpy(features)[None], torch.from_numpy(vector)[None])
    np.testing.assert_allclose(torch_form[0].numpy(), learned.denormalize(features, vector), atol=1e-4)
