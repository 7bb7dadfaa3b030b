from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from plutok.errors import AudioError, ContainerError, ModelError, TokenError
from plutok.tokenizer import Encoding, Plutok


def test_encode_gives_ids_speaker_and_rates(tiny_model, speech_like):
    encoding = tiny_model.encode(speech_like(1.0), 16000)
    assert isinstance(encoding, Encoding)
    assert encoding.num_codes == 50 and 0 < len(encoding.ids) <= 50
    assert encoding.speaker.shape == (160,)
    assert encoding.duration == 1.0
    assert encoding.tokens_per_second == len(encoding.ids)
    codes, speaker = tiny_model.encode_codes(speech_like(1.0), 16000)
    assert tiny_model.ids_to_codes(encoding.ids).tolist() == codes.tolist()
    np.testing.assert_array_equal(encoding.speaker, speaker.astype(np.float16).astype(np.float32))


def test_encoding_is_deterministic_in_process_and_across_processes(tiny_model, tiny_model_dir, speech_wav):
    first = tiny_model.encode_file(speech_wav)
    assert tiny_model.encode_file(speech_wav).ids == first.ids
    script = (
        "import json, sys; from plutok import Plutok; "
        f"print(json.dumps(Plutok.from_pretrained({str(tiny_model_dir)!r}).encode_file({str(speech_wav)!r}).ids))"
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == first.ids


@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_decode_keeps_duration(tiny_model, rate, speech_like):
    wav = speech_like(1.23, sample_rate=rate)
    decoded, out_rate = tiny_model.decode(tiny_model.encode(wav, rate))
    assert out_rate == 16000
    assert decoded.shape[0] == round(wav.shape[0] * 16000 / rate)
    back, back_rate = tiny_model.decode(tiny_model.encode(wav, rate), sample_rate=rate)
    assert back_rate == rate and abs(back.shape[0] - wav.shape[0]) <= 2


def test_save_and_reload_is_bit_identical(tiny_model, tmp_path, speech_like):
    tiny_model.save(tmp_path / "copy")
    reloaded = Plutok.from_pretrained(tmp_path / "copy")
    assert reloaded.fingerprint == tiny_model.fingerprint
    wav = speech_like(2.0, seed=7)
    assert reloaded.encode(wav, 16000).ids == tiny_model.encode(wav, 16000).ids
    for key, tensor in tiny_model.codec.model.state_dict().items():
        assert np.array_equal(tensor.numpy(), reloaded.codec.model.state_dict()[key].numpy()), key
    config = json.loads((tmp_path / "copy" / "config.json").read_text())
    assert config["format"] == "plutok-model" and config["backbone"]["name"] == "mel"


def test_int_pcm_float64_and_stereo_inputs(tiny_model, speech_like):
    wav = speech_like(0.5)
    reference = tiny_model.encode(wav, 16000).ids
    pcm = (wav * 32767).astype(np.int16)
    assert tiny_model.encode(pcm, 16000).ids == reference
    assert tiny_model.encode(wav.astype(np.float64), 16000).ids == reference
    stereo = np.stack([wav, wav], axis=1)
    encoding = tiny_model.encode(stereo, 16000)
    assert encoding.ids == reference and encoding.num_samples == wav.shape[0]


def test_silence_encodes_and_is_flagged(tiny_model, speech_like):
    encoding = tiny_model.encode(np.zeros(16000, np.float32), 16000)
    assert encoding.silent and len(encoding.ids) > 0
    assert not tiny_model.encode(speech_like(1.0), 16000).silent


def test_bad_inputs(tiny_model, speech_like):
    with pytest.raises(AudioError, match="too short"):
        tiny_model.encode(np.zeros(100, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        tiny_model.encode(np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        tiny_model.encode(np.full(16000, np.nan, np.float32), 16000)
    encoding = tiny_model.encode(speech_like(0.5), 16000)
    with pytest.raises(TokenError, match="empty"):
        tiny_model.decode(Encoding([], encoding.speaker, 16000, 8000, 0))
    with pytest.raises(TokenError, match="not in the vocabulary"):
        tiny_model.decode(Encoding([tiny_model.vocab_size + 5], encoding.speaker, 16000, 8000, 1))


def test_plt_round_trip_and_foreign_plt(tiny_model, tmp_path, speech_like):
    encoding = tiny_model.encode(speech_like(1.0), 16000)
    path = tiny_model.save_plt(encoding, tmp_path / "a.plt")
    loaded = tiny_model.load_plt(path)
    assert loaded.ids == encoding.ids and loaded.num_samples == encoding.num_samples
    np.testing.assert_allclose(loaded.speaker, encoding.speaker, rtol=1e-3, atol=1e-3)
    foreign = Encoding(encoding.ids, encoding.speaker, 16000, 16000, 1, fingerprint=b"\x01" * 8)
    tiny_model.save_plt(foreign, tmp_path / "b.plt")
    with pytest.raises(ContainerError, match="another model"):
        tiny_model.load_plt(tmp_path / "b.plt")


def test_broken_model_directories(tiny_model_dir, tmp_path):
    import shutil

    with pytest.raises(ModelError, match="not a model directory"):
        Plutok.from_pretrained(tmp_path / "nothing")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "vqvae.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError):
        Plutok.from_pretrained(broken)
    (broken / "vqvae.safetensors").unlink()
    with pytest.raises(ModelError, match="not found"):
        Plutok.from_pretrained(broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="corrupt JSON"):
        Plutok.from_pretrained(broken)


def test_batch_encoding_reports_bad_files(tiny_model, speech_wav, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    results = dict(tiny_model.encode_files([speech_wav, bad], progress=False))
    assert isinstance(results[speech_wav], Encoding)
    assert isinstance(results[bad], AudioError)


def test_save_never_replaces_a_foreign_directory(tiny_model, tmp_path):
    foreign = tmp_path / "converter"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model": {"hidden_channels": 192}}')
    (foreign / "checkpoint.pth").write_bytes(b"weights")
    with pytest.raises(ModelError, match="not a Plutok model directory"):
        tiny_model.save(foreign)
    assert (foreign / "checkpoint.pth").read_bytes() == b"weights"
    # A Plutok model directory is replaced in one piece.
    tiny_model.save(tmp_path / "model")
    tiny_model.save(tmp_path / "model")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["converter", "model"]
