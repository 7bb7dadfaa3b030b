"""Training-data augmentation: reproducible, each kind does what it says, and the cache applies it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from plutok.errors import PlutokError
from plutok.training import augment as A

RATE = A.SAMPLE_RATE


def band_energy(wav: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(wav.shape[0], 1 / RATE)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


def centroid(wav: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(wav.shape[0], 1 / RATE)
    return float((spectrum * freqs).sum() / spectrum.sum())


def needs(tool: str):
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed")


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param(k, marks=needs("sox") if k == "pitch" else needs("ffmpeg") if k == "codec" else [])
        for k in A.AUGMENTATIONS
    ],
)
def test_every_kind_is_reproducible_finite_and_keeps_the_length_roughly(kind, speech_like):
    wav = speech_like(1.5)
    first, params = A.AUGMENTATIONS[kind](wav, np.random.default_rng(3))
    again, params_again = A.AUGMENTATIONS[kind](wav, np.random.default_rng(3))
    assert params == params_again and np.array_equal(first, again)
    assert first.dtype == np.float32 and np.isfinite(first).all()
    assert abs(first.shape[0] - wav.shape[0]) < 0.05 * RATE
    assert np.max(np.abs(first)) <= 1.0
    assert not np.allclose(first[: wav.shape[0]], wav[: first.shape[0]], atol=1e-3)


def test_telephone_removes_what_is_above_the_band(speech_like):
    wav = speech_like(1.0) + 0.05 * np.random.default_rng(0).standard_normal(RATE).astype(np.float32)
    out, _ = A.telephone(wav, np.random.default_rng(0))
    assert band_energy(out, 4000, 8000) < 1e-3 * band_energy(wav, 4000, 8000)


def test_noise_is_added_at_the_drawn_snr(speech_like):
    wav = speech_like(2.0)
    out, params = A.noise(wav, np.random.default_rng(1))
    measured = 10 * np.log10(np.mean(wav**2) / np.mean((out - wav) ** 2))
    assert measured == pytest.approx(params["snr_db"], abs=0.2)
    assert 10 <= params["snr_db"] <= 30


def test_formant_warp_moves_the_spectrum_the_way_alpha_says(speech_like):
    wav = speech_like(1.5)
    for seed in range(4):
        out, params = A.formant(wav, np.random.default_rng(seed))
        assert np.sign(centroid(out) - centroid(wav)) == np.sign(params["alpha"] - 1)


@needs("sox")
def test_pitch_shift_moves_a_tone_by_the_drawn_cents():
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    out, params = A.pitch(tone, np.random.default_rng(2))
    spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(out.shape[0] - 4000)))
    peak_hz = np.argmax(spectrum) * RATE / (out.shape[0] - 4000)
    assert peak_hz == pytest.approx(200 * 2 ** (params["cents"] / 1200), rel=0.02)


def test_augment_chains_one_or_two_kinds_in_recording_order(speech_like):
    wav = speech_like(1.0)
    kinds = ["noise", "level-eq", "reverb", "formant", "telephone"]
    orders = set()
    for seed in range(12):
        out, applied = A.augment(wav, kinds, seed)
        names = [a["kind"] for a in applied]
        assert 1 <= len(names) <= 2 and names == [k for k in A.AUGMENTATIONS if k in names]
        orders.add(tuple(names))
        again, applied_again = A.augment(wav, kinds, seed)
        assert applied == applied_again and np.array_equal(out, again)
    assert len(orders) > 3  # the seed really chooses


def test_kinds_are_checked_and_seeds_are_per_clip_and_copy():
    assert A.parse_kinds("all") == tuple(A.AUGMENTATIONS)
    assert A.parse_kinds("codec, pitch") == ("pitch", "codec")
    with pytest.raises(PlutokError, match="unknown augmentation echo"):
        A.parse_kinds("pitch,echo")
    seeds = {A.augmentation_seed(clip, copy) for clip in ("a", "b") for copy in (0, 1)}
    assert len(seeds) == 4 and A.augmentation_seed("a", 0) == A.augmentation_seed("a", 0)


def test_cache_holds_augmented_copies_of_train_rows_only(tmp_path, speech_like):
    from plutok import registry
    from plutok.training.cache import fill_cache

    rows = []
    for index, split in enumerate(["train", "train", "dev"]):
        path = tmp_path / f"c{index}.flac"
        sf.write(path, speech_like(1.0, seed=index), RATE)
        rows.append({"id": f"c{index}", "path": str(path), "split": split, "kind": "real"})
    rows += A.augmented_copies(rows, ["noise", "level-eq"], copies=2)
    assert [r["id"] for r in rows[3:]] == ["c0~aug0", "c0~aug1", "c1~aug0", "c1~aug1"]
    frontend = registry.build("frontend", {"name": "log-mel"})
    speaker = registry.build("speaker", {"name": "mel-statistics", "coefficients": 8})
    assert fill_cache(tmp_path / "cache", rows, frontend, speaker, progress=False)["added"] == 7
    index = [json.loads(line) for line in (tmp_path / "cache" / "index.jsonl").read_text().splitlines()]
    by_id = {row["id"]: row for row in index}
    assert "augmentation" not in by_id["c0"]
    assert by_id["c0~aug1"]["augmentation"][0]["kind"] in ("level-eq", "noise")
    assert by_id["c0~aug0"]["split"] == "train" and by_id["c0~aug0"]["kind"] == "real"
    assert by_id["c0~aug0"]["speaker"] != by_id["c0"]["speaker"]  # the speaker vector hears the channel
