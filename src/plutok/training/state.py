"""Training state on disk without pickles: tensors in safetensors, everything else in JSON.

A nested state (dicts with str or int keys, lists, numbers, strings, None, tensors)
is written as ``STEM.safetensors`` (every tensor, keyed by its path in the tree) and
``STEM.json`` (the tree, each tensor replaced by ``{"__tensor__": path}``; dicts as
key/value pairs so int keys stay ints). Loading never runs code from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from plutok.files import atomic_path, atomic_write_text

__all__ = ["load_state", "save_state"]


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {"__tensor__": path}
    if isinstance(value, dict):
        return {"__dict__": [[key, _flatten(item, f"{path}/{key}", tensors)] for key, item in value.items()]}
    if isinstance(value, (list, tuple)):
        return [_flatten(item, f"{path}/{index}", tensors) for index, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {path or '/'} in a training state")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        return {key: _unflatten(item, tensors) for key, item in value["__dict__"]}
    if isinstance(value, list):
        return [_unflatten(item, tensors) for item in value]
    return value


def save_state(stem: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``STEM.safetensors`` then ``STEM.json`` (atomically; the JSON marks the state complete)."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, "", tensors)
    with atomic_path(f"{stem}.safetensors") as temporary:
        save_file(tensors, str(temporary))
    atomic_write_text(f"{stem}.json", json.dumps(tree) + "\n")


def load_state(stem: str | os.PathLike) -> dict[str, Any]:
    """Inverse of :func:`save_state`."""
    from safetensors.torch import load_file

    tensors = load_file(f"{stem}.safetensors")
    return _unflatten(json.loads(Path(f"{stem}.json").read_text(encoding="utf-8")), tensors)
