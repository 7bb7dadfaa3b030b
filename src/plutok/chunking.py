"""One way to run a stage over long input in chunks, so that the result equals one pass.

Every chunked stage (codec encoder and decoder, vocoder, frontends) declares its
receptive field as ``context`` input steps on each side; :func:`chunked_apply`
runs it over windows of ``chunk + 2 * context`` steps and keeps the middle of
each, cut at step boundaries. Memory then depends on ``chunk``, not on the input
length, and every kept output saw exactly what a single pass would have shown it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = ["Window", "chunked_apply", "chunked_apply_to_blocks", "plan_windows", "report_progress"]

#: ``callback(label, windows_done, windows_total)`` of the innermost :func:`report_progress` block.
_PROGRESS: ContextVar[Callable[[str, int, int], None] | None] = ContextVar("plutok_progress", default=None)


@contextmanager
def report_progress(callback: Callable[[str, int, int], None]) -> Iterator[None]:
    """Within the block, ``callback(label, done, total)`` after each window of a labelled :func:`chunked_apply`.

    How a caller shows a long job's progress (``plutok decode``'s bar follows the
    vocoder's windows) without threading a callback through every stage.
    """
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def chunked_apply(
    process: Callable[[int, int], np.ndarray],
    total: int,
    chunk: int | None,
    context: int,
    outputs_per_step: Fraction | int = 1,
    fixed_window: bool = False,
    label: str | None = None,
) -> np.ndarray:
    """Apply ``process`` to ``[0, total)`` chunk by chunk and join the outputs on their last axis.

    Args:
        process: ``process(begin, end)`` returns the output for input steps
            ``[begin, end)``, whose last axis has ``(end - begin) * outputs_per_step``
            entries (rounded up).
        total: input length in steps.
        chunk: input steps kept per window (a multiple of ``1 / outputs_per_step`` when
            that is below one, so cuts fall on output boundaries); ``None`` is one pass.
        context: input steps of context on each side (the stage's receptive field).
        outputs_per_step: output entries per input step, e.g. ``Fraction(1, 4)`` for an
            encoder that downsamples by 4, ``160`` for a vocoder with hop 160.
        fixed_window: keep every window ``chunk + 2 * context`` long, shifting the end
            windows inside the input (for stages compiled for one shape or, like
            Whisper, sensitive to the window length).
        label: names the stage to a :func:`report_progress` callback (unlabelled calls
            report nothing).
    Returns:
        The concatenation, equal to ``process(0, total)`` up to the stage's float noise.
    """
    windows = plan_windows(total, chunk, context, outputs_per_step, fixed_window)
    report = _PROGRESS.get()

    def done(count: int) -> None:
        if report is not None and label is not None:
            report(label, count, len(windows))

    if len(windows) == 1:
        output = process(0, total)
        done(1)
        return output
    pieces = []
    for index, window in enumerate(windows):
        pieces.append(window.keep(process(window.begin, window.end)))
        done(index + 1)
    return np.concatenate(pieces, axis=-1)


def chunked_apply_to_blocks(
    process: Callable[[np.ndarray], np.ndarray],
    blocks: Iterable[np.ndarray],
    total: int,
    chunk: int | None,
    context: int,
    outputs_per_step: Fraction | int = 1,
) -> np.ndarray:
    """:func:`chunked_apply` over input that arrives as consecutive blocks (last axis).

    ``process(steps)`` gets input steps ``[begin, end)`` of each window of
    :func:`plan_windows` as one array; the blocks are read only as far as the
    window needs and dropped once no later window starts inside them, so at most one
    window plus one block of input is held. ``total`` is the blocks' joint length.
    Returns:
        what ``chunked_apply(lambda b, e: process(whole[..., b:e]), total, ...)`` returns
        for ``whole``, the blocks joined.
    Raises:
        ValueError: the blocks do not add up to ``total`` steps.
    """
    source = iter(blocks)
    held: list[np.ndarray] = []
    held_from = held_to = 0  # input steps [held_from, held_to) are in ``held``
    kept = []
    for window in plan_windows(total, chunk, context, outputs_per_step):
        while held_to < window.end:
            block = next(source, None)
            if block is None:
                raise ValueError(f"the blocks hold {held_to} steps, expected {total}")
            held.append(block)
            held_to += block.shape[-1]
        # Drop the blocks that end before this window begins.
        while held and held_from + held[0].shape[-1] <= window.begin:
            held_from += held.pop(0).shape[-1]
        joined = held[0] if len(held) == 1 else np.concatenate(held, axis=-1)
        steps = joined[..., window.begin - held_from : window.end - held_from]
        kept.append(window.keep(process(steps)))
    if next(source, None) is not None or held_to != total:
        raise ValueError(f"the blocks hold more than the expected {total} steps")
    return kept[0] if len(kept) == 1 else np.concatenate(kept, axis=-1)


@dataclass(frozen=True)
class Window:
    """One window of :func:`plan_windows`: input steps ``[begin, end)``, output entries kept."""

    begin: int
    end: int
    first: int  # first kept output entry, relative to the window's output
    count: int  # output entries kept

    def keep(self, output: np.ndarray) -> np.ndarray:
        """The kept part of this window's output (last axis)."""
        return output[..., self.first : self.first + self.count]


def plan_windows(
    total: int,
    chunk: int | None,
    context: int,
    outputs_per_step: Fraction | int = 1,
    fixed_window: bool = False,
) -> list[Window]:
    """The windows :func:`chunked_apply` runs (arguments as there), for stages that batch them."""
    ratio = Fraction(outputs_per_step)
    if chunk is None or total <= chunk + 2 * context:
        return [Window(0, total, 0, math.ceil(total * ratio))]
    if chunk < 1 or (ratio < 1 and (chunk * ratio).denominator != 1):
        raise ValueError(f"chunk {chunk} must be a positive multiple of {1 / ratio}")
    window = chunk + 2 * context
    windows = []
    for start in range(0, total, chunk):
        stop = min(total, start + chunk)
        if fixed_window:
            begin = min(max(0, start - context), total - window)
            end = begin + window
        else:
            begin, end = max(0, start - context), min(total, stop + context)
        first = (start - begin) * ratio
        if first.denominator != 1:
            raise ValueError("context must keep window starts on output boundaries")
        windows.append(Window(begin, end, int(first), math.ceil((stop - start) * ratio)))
    return windows
