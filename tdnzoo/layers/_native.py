"""TDN's fused CPU kernels (``kernels/ltdm.c``), built on first use.

PyTorch has no fused ops for what TDN adds to a backbone, so eager execution spends many passes
and many small ops on it. C kernels do it instead, each pinned to the PyTorch ops by
``tests/test_native_kernel.py``:

- :func:`ltdm_gate`: the L-TDM at full resolution (both directions' 1x1 expansion, two sigmoids,
  the gate, the temporal conv after it) in one pass, where the ops take a dozen full-size passes;
- :func:`ltdm_mixed`: the L-TDM bottleneck (the 1x1 reduction, differences, the two small 3x3
  branches, pooling, upsampling), a dozen small ops per block whose fixed costs dominate at these
  sizes;
- :func:`pooled_frame_differences`: the S-TDM input, pooling and differencing in one pass;
- :func:`fuse_upsampled_`: TDN's fusion (nearest 2x upsampling and lerp) in place;
- :func:`max_pool3x3s2`: the S-TDM stem's 3x3/2 max-pool in one pass;
- :func:`gate_temporal_conv`, in training: the L-TDM gate and the temporal conv, forward and
  backward, each in one pass;
- :class:`ByteSnapshot`: the per-forward check that cached folded weights still match their
  module's weights, one ``memcmp`` per tensor.

The first five run in inference (no autograd). They are compiled with the machine's C
compiler (``$CC``, else ``cc``) the first time a TDN model runs on CPU, cached under
``~/.cache/tdnzoo/kernels`` (or ``$TDNZOO_KERNEL_CACHE``) keyed by source, compiler, flags and
CPU, and loaded with ctypes: no build step at install time. Without a compiler the PyTorch ops
run instead (same results up to float rounding, slower); a compiler that fails warns once.
``TDNZOO_NATIVE_KERNELS=0`` turns them off.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

__all__ = [
    "ByteSnapshot",
    "fuse_upsampled_",
    "gate_temporal_conv",
    "ltdm_gate",
    "ltdm_mixed",
    "max_pool3x3s2",
    "native_kernels_enabled",
    "native_library",
    "pooled_frame_differences",
]

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels") / "ltdm.c"
# -march=native: the kernel is built on, and for, the machine that runs it (the cache key has the CPU).
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
LIBS = ("-lm",)  # after the source: linkers drop libraries named before what needs them
ENV_SWITCH = "TDNZOO_NATIVE_KERNELS"


def _profiled(name: str) -> contextlib.AbstractContextManager:
    """A torch.profiler range for a kernel call (ctypes calls are otherwise invisible to it), only
    while a profiler runs: entering one costs microseconds, and these calls are per layer."""
    return torch.profiler.record_function(name) if torch._C._autograd._profiler_enabled() else contextlib.nullcontext()


def native_kernels_enabled() -> bool:
    """False when ``TDNZOO_NATIVE_KERNELS`` is ``0``, ``false``, ``no`` or ``off``."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _cache_dir(override: str | None, xdg_cache_home: str | None) -> Path:
    if override:
        return Path(override)
    return Path(xdg_cache_home or Path.home() / ".cache") / "tdnzoo" / "kernels"


def _cpu_signature() -> str:
    """The CPU model and feature flags: a library built with -march=native runs only where these match."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.split(":")[0].strip() in wanted}))


def _build(target: Path, compiler: str) -> None:
    """Compile the kernel to ``target``, atomically (parallel processes may build at once)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [*shlex.split(compiler), *FLAGS, "-o", tmp, str(SOURCE), *LIBS]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed:\n{done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def _load(cache_override: str | None, xdg_cache_home: str | None, compiler: str) -> ctypes.CDLL | None:
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, compiler.encode(), " ".join(FLAGS + LIBS).encode(),
                                     _cpu_signature().encode(), platform.machine().encode()])).hexdigest()[:16]
    target = _cache_dir(cache_override, xdg_cache_home) / f"ltdm-{key}.so"
    if not target.exists() and shutil.which(shlex.split(compiler)[0]) is None:
        logger.debug("no C compiler %r: the L-TDM runs on PyTorch ops", compiler)
        return None
    try:
        if not target.exists():
            _build(target, compiler)
        # torch is imported, so the kernel's libgomp.so.1 resolves to the runtime torch loaded:
        # one OpenMP thread pool, not two competing for the cores.
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"tdnzoo: could not build or load the native TDN kernels ({err}); TDN on CPU "
            f"uses PyTorch ops instead (same results, slower). Set {ENV_SWITCH}=0 to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    lib.tdnzoo_ltdm_gate.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 5 + [ctypes.c_int]
    lib.tdnzoo_ltdm_mixed.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 6 + [ctypes.c_int]
    lib.tdnzoo_pooled_frame_differences.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    lib.tdnzoo_pooled_frame_differences.restype = None
    lib.tdnzoo_fuse_upsampled.argtypes = ([ctypes.c_void_p] * 2 + [ctypes.c_int64] * 4
                                          + [ctypes.c_int, ctypes.c_float, ctypes.c_float] + [ctypes.c_int] * 3)
    lib.tdnzoo_fuse_upsampled.restype = None
    lib.tdnzoo_gate_tconv_forward.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    lib.tdnzoo_gate_tconv_forward.restype = None
    lib.tdnzoo_gate_tconv_backward.argtypes = [ctypes.c_void_p] * 9 + [ctypes.c_int64] * 4 + [ctypes.c_int]
    lib.tdnzoo_gate_tconv_backward.restype = None
    lib.tdnzoo_ltdm_gate.restype = lib.tdnzoo_ltdm_mixed.restype = ctypes.c_int
    lib.tdnzoo_max_pool3x3s2.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    lib.tdnzoo_max_pool3x3s2.restype = None
    lib.tdnzoo_same_bytes.argtypes = [ctypes.c_int64] + [ctypes.c_void_p] * 3
    lib.tdnzoo_same_bytes.restype = ctypes.c_int
    return lib


def native_library() -> ctypes.CDLL | None:
    """The compiled kernel library, or ``None`` when switched off or when it cannot be built."""
    if not native_kernels_enabled():
        return None
    # Called per layer per forward: only environment lookups here, paths are built once per setting.
    env = os.environ
    return _load(env.get("TDNZOO_KERNEL_CACHE"), env.get("XDG_CACHE_HOME"), env.get("CC", "cc"))


def ltdm_gate(
    x: torch.Tensor, mixed: torch.Tensor, weight: torch.Tensor, temporal_weight: torch.Tensor | None, num_segments: int
) -> torch.Tensor | None:
    """The L-TDM output (and its temporal conv when ``temporal_weight`` is given), fused; see the C source.

    ``x`` ``[N, C, H, W]``, ``mixed`` ``[2, N, K+1, H*W]`` (the two directions' mixed maps and a
    channel of ones), ``weight`` ``[2, C, K+1]``, ``temporal_weight`` ``[C, 1, 3]``; all float32
    CPU. Returns ``None`` when the kernel is unavailable or the inputs do not suit it.
    """
    lib = native_library()
    n, channels, h, w = x.shape
    tensors = [x, mixed, weight] + ([temporal_weight] if temporal_weight is not None else [])
    if lib is None or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    k1 = weight.shape[-1]
    if n % num_segments or mixed.shape != (2, n, k1, h * w) or weight.shape != (2, channels, k1):
        return None
    if temporal_weight is not None and temporal_weight.shape != (channels, 1, 3):
        return None
    x, mixed, weight = x.contiguous(), mixed.contiguous(), weight.contiguous()
    taps = None if temporal_weight is None else temporal_weight.reshape(channels, 3).contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    with _profiled("tdnzoo::ltdm_gate"):
        status = lib.tdnzoo_ltdm_gate(
            x.data_ptr(), mixed.data_ptr(), weight.data_ptr(), None if taps is None else taps.data_ptr(),
            out.data_ptr(), n // num_segments, num_segments, channels, k1, h * w, torch.get_num_threads(),
        )
    if status != 0:
        raise MemoryError("tdnzoo_ltdm_gate could not allocate its scratch memory")
    return out


def ltdm_mixed(
    x: torch.Tensor,
    reduce: tuple[torch.Tensor, torch.Tensor],
    neighbor_weight: torch.Tensor,
    pooled: tuple[torch.Tensor, torch.Tensor],
    full: tuple[torch.Tensor, torch.Tensor],
    num_segments: int,
) -> torch.Tensor | None:
    """Both directions' mixed maps and a channel of ones, ``[2, N, K+1, H*W]``; see the C source.

    ``x`` ``[N, C, H, W]`` (the L-TDM input); ``reduce`` the folded reduction ``(weight [K, C, 1, 1],
    bias [K])``, ``neighbor_weight`` ``[K, 1, 3, 3]``, ``pooled`` and ``full`` the folded
    ``(weight [K, K, 3, 3], bias [K])`` of the two 3x3 branches, ``pooled`` scaled for 2x2 sums; all
    float32 CPU. ``None`` when the kernel is unavailable or the inputs do not suit it.
    """
    lib = native_library()
    n, channels, h, w = x.shape
    k = reduce[0].shape[0]
    tensors = [x, *reduce, neighbor_weight, *pooled, *full]
    if lib is None or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    if n % num_segments or h < 2 or w < 2 or neighbor_weight.shape != (k, 1, 3, 3):
        return None
    if reduce[0].shape != (k, channels, 1, 1) or reduce[1].shape != (k,):
        return None
    if any(weight.shape != (k, k, 3, 3) or bias.shape != (k,) for weight, bias in (pooled, full)):
        return None
    x, neighbor_weight = x.contiguous(), neighbor_weight.contiguous()
    wr, br, wp, bp, wf, bf = (t.contiguous() for t in (*reduce, *pooled, *full))
    out = x.new_empty((2, n, k + 1, h * w))
    with _profiled("tdnzoo::ltdm_mixed"):
        status = lib.tdnzoo_ltdm_mixed(
            x.data_ptr(), wr.data_ptr(), br.data_ptr(), neighbor_weight.data_ptr(), wp.data_ptr(), bp.data_ptr(),
            wf.data_ptr(), bf.data_ptr(), out.data_ptr(), n // num_segments, num_segments, channels, k, h, w,
            torch.get_num_threads(),
        )
    if status != 0:
        raise MemoryError("tdnzoo_ltdm_mixed could not allocate its scratch memory")
    return out


def pooled_frame_differences(frames: torch.Tensor, frames_per_segment: int) -> torch.Tensor | None:
    """``frame_differences(avg_pool2x2(frames))`` in one pass (the S-TDM input); see the C source.

    ``frames`` ``[N, F*3, H, W]`` float32 CPU; ``None`` when the kernel is unavailable or the
    input does not suit it.
    """
    lib = native_library()
    if lib is None or frames.device.type != "cpu" or frames.dtype != torch.float32 or frames.dim() != 4:
        return None
    n, c, h, w = frames.shape
    if c != 3 * frames_per_segment or frames_per_segment < 2 or h < 2 or w < 2:
        return None
    frames = frames.contiguous()
    out = frames.new_empty((n, 3 * (frames_per_segment - 1), h // 2, w // 2))
    with _profiled("tdnzoo::pooled_frame_differences"):
        lib.tdnzoo_pooled_frame_differences(frames.data_ptr(), out.data_ptr(), n, frames_per_segment, h, w,
                                            torch.get_num_threads())
    return out


def fuse_upsampled_(
    x: torch.Tensor, small: torch.Tensor, alpha: float, beta: float, *, relu: bool = False
) -> torch.Tensor | None:
    """``x = alpha * x + beta * up(small)`` in place, ``up`` nearest 2x (TDN's fusion); see the C source.

    With ``relu``, ``x`` is first replaced by ``relu(x)`` in the same pass. ``x`` ``[N, C, 2h, 2w]``
    contiguous, ``small`` ``[N, C, h, w]`` contiguous or channels_last; float32 CPU. Returns ``x``,
    or ``None`` (``x`` untouched) when the kernel does not apply.
    """
    lib = native_library()
    if lib is None or x.dim() != 4 or small.dim() != 4 or not x.is_contiguous():
        return None
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (x, small)):
        return None
    n, c, h, w = x.shape
    if small.shape != (n, c, h // 2, w // 2) or h % 2 or w % 2:
        return None
    channels_last = not small.is_contiguous() and small.is_contiguous(memory_format=torch.channels_last)
    if not channels_last and not small.is_contiguous():
        return None
    lerp = alpha + beta == 1.0 and alpha != 1.0
    with _profiled("tdnzoo::fuse_upsampled"):
        lib.tdnzoo_fuse_upsampled(x.data_ptr(), small.data_ptr(), n, c, h // 2, w // 2, int(channels_last),
                                  alpha, beta, int(lerp), int(relu), torch.get_num_threads())
    return x


def max_pool3x3s2(x: torch.Tensor) -> torch.Tensor | None:
    """``F.max_pool2d(x, 3, 2, 1)`` for a contiguous float32 CPU map ``[N, C, H, W]``, NaN included;
    ``None`` when the kernel is unavailable or ``x`` does not suit it. No gradient."""
    lib = native_library()
    if lib is None or x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or not x.is_contiguous():
        return None
    n, c, h, w = x.shape
    if h < 1 or w < 1:
        return None
    out = x.new_empty((n, c, (h - 1) // 2 + 1, (w - 1) // 2 + 1))
    with _profiled("tdnzoo::max_pool3x3s2"):
        lib.tdnzoo_max_pool3x3s2(x.data_ptr(), out.data_ptr(), n * c, h, w, torch.get_num_threads())
    return out


class ByteSnapshot:
    """A copy of CPU tensors' bytes that :meth:`matches` compares with tensors in one C call.

    For the caches of weights derived from a module (``_fast.derived_from``), checked once per
    forward: one ``memcmp`` per tensor in C costs a fraction of a ``torch.equal`` call each.
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.copies = [t.detach().clone(memory_format=torch.contiguous_format) for t in tensors]
        self.layout = [(t.shape, t.dtype, t.device, t.is_contiguous()) for t in tensors]
        self._index()

    def _index(self) -> None:
        count = len(self.copies)
        self._ptrs = (ctypes.c_void_p * count)(*[c.data_ptr() for c in self.copies])
        self._sizes = (ctypes.c_int64 * count)(*[c.numel() * c.element_size() for c in self.copies])
        self._cpu_contiguous = all(device.type == "cpu" and contiguous for _, _, device, contiguous in self.layout)

    # copy.deepcopy and pickle (of a model holding a cache): the copies travel, pointers are re-read
    def __getstate__(self) -> dict:
        return {"copies": self.copies, "layout": self.layout}

    def __setstate__(self, state: dict) -> None:
        self.copies, self.layout = state["copies"], state["layout"]
        self._index()

    def matches(self, tensors: list[torch.Tensor]) -> bool | None:
        """Whether ``tensors`` hold the snapshot's values byte for byte; ``None`` where this cannot
        tell (no kernel library, tensors not contiguous on CPU, or of another layout than the
        snapshot's): the caller then compares values itself."""
        lib = native_library()
        if lib is None or not self._cpu_contiguous or len(tensors) != len(self.layout):
            return None
        if [(t.shape, t.dtype, t.device, t.is_contiguous()) for t in tensors] != self.layout:
            return None
        ptrs = (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])
        return bool(lib.tdnzoo_same_bytes(len(tensors), ptrs, self._ptrs, self._sizes))


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _GateTemporalConv(torch.autograd.Function):
    """``tconv(x + 0.5 * x * (sigmoid(lf) - sigmoid(lb)))`` with a one-pass backward (C kernels)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lf: torch.Tensor, lb: torch.Tensor, taps: torch.Tensor | None,
                num_segments: int, lib: ctypes.CDLL) -> torch.Tensor:
        n, channels, h, w = x.shape
        x, lf, lb = x.contiguous(), lf.contiguous(), lb.contiguous()
        taps_flat = None if taps is None else taps.detach().reshape(channels, 3).contiguous()
        out = torch.empty_like(x)
        with _profiled("tdnzoo::gate_tconv_forward"):
            lib.tdnzoo_gate_tconv_forward(x.data_ptr(), lf.data_ptr(), lb.data_ptr(), _ptr(taps_flat), out.data_ptr(),
                                          n // num_segments, num_segments, channels, h * w, torch.get_num_threads())
        ctx.save_for_backward(x, lf, lb, taps_flat)
        ctx.num_segments, ctx.lib, ctx.taps_shape = num_segments, lib, None if taps is None else taps.shape
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, lf, lb, taps = ctx.saved_tensors
        n, channels, h, w = x.shape
        clips = n // ctx.num_segments
        grad = grad.contiguous()
        gx, glf, glb = torch.empty_like(x), torch.empty_like(lf), torch.empty_like(lb)
        gtw = None if taps is None else torch.zeros(clips, channels, 3, dtype=torch.float64)
        with _profiled("tdnzoo::gate_tconv_backward"):
            ctx.lib.tdnzoo_gate_tconv_backward(
                grad.data_ptr(), x.data_ptr(), lf.data_ptr(), lb.data_ptr(), _ptr(taps), gx.data_ptr(), glf.data_ptr(),
                glb.data_ptr(), _ptr(gtw), clips, ctx.num_segments, channels, h * w, torch.get_num_threads(),
            )
        grad_taps = None if gtw is None else gtw.sum(0).to(x.dtype).view(ctx.taps_shape)
        return gx, glf, glb, grad_taps, None, None


def gate_temporal_conv(
    x: torch.Tensor, lf: torch.Tensor, lb: torch.Tensor, taps: torch.Tensor | None, num_segments: int
) -> torch.Tensor | None:
    """The L-TDM output ``x + 0.5 * x * (sigmoid(lf) - sigmoid(lb))`` and the temporal conv by ``taps``
    (``[C, 1, 3]``, or ``None`` for none), under autograd; see the C source.

    ``x``, ``lf``, ``lb`` ``[N, C, H, W]`` float32 CPU. ``None`` when the kernels are unavailable
    or the inputs do not suit them.
    """
    lib = native_library()
    tensors = [x, lf, lb] + ([] if taps is None else [taps])
    if lib is None or x.dim() != 4 or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    n, channels = x.shape[:2]
    if n % num_segments or lf.shape != x.shape or lb.shape != x.shape:
        return None
    if taps is not None and taps.shape != (channels, 1, 3):
        return None
    return _GateTemporalConv.apply(x, lf, lb, taps, num_segments, lib)
