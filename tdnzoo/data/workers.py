"""DataLoader workers that never hang silently: a deadline per batch, and an error that names the worker
and the video it was reading.

Training, evaluation and prediction build their loaders with :func:`watched_loader`. Each worker
notes in memory shared with the main process which item (video) it is reading and since when; when
no batch arrives within ``timeout_s``, PyTorch's ``DataLoader timed out`` becomes a
:class:`WorkerTimeoutError` that says which worker was stuck on which video, and the loader's
workers are shut down. The default deadline, :data:`DEFAULT_WORKER_TIMEOUT_S` (10 minutes), is far
above what a batch takes from a slow network file system (a cold NFS or object-store mount can take
seconds per video, and a worker reads a whole batch before it sends it), yet it turns a worker that
will never answer into an error the same hour. ``timeout_s=0`` waits forever, as PyTorch does.

Workers are started with the platform's default method (``fork`` on Linux up to Python 3.13), which
starts them fastest; the readers of :mod:`tdnzoo.data.decode` are safe to use after a fork.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset, get_worker_info

from .errors import DataError

__all__ = ["DEFAULT_WORKER_TIMEOUT_S", "WorkerTimeoutError", "WorkerWatch", "watched_loader"]

DEFAULT_WORKER_TIMEOUT_S = 600.0
_SLOT = 512  # bytes of item description per worker


class WorkerTimeoutError(DataError, RuntimeError):
    """No batch came from the DataLoader workers within the deadline; the message names who was reading what."""


class WorkerWatch:
    """What each worker is reading, in shared memory: written by the workers, read by the main process."""

    def __init__(self, num_workers: int) -> None:
        self.num_workers = int(num_workers)
        self._what = multiprocessing.RawArray(ctypes.c_char, self.num_workers * _SLOT)
        self._since = multiprocessing.RawArray(ctypes.c_double, self.num_workers)
        self._pid = multiprocessing.RawArray(ctypes.c_long, self.num_workers)

    def begin(self, what: str) -> None:
        """In a worker: it starts reading ``what``."""
        info = get_worker_info()
        if info is None or info.id >= self.num_workers:
            return
        data = what.encode("utf-8", "replace")[: _SLOT - 1]
        start = info.id * _SLOT
        self._what[start : start + len(data) + 1] = data + b"\0"
        self._since[info.id] = time.time()
        self._pid[info.id] = os.getpid()

    def end(self) -> None:
        """In a worker: it is done with its item."""
        info = get_worker_info()
        if info is not None and info.id < self.num_workers:
            self._what[info.id * _SLOT] = b"\0"

    def busy(self) -> list[tuple[int, int, str, float]]:
        """``(worker id, pid, what, seconds)`` of the workers reading an item now."""
        now, out = time.time(), []
        for worker in range(self.num_workers):
            raw = bytes(self._what[worker * _SLOT : (worker + 1) * _SLOT]).split(b"\0", 1)[0]
            if raw:
                out.append((worker, int(self._pid[worker]), raw.decode("utf-8", "replace"), now - self._since[worker]))
        return out


class _Watched(Dataset):
    """A dataset whose items tell the :class:`WorkerWatch` what they read; everything else is the dataset's."""

    def __init__(self, dataset: Dataset, watch: WorkerWatch, describe: Callable[[int], str]) -> None:
        self.dataset, self.watch, self.describe = dataset, watch, describe

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        self.watch.begin(self.describe(index))
        try:
            return self.dataset[index]
        finally:
            self.watch.end()

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":  # not set yet (unpickling)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def _describe(dataset: Dataset) -> Callable[[int], str]:
    describe_item = getattr(dataset, "describe_item", None)
    return describe_item if callable(describe_item) else (lambda index: f"item {index}")


class _DeadlineIterator:
    def __init__(self, inner: Iterator, loader: WatchedLoader) -> None:
        self._inner, self._loader = inner, loader

    def __iter__(self) -> _DeadlineIterator:
        return self

    def __len__(self) -> int:
        return len(self._inner)  # type: ignore[arg-type]

    def __next__(self) -> Any:
        try:
            return next(self._inner)
        except RuntimeError as exc:
            if not str(exc).startswith("DataLoader timed out"):
                raise
            message = self._loader.timeout_message()
            self._stop_workers()
            raise WorkerTimeoutError(message) from exc

    def _stop_workers(self) -> None:
        # Now, not when this iterator is collected; the stuck ones first, since PyTorch's shutdown waits
        # 5 s for each worker that does not answer before it terminates it.
        workers = getattr(self._inner, "_workers", [])
        watch = self._loader.watch
        for worker_id, *_ in watch.busy() if watch is not None else []:
            if worker_id < len(workers) and workers[worker_id].is_alive():
                workers[worker_id].terminate()
        shutdown = getattr(self._inner, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class WatchedLoader(DataLoader):
    """A ``DataLoader`` whose wait for a batch has a deadline (see the module doc)."""

    watch: WorkerWatch | None

    def __init__(self, dataset: Dataset, *, num_workers: int = 0, timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
                 **kwargs: Any) -> None:
        if timeout_s < 0:
            raise ValueError(f"the worker timeout must be >= 0 seconds (0: no deadline), got {timeout_s}")
        self.watch = WorkerWatch(num_workers) if num_workers > 0 else None
        if self.watch is not None:
            dataset = _Watched(dataset, self.watch, _describe(dataset))
        self.timeout_s = float(timeout_s) if num_workers > 0 else 0.0
        super().__init__(dataset, num_workers=num_workers, timeout=self.timeout_s, **kwargs)

    def __iter__(self) -> Iterator:
        return _DeadlineIterator(super().__iter__(), self)

    def timeout_message(self) -> str:
        """Why the loader gave up: each busy worker, its process and the video it has been reading."""
        busy = self.watch.busy() if self.watch is not None else []
        if busy:
            stuck = "; ".join(f"worker {w} (pid {pid}) has been reading {what} for {secs:.0f} s"
                              for w, pid, what, secs in busy)
        else:
            stuck = "no worker was reading an item (a worker may have died, or be stuck between items)"
        return (f"no batch from the {self.num_workers} data-loading workers in {self.timeout_s:.0f} s: {stuck}. "
                "A decoder stuck on a file, or storage slower than the deadline: check the file, or raise the "
                "deadline (--loader-timeout SECONDS; 0 waits forever)")


def watched_loader(dataset: Dataset, *, workers: int, timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
                   **kwargs: Any) -> WatchedLoader:
    """A DataLoader over ``dataset`` with ``workers`` processes and a ``timeout_s`` deadline per batch.

    The dataset may say what item ``i`` is with ``describe_item(i)`` (a video's path); ``kwargs`` go to
    ``DataLoader``. With ``workers=0`` items load in this process and there is no deadline.

    Raises (while iterating):
        WorkerTimeoutError: no batch within ``timeout_s``; names the stuck workers and their videos.
    """
    return WatchedLoader(dataset, num_workers=workers, timeout_s=timeout_s, **kwargs)
