"""The torch device a model or command runs on (``--device auto|cpu|cuda[:N]``)."""

from __future__ import annotations

from plutok.errors import PlutokError

__all__ = ["resolve_device"]


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other names are checked.

    Raises:
        PlutokError: an unknown name, or a CUDA device torch cannot see.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise PlutokError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PlutokError(f"--device {device}: no CUDA GPU is visible to torch")
    if device.startswith("cuda:"):
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise PlutokError(
                f"--device {device}: torch sees {torch.cuda.device_count()} GPU(s) (cuda:0 ...)"
            )
    return device
