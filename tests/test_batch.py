"""``encode_batch`` / ``decode_batch``: lists or padded tensors in, the same results as one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plutok.errors import AudioError, PlutokError


@pytest.fixture(scope="module")
def clips(speech_like):
    return [speech_like(seconds, seed=seed) for seconds, seed in ((0.6, 1), (1.0, 2), (0.4, 3))]


def test_encode_batch_of_a_list_equals_one_by_one(tiny_model, clips):
    stereo = np.stack([clips[1], clips[1] * 0.5], axis=1)  # (samples, channels), as soundfile reads it
    batch = tiny_model.encode_batch([clips[0], torch.from_numpy(stereo), clips[2]], 16000)
    expected = [tiny_model.encode(clip, 16000) for clip in (clips[0], stereo, clips[2])]
    assert [item.ids for item in batch] == [item.ids for item in expected]
    assert [item.num_samples for item in batch] == [clip.shape[0] for clip in clips]
    for got, want in zip(batch, expected, strict=True):
        np.testing.assert_array_equal(got.speaker, want.speaker)


def test_encode_batch_of_a_padded_tensor_equals_one_by_one(tiny_model, clips):
    lengths = torch.tensor([clip.shape[0] for clip in clips])
    padded = torch.zeros(len(clips), 2, int(lengths.max()))  # (B, C, T), channels first
    for row, clip in enumerate(clips):
        padded[row, 0, : clip.shape[0]] = torch.from_numpy(clip)
        padded[row, 1, : clip.shape[0]] = torch.from_numpy(clip) * 0.5
    batch = tiny_model.encode_batch(padded, 16000, lengths=lengths)
    for row, clip in enumerate(clips):
        one = tiny_model.encode(np.stack([clip, clip * 0.5], axis=1), 16000)
        assert batch[row].ids == one.ids and batch[row].num_samples == clip.shape[0]
    # (B, T) mono, and the padding is never encoded.
    mono = tiny_model.encode_batch(padded[:, 0], 16000, lengths=lengths)
    assert [item.ids for item in mono] == [tiny_model.encode(clip, 16000).ids for clip in clips]


def test_decode_batch_equals_one_by_one_and_pads_tensors(tiny_model, clips):
    encodings = tiny_model.encode_batch(clips, 16000)
    decoded = tiny_model.decode_batch(encodings)
    assert decoded.sample_rate == tiny_model.sample_rate and len(decoded) == len(clips)
    for wav, encoding in zip(decoded.wavs, encodings, strict=True):
        np.testing.assert_array_equal(wav, tiny_model.decode(encoding)[0])
    audio, lengths = decoded.padded()
    assert audio.shape == (len(clips), 1, max(decoded.lengths)) and lengths.tolist() == decoded.lengths
    assert float(audio[2, 0, lengths[2] :].abs().sum()) == 0.0
    # Padded ids (B, N) with lengths, one voice for all: decode_ids of each row.
    voice = encodings[0].speaker
    ids = torch.zeros(len(clips), max(len(item.ids) for item in encodings), dtype=torch.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
    lengths = torch.tensor([len(item.ids) for item in encodings])
    from_ids = tiny_model.decode_batch(ids, speaker=voice, lengths=lengths, sample_rate=8000)
    for wav, encoding in zip(from_ids.wavs, encodings, strict=True):
        np.testing.assert_array_equal(wav, tiny_model.decode_ids(encoding.ids, voice, 8000)[0])
    # A voice per item, lists of ids.
    voices = [item.speaker for item in reversed(encodings)]
    per_item = tiny_model.decode_batch([item.ids for item in encodings], speaker=voices)
    np.testing.assert_array_equal(per_item.wavs[0], tiny_model.decode_ids(encodings[0].ids, voices[0])[0])


def test_batch_mistakes_are_one_line_errors(tiny_model, clips):
    with pytest.raises(PlutokError, match="lengths has 2 values for a batch of 3"):
        tiny_model.encode_batch(np.zeros((3, 1000), np.float32), 16000, lengths=[1000, 1000])
    with pytest.raises(PlutokError, match="lengths must be integers in 0..1000"):
        tiny_model.encode_batch(np.zeros((3, 1000), np.float32), 16000, lengths=[1000, 2000, 5])
    with pytest.raises(PlutokError, match="lengths goes with a padded"):
        tiny_model.encode_batch(clips, 16000, lengths=[1, 2, 3])
    with pytest.raises(AudioError, match=r"\(B, T\) or \(B, C, T\)"):
        tiny_model.encode_batch(np.zeros(1000, np.float32), 16000)
    with pytest.raises(PlutokError, match="got 2 speakers for a batch of 3"):
        tiny_model.decode_batch([[1, 2], [3], [4]], speaker=[clips, clips])


def test_encode_refuses_a_batch_passed_as_one_2d_array(tiny_model, clips):
    two = np.stack([clips[0], clips[0][::-1]])  # (2, samples): two clips, or a (channels, samples) array
    with pytest.raises(AudioError, match="encode_batch"):
        tiny_model.encode(two, 16000)
    assert tiny_model.encode(two.T, 16000).num_samples == clips[0].shape[0]  # (samples, channels)
