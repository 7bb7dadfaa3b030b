from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from plutok.bpe import CodeBPE, codes_to_text, text_to_codes
from plutok.errors import ModelError, TokenError

CODEBOOK = 40


@pytest.fixture(scope="module")
def bpe() -> CodeBPE:
    rng = np.random.default_rng(0)
    # Runs of repeated codes and a few recurring patterns, like steady vowels and silences.
    sequences = [np.repeat(rng.integers(0, CODEBOOK, 60), rng.integers(1, 5, 60)) for _ in range(200)]
    sequences += [np.tile([1, 2, 3, 4], 30)] * 20
    return CodeBPE.train(sequences, CODEBOOK, vocab_size=300, progress=False)


def test_training_learns_merges(bpe):
    assert CODEBOOK < bpe.vocab_size <= 300
    codes = np.tile([1, 2, 3, 4], 10)
    assert len(bpe.encode(codes)) < len(codes)  # the frequent pattern compresses


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, CODEBOOK - 1), min_size=0, max_size=400))
def test_codes_ids_codes_is_exact(bpe, codes):
    ids = bpe.encode(codes)
    assert bpe.decode(ids).tolist() == codes
    assert len(ids) <= len(codes)


def test_empty_and_single_code(bpe):
    assert bpe.encode([]) == []
    assert bpe.decode([]).shape == (0,)
    for code in range(CODEBOOK):
        assert bpe.decode(bpe.encode([code])).tolist() == [code]


def test_char_mapping_is_one_char_per_code():
    codes = np.array([0, 5, 20991])
    assert len(codes_to_text(codes)) == 3
    assert text_to_codes(codes_to_text(codes)).tolist() == codes.tolist()


def test_unknown_ids_and_codes_raise(bpe):
    with pytest.raises(TokenError, match="not in the vocabulary"):
        bpe.decode([bpe.vocab_size])
    with pytest.raises(TokenError, match="not in the vocabulary"):
        bpe.decode([-1])
    with pytest.raises(TokenError, match="outside the codebook"):
        bpe.encode([CODEBOOK])


def test_save_load_is_identical_and_a_standard_tokenizer_file(bpe, tmp_path):
    path = bpe.save(tmp_path / "tokenizer.json")
    reloaded = CodeBPE.load(path, CODEBOOK)
    codes = np.random.default_rng(1).integers(0, CODEBOOK, 500)
    assert reloaded.encode(codes) == bpe.encode(codes)
    plain = Tokenizer.from_file(str(path))  # any HF tokenizers user can read it
    assert plain.encode(codes_to_text(codes)).ids == bpe.encode(codes)
    assert json.loads(path.read_text())["model"]["type"] == "BPE"


def test_tokenizer_for_another_codebook_is_refused(bpe, tmp_path):
    path = bpe.save(tmp_path / "tokenizer.json")
    with pytest.raises(ModelError, match="another codebook"):
        CodeBPE.load(path, CODEBOOK - 10)
    with pytest.raises(ModelError, match="lacks base tokens"):
        CodeBPE.load(path, CODEBOOK + 10)


def test_vocab_smaller_than_codebook_is_refused():
    with pytest.raises(ModelError, match="smaller than the codebook"):
        CodeBPE.train([[1, 2]], 64, vocab_size=10, progress=False)
