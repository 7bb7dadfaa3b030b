"""SHA-256 digests of weights and files: one implementation for fingerprints, checkpoints and caches."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["file_sha256", "state_dict_sha256", "update_with_state_dict"]


def update_with_state_dict(digest: Any, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Feed a state dict's keys and raw tensor bytes, in sorted key order, into a hashlib object."""
    for key, tensor in sorted(state_dict.items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over a state dict's keys and raw tensor bytes, in sorted key order."""
    digest = hashlib.sha256()
    update_with_state_dict(digest, state_dict)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
