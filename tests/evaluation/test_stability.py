"""Token stability under a 10 ms shift and 30 dB SNR noise."""

from __future__ import annotations

import numpy as np
import pytest

from plutok.evaluation import stability


def test_perturbations_shift_by_10_ms_and_add_noise_at_30_db():
    wav = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    perturbed = stability.perturbations(wav, 16000, seed=1)
    assert perturbed["shift"].shape[0] == 16160 and np.all(perturbed["shift"][:160] == 0)
    np.testing.assert_array_equal(perturbed["shift"][160:], wav)
    noise = perturbed["noise"] - wav
    snr = 10 * np.log10(np.mean(wav.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(30.0, abs=0.2)
    np.testing.assert_array_equal(stability.perturbations(wav, 16000, seed=1)["noise"], perturbed["noise"])


def test_changed_share_compares_positions_and_ignores_the_extra_code():
    assert stability.changed_share(np.array([1, 2, 3]), np.array([1, 5, 3, 9])) == (1, 3)


def test_code_stability_counts_over_clips(tiny_model, speech_like):
    clips = [(f"c{i}", speech_like(1.0, 16000, seed=i), 16000) for i in range(2)]
    result = stability.code_stability(tiny_model, clips, progress=False)
    assert result.clips == 2 and result.codes > 0
    assert set(result.changed) == {"shift", "noise"} and all(0 <= v <= 1 for v in result.changed.values())


def test_the_command_measures_searched_codes(tmp_path, speech_like, capsys):
    import json

    import soundfile as sf

    sf.write(tmp_path / "a.wav", speech_like(1.2, 16000, seed=7), 16000, subtype="FLOAT")
    (tmp_path / "a.txt").write_text("a clip")
    out = tmp_path / "stability.json"
    command = [str(tmp_path), "--model", "fast", "--json", str(out)]
    assert stability.main([*command, "--search", "--search-settings", "2,1,2,0"]) == 0
    assert "with code search: 1 clips" in capsys.readouterr().out
    assert json.loads(out.read_text())["clips"] == 1
