"""Float16 storage of weights without changing a value: round once, then store what is exact as float16."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["half_where_exact", "round_to_half"]


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
