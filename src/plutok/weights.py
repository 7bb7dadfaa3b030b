"""Float16 storage of weights without changing a value: round once, then store what is exact as float16."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "describe_mismatch",
    "half_where_exact",
    "load_module_weights",
    "read_weights",
    "round_to_half",
    "save_module_weights",
    "weights_in_directory",
]


@torch.no_grad()
def round_to_half(module: nn.Module) -> nn.Module:
    """Round every floating weight of ``module`` to the nearest float16 value (kept as float32), in place.

    Tensors beyond float16's range (a dead code's raw codebook row can be huge under an
    affine reparameterisation) stay float32 rather than become inf.
    """
    for tensor in module.state_dict().values():
        if tensor.is_floating_point():
            rounded = tensor.half().float()
            if torch.isfinite(rounded).all():
                tensor.copy_(rounded)
    return module


def half_where_exact(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU copies of the tensors, as float16 where that loses nothing (so a rounded model saves at half size)."""
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu().contiguous()
        if (
            value.is_floating_point()
            and torch.isfinite(value).all()
            and torch.equal(value.half().float(), value.float())
        ):
            value = value.half()
        tensors[key] = value
    return tensors


def save_module_weights(module: nn.Module, path: Path) -> None:
    """Write ``module``'s state dict to a safetensors file, atomically, float16 where exact."""
    from safetensors.torch import save_file

    from plutok.files import atomic_path

    with atomic_path(path) as temporary:
        save_file(half_where_exact(module.state_dict()), str(temporary))


def weights_in_directory(directory: Path, name: object, what: str) -> Path:
    """``directory / name`` for a weights file a model config names, refused unless it lies inside ``directory``.

    A config is data from whoever made the model: ``../../etc/passwd`` or ``/etc/passwd``
    must not make Plutok open files elsewhere. The name is checked as written, not after
    following symlinks, so a model folder whose files link into a shared store (as
    download caches are laid out) still loads.

    Raises:
        ModelError: ``name`` is not a relative file name inside ``directory``.
    """
    from plutok.errors import ModelError

    relative = Path(name) if isinstance(name, str) and name else None
    if relative is None or relative.is_absolute() or ".." in relative.parts or relative.drive:
        raise ModelError(
            f"{directory}: the {what} weights file {name!r} must be a file name inside the model folder"
        )
    return Path(directory) / relative


def read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; :class:`ModelError` when ``what``'s file is missing or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from plutok.errors import ModelError

    if not path.is_file():
        raise ModelError(f"{what} weights not found: {path}")
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as error:
        raise ModelError(f"cannot read {path}: {error}") from error


def load_module_weights(module: nn.Module, path: Path, what: str) -> None:
    """Load a safetensors file into ``module`` (as float32); it must hold exactly the module's tensors.

    Raises:
        ModelError: no such file, not readable, or keys/shapes that do not match ``what``'s config.
    """
    from plutok.errors import ModelError

    state = read_weights(path, what)
    problem = describe_mismatch(
        {k: tuple(v.shape) for k, v in module.state_dict().items()},
        {k: tuple(v.shape) for k, v in state.items()},
    )
    if problem:
        raise ModelError(f"{path} does not match the {what} config: {problem}")
    module.load_state_dict({key: value.float() for key, value in state.items()})


#: Keys named per category in a mismatch message.
_MAX_LISTED = 5


def describe_mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str | None:
    """One line listing missing/unexpected keys and wrong shapes (first few of each), or None if equal."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    wrong = [
        f"{k} {list(found[k])} (expected {list(expected[k])})"
        for k in expected
        if k in found and tuple(found[k]) != tuple(expected[k])
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            more = f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:_MAX_LISTED])}{more}")
    return "; ".join(parts) if parts else None
