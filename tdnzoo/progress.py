"""A progress bar beside a loop that never touches what the loop iterates.

``tqdm.auto.tqdm(loader)`` is ``tqdm.asyncio.tqdm_asyncio`` outside notebooks, whose constructor
calls ``iter(loader)`` at once and keeps the iterator for ``async for``; the ``for`` loop then calls
``iter(loader)`` again. For a ``DataLoader`` that first, unused iterator draws its base seed from the
global torch generator (so seeded training takes other dropout masks with the bar than without it)
and, with ``num_workers > 0``, starts a set of worker processes that load batches for nothing.
:func:`progress` counts the items of the one iterator the loop makes instead.

Example:
    >>> bar = progress(loader, enabled=True, desc="epoch 1")
    >>> for batch in bar:
    ...     bar.set_postfix(loss="0.1")
"""
from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["Progress", "progress"]

T = TypeVar("T")


class Progress(Generic[T]):
    """``iterable`` with a tqdm bar on stderr that counts its items (see the module docstring).

    The bar knows the total from ``len(iterable)`` when there is one; it is created when the loop
    starts and closed when the loop ends, breaks or raises.
    """

    def __init__(self, iterable: Iterable[T], *, enabled: bool = True, **tqdm_kwargs: Any) -> None:
        self.iterable = iterable
        self.enabled = enabled
        self.tqdm_kwargs = tqdm_kwargs
        self._bar: Any = None

    def __len__(self) -> int:
        return len(self.iterable)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[T]:
        if not self.enabled:
            yield from self.iterable
            return
        from tqdm.auto import tqdm

        try:
            total = len(self.iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
        # total= and no iterable: the bar holds no reference to the loader and never iterates it.
        self._bar = tqdm(total=total, file=sys.stderr, **{"dynamic_ncols": True, **self.tqdm_kwargs})
        try:
            for item in self.iterable:
                yield item
                self._bar.update(1)
        finally:
            self._bar.close()
            self._bar = None

    def set_postfix(self, **values: Any) -> None:
        """Show ``values`` after the bar (nothing when disabled)."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)


def progress(iterable: Iterable[T], enabled: bool = True, **tqdm_kwargs: Any) -> Progress[T]:
    """``iterable`` counted by a progress bar when ``enabled``; ``tqdm_kwargs`` go to tqdm (``desc``, ``leave``, ...)."""
    return Progress(iterable, enabled=enabled, **tqdm_kwargs)
