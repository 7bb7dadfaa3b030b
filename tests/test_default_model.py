"""The bundled default model, as the README's first command uses it."""

from __future__ import annotations

import numpy as np
import pytest

from plutok.api import Plutok
from plutok.audio import load_audio
from plutok.model_directory import bundled_model_path, default_model_path

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model() -> Plutok:
    return Plutok.from_pretrained()


@pytest.fixture(scope="module")
def sample():
    return load_audio(default_model_path().parent / "sample.flac")


def test_bundled_files_are_small_safetensors():
    for name, weights in (("default", "codec.safetensors"), ("v1", "vqvae.safetensors")):
        directory = bundled_model_path(name)
        assert sorted(path.name for path in directory.iterdir()) == sorted(
            ["config.json", "tokenizer.json", weights]
        )
        assert (directory / weights).stat().st_size < 8 * 2**20


def test_default_is_v2_on_whisper_and_log_mel(default_model):
    facts = default_model.info()
    assert facts["frontend"] == "stack" and facts["codec"] == "content"
    assert [member.name for member in default_model.frontend.members] == ["whisper-encoder", "log-mel"]
    assert facts["vocoder"] == "hifigan-16k" and facts["default_speaker"]
    # Total bitrate with the speaker vector on a 10 s utterance (release target <= 500 bits/s,
    # docs/default-model.md "Against the targets").
    assert default_model.bitrate(25.0, 10.0) <= 500


def test_sample_round_trip_keeps_duration_and_is_deterministic(default_model, sample):
    wav, rate = sample
    first = default_model.encode(wav, rate)
    assert default_model.encode(wav, rate).ids == first.ids
    decoded, out_rate = default_model.decode(first)
    assert decoded.shape[0] == round(wav.shape[0] * out_rate / rate)
    assert np.isfinite(decoded).all() and np.abs(decoded).max() > 0.01  # speech, not silence


def test_sample_token_rate_meets_the_target(default_model, sample):
    # The release target (docs/default-model.md): at most 27 tokens per second of speech.
    encoding = default_model.encode(*sample)
    assert encoding.tokens_per_second <= 27.0
    assert encoding.codes_per_second == pytest.approx(default_model.codes_per_second, rel=0.02)


def test_the_fast_model_is_the_default_with_the_istft_vocoder(default_model, sample, tmp_path):
    from plutok.container import read_plt

    fast = Plutok.from_pretrained("fast")
    assert fast.vocoder.name == "istft-16k" and fast.codec.config() == default_model.codec.config()
    assert fast.fingerprint != default_model.fingerprint
    assert (
        bundled_model_path("default").parent / "vocoders" / "istft-16k" / "vocoder.safetensors"
    ).stat().st_size < 4 * 2**20
    wav, rate = sample
    encoding = fast.encode(wav, rate)
    # Same codes and ids as the default: a language model's ids decode with either.
    assert encoding.ids == default_model.encode(wav, rate).ids
    decoded, out_rate = fast.decode(encoding)
    assert decoded.shape[0] == round(wav.shape[0] * out_rate / rate) and np.abs(decoded).max() > 0.01
    # The fingerprint covers the vocoder, the token space does not: files carry the token space.
    assert fast.token_space == default_model.token_space
    path = fast.save_plt(encoding, tmp_path / "fast.plt")
    assert read_plt(path).fingerprint == fast.token_space_bytes == default_model.token_space_bytes


def test_default_and_fast_decode_each_others_plt_files_and_rows(default_model, sample, tmp_path, capsys):
    """One token space: files, rows and encodings of one decode with the other, in Python and the CLI."""
    import soundfile as sf

    from plutok.cli import main
    from plutok.io.shards import read_rows

    fast = Plutok.from_pretrained("fast")
    wav, rate = sample
    clip = wav[: 2 * rate]
    made = {"default": default_model.encode(clip, rate), "fast": fast.encode(clip, rate)}
    for maker, reader in (("default", fast), ("fast", default_model)):
        path = tmp_path / f"{maker}.plt"
        (default_model if maker == "default" else fast).save_plt(made[maker], path)
        loaded = reader.load_plt(path)
        assert loaded.ids == made[maker].ids
        decoded, _ = reader.decode(made[maker])
        assert decoded.shape[0] == clip.shape[0]
        other = "fast" if maker == "default" else "default"
        argv = ["decode", str(path), "-o", str(tmp_path / f"{maker}-by-{other}.wav"), "-q", "--model", other]
        assert main(argv) == 0, capsys.readouterr().err
    # A Parquet row written with the default decodes under --model fast, and back.
    audio = tmp_path / "clip.wav"
    sf.write(audio, clip, rate)
    for maker, other in (("default", "fast"), ("fast", "default")):
        shards = tmp_path / f"rows-{maker}.parquet"
        assert main(["encode", str(audio), "-o", str(shards), "-q", "--model", maker]) == 0
        [row] = read_rows(shards)
        assert bytes.fromhex(row.fingerprint[:16]) == default_model.token_space_bytes
        output = tmp_path / f"row-{maker}-by-{other}.wav"
        assert main(["decode", str(shards), "--row", "0", "-o", str(output), "-q", "--model", other]) == 0
        assert sf.info(output).frames == clip.shape[0]
    capsys.readouterr()


def test_files_made_before_token_spaces_still_cross_decode(default_model, sample, tmp_path):
    """Files written by 0.6 carry the model's fingerprint (vocoder included): both models still read them."""
    from plutok.container import PltFile, write_plt

    fast = Plutok.from_pretrained("fast")
    wav, rate = sample
    encoding = default_model.encode(wav[:rate], rate)
    for maker in (default_model, fast):
        path = write_plt(
            tmp_path / "old.plt",
            PltFile(
                maker.fingerprint_bytes,
                encoding.sample_rate,
                encoding.num_samples,
                encoding.speaker,
                encoding.ids,
            ),
        )
        assert default_model.load_plt(path).ids == fast.load_plt(path).ids == encoding.ids


def test_python_decode_refuses_an_encoding_of_another_token_space(default_model, sample):
    # (An encoding of a model no longer bundled, such as v2.4: tests/test_retired_models.py.)
    from plutok.errors import ContainerError

    other = Plutok.from_pretrained("v1")
    wav, rate = sample
    foreign = other.encode(wav[: 2 * rate], rate)
    with pytest.raises(ContainerError) as caught:
        default_model.decode(foreign)
    message = str(caught.value)
    assert message.startswith("the encoding was made by another model (fingerprint ")
    assert foreign.fingerprint.hex() in message and default_model.token_space[:16] in message
    assert "\n" not in message


def test_fast_streaming_equals_one_pass(sample):
    fast = Plutok.from_pretrained("fast")
    wav, rate = sample
    encoding = fast.encode(wav, rate)
    whole, _ = fast.decode_ids(encoding.ids, speaker=encoding.speaker)
    streamed = np.concatenate(
        list(fast.decode_stream(iter(encoding.ids), speaker=encoding.speaker, chunk_codes=20))
    )
    assert streamed.shape == whole.shape
    # float32 summation order differs between chunk lengths: the largest difference is
    # 6.2e-5 on v2.5 and was 1.1e-4 on v2.4, at one sample inside a chunk (median 1e-7;
    # peak level 0.35-0.38). Decoding a chunk without the codes after it is wrong by up to
    # 0.15 in its last 0.1 s (measured).
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=5e-4)


def test_plt_files_of_the_fast_model_decode_on_their_own(sample, tmp_path, capsys):
    # Without --model, decode picks the bundled model of a file's token space (v1's files:
    # tests/test_compat.py; models no longer bundled: tests/test_retired_models.py). fast
    # shares the default's, so the default decodes its files.
    from plutok.cli import main

    fast = Plutok.from_pretrained("fast")
    wav, rate = sample
    encoding = fast.encode(wav[: 2 * rate], rate)
    path = fast.save_plt(encoding, tmp_path / "fast.plt")
    assert main(["decode", str(path), "-o", str(tmp_path / "fast.wav"), "-q"]) == 0
    # As 0.6 wrote them (fast's fingerprint, vocoder included): the same.
    encoding.fingerprint = fast.fingerprint_bytes
    path = fast.save_plt(encoding, tmp_path / "older.plt")
    assert main(["decode", str(path), "-o", str(tmp_path / "older.wav"), "-q"]) == 0
    assert "plutok:" not in capsys.readouterr().err
