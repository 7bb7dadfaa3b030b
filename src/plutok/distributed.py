"""Multi-process helpers for ``torchrun``: rank from the environment, collectives that are no-ops alone.

``torchrun --nproc_per_node=N -m plutok COMMAND ...`` starts ``N`` copies of the command with
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. The
commands call :func:`init` once: it joins the process group (gloo on CPU, NCCL when the
device is CUDA) only when ``WORLD_SIZE > 1``. Every other function here works, as the
identity or a no-op, in a plain single process too, so the stage code has one path.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import torch

__all__ = [
    "Context",
    "all_gather_cat",
    "all_gather_objects",
    "all_reduce_sum",
    "average_gradients",
    "barrier",
    "broadcast_",
    "context",
    "env_context",
    "exit_process",
    "init",
    "is_initialized",
    "process_group",
    "shutdown",
]


# Set once this process has joined a process group (and so started gloo's/NCCL's threads).
_joined_group = False


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (``local_rank`` on its machine)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_writer(self) -> bool:
        """Rank 0: the one process that writes shared files (checkpoints, summaries)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        from plutok.errors import PlutokError

        raise PlutokError(f"environment variable {name}={value!r} is not an integer") from None


def env_context() -> Context:
    """The rank, world size and local rank that ``torchrun`` put in the environment (0, 1, 0 without it)."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    if world_size < 1 or not 0 <= rank < world_size:
        from plutok.errors import PlutokError

        raise PlutokError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return Context(rank, world_size, local_rank)


def is_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def context() -> Context:
    """This process's place in the joined process group (rank 0 of 1 when none was joined)."""
    if is_initialized():
        env = env_context()
        return Context(torch.distributed.get_rank(), torch.distributed.get_world_size(), env.local_rank)
    return Context()


def init(device: str = "cpu", timeout: datetime.timedelta | None = None) -> Context:
    """Join the process group when started by ``torchrun`` with ``WORLD_SIZE > 1``.

    Args:
        device: ``"cpu"`` (gloo) or a CUDA device (NCCL; the process then uses GPU
            ``LOCAL_RANK``).
        timeout: how long a collective (a barrier) may wait for the slowest rank.
    Returns:
        This process's :class:`Context`.
    """
    if is_initialized():
        return context()
    env = env_context()
    if not env.distributed:
        return env
    cuda = torch.device(device).type == "cuda"
    if cuda:
        if not torch.cuda.is_available():
            from plutok.errors import PlutokError

            raise PlutokError(f"device {device!r} asked for, but no CUDA GPU is available")
        torch.cuda.set_device(env.local_rank)
    kwargs: dict[str, Any] = {"backend": "nccl" if cuda else "gloo"}
    if timeout is not None:
        kwargs["timeout"] = timeout
    torch.distributed.init_process_group(**kwargs)
    global _joined_group
    _joined_group = True
    return context()


def shutdown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def process_group(device: str = "cpu", timeout: datetime.timedelta | None = None) -> Iterator[Context]:
    """:func:`init` for the duration of a ``with`` block, :func:`shutdown` after it."""
    joined = not is_initialized()
    ctx = init(device, timeout)
    try:
        yield ctx
    finally:
        if joined:
            shutdown()


def exit_process(code: int) -> NoReturn:
    """End the process with exit status ``code`` (what ``python -m plutok`` and ``plutok`` do last).

    In a process that joined a process group the interpreter is not finalised: the output
    streams and log handlers are flushed and the process ends with ``os._exit``. Measured
    with torch 2.13 and gloo (2-process ``train-vq``, 1 run in ~8): after the group was
    destroyed and every file written, a C++ thread left by the group could still call
    ``std::terminate`` ("terminate called without an active exception", SIGABRT) while
    the interpreter tore down, turning finished runs into failures. Nothing after
    ``main()`` returns needs that teardown.
    """
    if not _joined_group:
        sys.exit(code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or broken pipe: nothing left to save
            pass
    os._exit(code)


def barrier() -> None:
    """Wait until every rank gets here."""
    if is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place; returns it."""
    if is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace every rank's gradients of ``parameters`` by their mean over ranks (one
    all-reduce of the flattened gradients), so every rank takes the same optimiser step."""
    world_size = context().world_size
    if world_size == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads])) / world_size
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()


def broadcast_(tensor: torch.Tensor, source: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` on every rank with rank ``source``'s, in place; returns it."""
    if is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast(tensor, src=source)
    return tensor


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate (along dim 0, in rank order) every rank's ``tensor``; shapes may differ in dim 0 only."""
    if not is_initialized() or torch.distributed.get_world_size() == 1:
        return tensor
    world = torch.distributed.get_world_size()
    tensor = tensor.contiguous()
    length = torch.tensor([tensor.shape[0]], device=tensor.device)
    lengths = [torch.zeros_like(length) for _ in range(world)]
    torch.distributed.all_gather(lengths, length)
    sizes = [int(value) for value in lengths]
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])


def all_gather_objects(value: Any) -> list[Any]:
    """Every rank's picklable ``value``, in rank order (``[value]`` alone)."""
    if not is_initialized() or torch.distributed.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered
