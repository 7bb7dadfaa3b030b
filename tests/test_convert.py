"""The original release: its ``#N`` tokenizer, ``Plutok.from_openvoice`` and ``plutok convert``.

A fake release is built from the reference fixtures: the tiny OpenVoice converter,
the tiny original-format VQ-VAE checkpoint, and a tokenizer trained exactly the way
the original ``src/plutok/bpe.py`` trained it, on ``#N`` strings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer

from plutok.bpe import (
    CodeBPE,
    OriginalCodeBPE,
    load_original_tokenizer,
    load_tokenizer,
    original_codes_to_text,
)
from plutok.cli import main
from plutok.errors import ModelError, TokenError
from plutok.tokenizer import Plutok

REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference"
CONVERTER = REFERENCE / "openvoice" / "tiny_v2"
VQVAE_PTH = REFERENCE / "plutok_vqvae" / "tiny" / "model.pth"
CODEBOOK = 200  # the tiny original VQ-VAE, like the release, has 200 codes
SAMPLE_RATE = 22050


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tone(seconds: float, seed: int) -> np.ndarray:
    """A noise-modulated harmonic tone with a moving pitch, float32 at 22050 Hz."""
    rng = np.random.default_rng(seed)
    time = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * time))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * rng.uniform(2, 5) * time)) + 0.3 * rng.random(time.shape[0])
    return (0.1 * envelope * voiced + 0.005 * rng.standard_normal(time.shape[0])).astype(np.float32)


def train_original_tokenizer(code_sequences, vocab_size: int) -> Tokenizer:
    """What the original ``src/plutok/bpe.py`` ``train_bpe`` does, on its ``#N`` strings."""
    tokenizer = Tokenizer(BPE(unk_token="[UNK]"))
    trainer = BpeTrainer(
        special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"],
        vocab_size=vocab_size,
        show_progress=False,
    )
    tokenizer.train_from_iterator(
        (original_codes_to_text(codes) for codes in code_sequences), trainer=trainer
    )
    return tokenizer


def _training_codes() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    # Runs of repeated codes (steady vowels, silences) and a recurring pattern.
    sequences = [np.repeat(rng.integers(0, CODEBOOK, 80), rng.integers(1, 4, 80)) for _ in range(150)]
    return sequences + [np.tile([7, 19, 123, 0], 20)] * 10


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A release folder laid out like the original: ckpt/converter, outputs/vqvae, outputs/tokenizer."""
    if not CONVERTER.is_dir() or not VQVAE_PTH.is_file():
        pytest.skip("reference fixtures not available")
    root = tmp_path_factory.mktemp("release")
    shutil.copytree(CONVERTER, root / "ckpt" / "converter")
    converter_channels = json.loads((CONVERTER / "config.json").read_text())["model"]["inter_channels"]
    state = torch.load(VQVAE_PTH, map_location="cpu", weights_only=True)
    assert state["encoder.0.conv.weight"].shape[0] == converter_channels  # the fixture fits the converter
    (root / "outputs" / "vqvae").mkdir(parents=True)
    shutil.copy(VQVAE_PTH, root / "outputs" / "vqvae" / "model.pth")
    (root / "outputs" / "tokenizer").mkdir(parents=True)
    train_original_tokenizer(_training_codes(), vocab_size=500).save(
        str(root / "outputs" / "tokenizer" / "tokenizer.json")
    )
    return root


@pytest.fixture(scope="module")
def tokenizer_file(release) -> Path:
    return release / "outputs" / "tokenizer" / "tokenizer.json"


@pytest.fixture(scope="module")
def original_bpe(tokenizer_file) -> OriginalCodeBPE:
    return load_original_tokenizer(tokenizer_file, CODEBOOK)


@pytest.fixture(scope="module")
def original_model(release) -> Plutok:
    return Plutok.from_openvoice(
        release / "ckpt", release / "outputs/vqvae/model.pth", release / "outputs/tokenizer/tokenizer.json"
    )


# --------------------------------------------------------------------------- the #N tokenizer


def test_original_tokenizer_file_layout(tokenizer_file, original_bpe):
    data = json.loads(tokenizer_file.read_text())
    assert data["model"]["type"] == "BPE" and data["pre_tokenizer"] is None and data["post_processor"] is None
    vocab = data["model"]["vocab"]
    first = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", "#", "0", "9")
    assert [vocab[token] for token in first] == [0, 1, 2, 3, 4, 5, 6, 15]
    # Merges cut across codes ("6#7", "#1" + "2"): decoding must not assume whole codes per token.
    assert any(not token.startswith("#") and token[0].isdigit() and "#" in token for token in vocab)
    assert original_bpe.vocab_size == len(vocab) == 500


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, CODEBOOK - 1), min_size=0, max_size=300)
    | st.lists(st.sampled_from([0, 1, 7, 12, 19, 123, 199]), min_size=0, max_size=300)
)
def test_codes_ids_codes_is_exact_and_ids_match_the_original(tokenizer_file, original_bpe, codes):
    ids = original_bpe.encode(codes)
    assert original_bpe.decode(ids).tolist() == codes
    # The original: PreTrainedTokenizerFast(tokenizer_file=...)("#12#45...")["input_ids"].
    expected = (
        Tokenizer.from_file(str(tokenizer_file)).encode(original_codes_to_text(codes)).ids if codes else []
    )
    assert ids == expected


def test_frequent_patterns_compress(original_bpe):
    codes = np.tile([7, 19, 123, 0], 10)
    ids = original_bpe.encode(codes)
    assert len(ids) < len(codes)
    assert original_bpe.codes_per_token(ids) == len(codes) / len(ids)


def test_bad_codes_and_ids_are_refused(original_bpe, tokenizer_file):
    with pytest.raises(TokenError, match="outside the codebook"):
        original_bpe.encode([3, CODEBOOK])
    with pytest.raises(TokenError, match="stands for no codes"):
        original_bpe.decode([0])  # [UNK]
    with pytest.raises(TokenError, match="not in the vocabulary"):
        original_bpe.decode([original_bpe.vocab_size + 5])
    with pytest.raises(TokenError, match="not a sequence of '#N' codes"):
        original_bpe.decode([original_bpe.tokenizer.token_to_id("7")])  # a digit with no '#'
    small = load_original_tokenizer(tokenizer_file, 150)
    with pytest.raises(TokenError, match="outside the codebook"):
        small.decode(original_bpe.encode([199]))


def test_save_keeps_the_tokenizer_and_kind_is_detected(tmp_path, original_bpe, tokenizer_file):
    copy = original_bpe.save(tmp_path / "tokenizer.json")
    reloaded = load_tokenizer(copy, CODEBOOK)
    assert isinstance(reloaded, OriginalCodeBPE)
    assert reloaded.tokenizer.to_str() == original_bpe.tokenizer.to_str()
    codes = _training_codes()[3]
    assert reloaded.encode(codes) == original_bpe.encode(codes)
    # A Plutok-trained (one character per code) tokenizer loads as CodeBPE.
    ours = CodeBPE.train(_training_codes()[:20], CODEBOOK, vocab_size=260, progress=False).save(
        tmp_path / "ours.json"
    )
    assert isinstance(load_tokenizer(ours, CODEBOOK), CodeBPE)
    with pytest.raises(ModelError, match="base tokens"):
        OriginalCodeBPE(Tokenizer.from_file(str(ours)), CODEBOOK)
    with pytest.raises(ModelError, match="missing"):
        load_tokenizer(tmp_path / "none.json", CODEBOOK)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ModelError, match="not a readable"):
        load_original_tokenizer(tmp_path / "bad.json", CODEBOOK)


# --------------------------------------------------------------------------- Plutok.from_openvoice


def test_from_openvoice_encodes_like_the_original(original_model, tokenizer_file):
    wav = tone(1.0, seed=1)
    codes, _ = original_model.encode_codes(wav, SAMPLE_RATE)
    encoding = original_model.encode(wav, SAMPLE_RATE)
    assert encoding.ids == Tokenizer.from_file(str(tokenizer_file)).encode(original_codes_to_text(codes)).ids
    assert encoding.num_codes == codes.shape[0] and encoding.speaker.shape == (
        original_model.speaker_encoder.speaker_dim,
    )
    assert original_model.ids_to_codes(encoding.ids).tolist() == codes.tolist()
    decoded, rate = original_model.decode(encoding)
    assert rate == SAMPLE_RATE and decoded.shape == wav.shape and np.isfinite(decoded).all()


# --------------------------------------------------------------------------- plutok convert


def test_convert_release_reloads_identically(tmp_path, release, original_model, capsys):
    output = tmp_path / "converted"
    assert main(["convert", "--release", str(release), "-o", str(output)]) == 0
    assert "same tokens and audio" in capsys.readouterr().out
    assert {"config.json", "vqvae.safetensors", "tokenizer.json", "backbone.safetensors"} <= {
        path.name for path in output.iterdir()
    }
    assert not any(path.suffix in (".pth", ".pt", ".pkl") for path in output.iterdir())
    loaded = Plutok.from_pretrained(output)
    assert isinstance(loaded.bpe, OriginalCodeBPE)
    assert loaded.fingerprint == original_model.fingerprint
    config = json.loads((output / "config.json").read_text())
    assert set(config["metadata"]["converted_from"]) == {
        "converter_checkpoint_sha256",
        "converter_config_sha256",
        "vqvae_sha256",
        "tokenizer_sha256",
    }
    for seed in (2, 3):
        wav = tone(1.3, seed=seed)
        first, second = original_model.encode(wav, SAMPLE_RATE), loaded.encode(wav, SAMPLE_RATE)
        assert first.ids == second.ids and np.array_equal(first.speaker, second.speaker)
        assert np.array_equal(original_model.decode(first)[0], loaded.decode(second)[0])


def test_convert_with_explicit_paths_and_errors(tmp_path, release, capsys):
    output = tmp_path / "explicit"
    outputs = release / "outputs"
    args = (
        f"convert --checkpoint {release / 'ckpt' / 'converter'} --vqvae {outputs / 'vqvae/model.pth'} "
        f"--tokenizer {outputs / 'tokenizer/tokenizer.json'} -o {output} --no-verify"
    ).split()
    assert main(args) == 0
    assert main(args) == 1  # exists
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
    assert isinstance(Plutok.from_pretrained(output).bpe, OriginalCodeBPE)
    capsys.readouterr()
    assert main(["convert", "-o", str(tmp_path / "x")]) == 1
    assert "--release" in capsys.readouterr().err
    assert main(["convert", "--release", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x")]) == 1
    assert "not found" in capsys.readouterr().err
    not_a_checkpoint = release / "outputs/tokenizer/tokenizer.json"
    assert main(f"convert --release {release} --vqvae {not_a_checkpoint} -o {tmp_path / 'x'}".split()) == 1
    assert "VQ-VAE checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- the whole pipeline


@pytest.mark.slow
def test_pipeline_on_the_tiny_converter_through_the_cli(tmp_path, release, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    for seed in range(4):
        sf.write(
            audio / f"utt{seed}.wav", tone(1.0 + 0.3 * seed, seed=10 + seed), SAMPLE_RATE, subtype="PCM_16"
        )
    converter = release / "ckpt" / "converter"
    feats, vq, model = tmp_path / "feats", tmp_path / "vq", tmp_path / "model"
    assert main(f"extract {audio} --backbone openvoice --checkpoint {converter} -o {feats} -q".split()) == 0
    train_vq = f"train-vq {feats} -o {vq} --steps 20 --batch-size 4 --segment-frames 32 --codebook-size 32 -q"
    assert main(train_vq.split()) == 0
    assert main(f"train-bpe {feats} --vqvae {vq} -o {model} --vocab-size 64 -q".split()) == 0
    out = tmp_path / "out.wav"
    capsys.readouterr()
    assert main(["roundtrip", str(audio / "utt1.wav"), "-o", str(out), "--model", str(model)]) == 0
    assert "tokens/s" in capsys.readouterr().out
    decoded, rate = sf.read(out)
    assert rate == SAMPLE_RATE and decoded.shape[0] == sf.info(audio / "utt1.wav").frames
    loaded = Plutok.from_pretrained(model)
    assert (
        loaded.parts.legacy_backbone.name == "openvoice"
        and loaded.codebook_size == 32
        and loaded.vocab_size <= 64
    )
