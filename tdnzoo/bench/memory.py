"""Peak memory of a forward pass: device allocator on CUDA, live tensor bytes on CPU."""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["peak_memory_bytes"]


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks bytes of storages created during the region while any tensor still uses them.

    CPU has no allocator statistics; counting storages that outputs of every op keep alive
    gives the peak of activation memory (parameters and inputs, allocated before, excluded).
    """

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self._known: set[int] = set()

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.live -= self.sizes.pop(key)
            del self.refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            key = t.untyped_storage().data_ptr()
            if key == 0:
                continue
            if key not in self.refs:
                self.refs[key] = 0
                self.sizes[key] = t.untyped_storage().nbytes()
                self.live += self.sizes[key]
                self.peak = max(self.peak, self.live)
            self.refs[key] += 1
            weakref.finalize(t, self._release, key)
        return out


def peak_memory_bytes(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes allocated while running ``fn`` (beyond what existed before)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    mode = _LiveTensorBytes()
    with mode:
        result = fn()
    del result
    return int(mode.peak)
