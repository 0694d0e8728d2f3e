"""ONNX export of TSN, TSM and TDN, checked against PyTorch with onnxruntime.

The exported graph takes the model's input as is: ``video`` ``[B, T, 3, H, W]`` float32, ``T =
num_segments * frames_per_segment`` (segment-major), RGB scaled to ``[0, 1]`` then normalised with
the recorded mean/std; it returns ``logits`` ``[B, num_classes]``. Everything a runtime needs to
feed it (layout, normalisation, segments, labels) is written into the model's ``metadata_props``.

Exports that silently disagree with PyTorch were a recurring complaint about TSM (an in-place
shift that tracing drops), so :func:`export_onnx` runs the written graph in onnxruntime on random
clips and refuses a file whose logits differ from PyTorch's by more than ``rtol`` of the largest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TdnzooError
from ..models.description import describe_model
from ..version import __version__

if TYPE_CHECKING:
    from ..models import VideoClassifier

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_EXPORTERS",
    "OnnxExport",
    "OnnxExportError",
    "OnnxParityError",
    "export_onnx",
    "onnx_metadata",
    "read_onnx_metadata",
    "verify_onnx",
]

# "torchscript" (torch.onnx's tracing exporter) is the default: in torch 2.14 it exports all
# three methods exactly, keeps the batch axis dynamic, and runs in about a second on small
# models. The torch.export-based "dynamo" exporter is exact too, but ~15x slower, and on TDN it
# silently fixes the batch axis that was asked to be dynamic (export_onnx detects and refuses it).
ONNX_EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 18
INPUT_NAME = "video"
OUTPUT_NAME = "logits"
DEFAULT_RTOL = 1e-4
# metadata_props are strings; these keys hold JSON (numbers, lists, booleans, dicts).
_JSON_KEYS = frozenset({
    "num_classes", "num_segments", "frames_per_segment", "num_frames", "input_shape", "image_size", "mean",
    "std", "crop_pct", "label_names", "dynamic_batch", "opset", "pretrained_cfg", "description",
})


class OnnxExportError(TdnzooError, RuntimeError):
    """An ONNX export that failed or produced an unusable file."""


class OnnxParityError(OnnxExportError):
    """onnxruntime's output differs from PyTorch's: the exported graph is not the model.

    Attributes:
        error: ``max |onnx - torch| / max |torch|`` of the failing run.
        tolerance: the largest relative error allowed.
        batch_size: the batch size of the failing run.
    """

    def __init__(self, message: str, *, error: float, tolerance: float, batch_size: int) -> None:
        super().__init__(message)
        self.error = error
        self.tolerance = tolerance
        self.batch_size = batch_size


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        metadata: the ``metadata_props`` written into it (strings; JSON for non-text values).
        max_error: worst ``max |onnx - torch| / max |torch|`` over the verification runs, or
            ``None`` when not verified.
        verified_batch_sizes: the batch sizes onnxruntime was checked at.
    """

    path: Path
    metadata: dict[str, str] = field(repr=False)
    max_error: float | None
    verified_batch_sizes: tuple[int, ...]


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise OnnxExportError(
            f"ONNX export needs the onnx and onnxruntime packages ({exc}); install them with "
            "`pip install 'tdnzoo[export]'`"
        ) from exc
    return onnx, onnxruntime


def _image_size(model: VideoClassifier, image_size: int | Sequence[int] | None) -> tuple[int, int]:
    if image_size is None:
        size = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))[-2:]
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return int(size[0]), int(size[1])


def onnx_metadata(
    model: VideoClassifier,
    *,
    image_size: tuple[int, int],
    batch_size: int | str = "batch",
    exporter: str = "torchscript",
    opset: int = DEFAULT_OPSET,
    model_name: str | None = None,
) -> dict[str, str]:
    """The ``metadata_props`` recorded in an export: how to feed the graph and read its output.

    Args:
        model: the exported model.
        image_size: ``(height, width)`` of the exported input.
        batch_size: the batch axis: an int when fixed, a name such as ``'batch'`` when dynamic.
        exporter: the torch.onnx exporter used.
        opset: the ONNX opset.
        model_name: the name the model was created from (``arch.tag``); defaults to the architecture.

    Example:
        >>> meta = onnx_metadata(model, image_size=(224, 224))
        >>> json.loads(meta['input_shape'])
        ['batch', 40, 3, 224, 224]
    """
    cfg = dict(model.pretrained_cfg)
    labels = cfg.pop("label_names", None)
    h, w = image_size
    architecture = str(cfg.get("architecture") or f"{model.method}_{model.backbone_name}")
    values: dict[str, Any] = {
        "tdnzoo_version": __version__,
        "model_name": model_name or architecture,
        "architecture": architecture,
        "method": model.method,
        "backbone": model.backbone_name,
        "num_classes": int(model.num_classes),
        "num_segments": int(model.num_segments),
        "frames_per_segment": int(model.frames_per_segment),
        "num_frames": int(model.num_frames),
        "input_name": INPUT_NAME,
        "input_shape": [batch_size, int(model.num_frames), 3, h, w],
        "input_layout": "[B, T, 3, H, W]",
        "input_dtype": "float32",
        "frame_order": "segment-major: frame index t = segment * frames_per_segment + frame_in_segment, "
        "T = num_segments * frames_per_segment",
        "color_order": "RGB",
        "normalization": "input = (pixel / 255 - mean) / std, per RGB channel",
        "mean": [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))],
        "std": [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))],
        "image_size": [h, w],
        "output_name": OUTPUT_NAME,
        "output": "logits [B, num_classes]: mean over segments of per-segment logits (softmax gives probabilities)",
        "dynamic_batch": not isinstance(batch_size, int),
        "exporter": exporter,
        "opset": int(opset),
        "torch_version": torch.__version__,
    }
    for key in ("interpolation", "crop_pct"):
        if cfg.get(key) is not None:
            values[key] = cfg[key]
    if labels is not None:
        values["label_names"] = [str(name) for name in labels]
    # The whole description (tdnzoo.models.description), as config.json and training checkpoints hold it.
    described = describe_model(model)
    values["description"] = dataclasses.replace(described, input_size=h if h == w else described.input_size).to_dict()
    values["pretrained_cfg"] = cfg
    return {k: json.dumps(v, default=str) if k in _JSON_KEYS else str(v) for k, v in values.items()}


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The tdnzoo metadata of an exported ``.onnx`` file, JSON values decoded.

    Example:
        >>> meta = read_onnx_metadata('tsm_resnet50.onnx')
        >>> meta['num_segments'], meta['mean']
        (8, [0.485, 0.456, 0.406])
    """
    onnx, _ = _require_onnx()
    proto = onnx.load(os.fspath(path), load_external_data=False)
    meta: dict[str, Any] = {}
    for prop in proto.metadata_props:
        meta[prop.key] = prop.value
        if prop.key in _JSON_KEYS:
            with contextlib.suppress(ValueError):  # another producer's plain string stays a string
                meta[prop.key] = json.loads(prop.value)
    return meta


def _session(onnx_model: str | os.PathLike | bytes) -> Any:
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    source = onnx_model if isinstance(onnx_model, bytes) else os.fspath(onnx_model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


@contextlib.contextmanager
def _inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no grad for the duration; the caller's mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _param_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    return (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)


def verify_onnx(
    model: VideoClassifier,
    onnx_model: str | os.PathLike | bytes,
    *,
    batch_sizes: Sequence[int] | None = None,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> float:
    """Check that onnxruntime reproduces the model's logits on random clips.

    Args:
        model: the PyTorch model the file was exported from.
        onnx_model: the ``.onnx`` path or its serialized bytes.
        batch_sizes: batches to run; default ``(1, 2)`` when the batch axis is dynamic, else the fixed one.
        rtol: allowed ``max |onnx - torch|`` as a fraction of the largest ``|torch|`` logit.
        seed: seed of the random clips.

    Returns:
        The worst ``max |onnx - torch| / max |torch|`` over the runs.

    Raises:
        OnnxParityError: a run differs by more than ``rtol``, or onnxruntime cannot run it.

    Example:
        >>> verify_onnx(model, 'tsm_resnet50.onnx', batch_sizes=(1, 3))
        1.9e-07
    """
    session = _session(onnx_model)
    spec = session.get_inputs()[0]
    dims = list(spec.shape)
    if len(dims) != 5 or not all(isinstance(d, int) for d in dims[1:]):
        raise OnnxExportError(f"expected an input [B, T, 3, H, W] with fixed T, H, W, got {spec.name} {dims}")
    fixed_batch = dims[0] if isinstance(dims[0], int) else None
    if batch_sizes is None:
        batch_sizes = (fixed_batch,) if fixed_batch else (1, 2)
    elif fixed_batch and any(b != fixed_batch for b in batch_sizes):
        raise ValueError(f"the export has a fixed batch of {fixed_batch}, cannot verify batch sizes {tuple(batch_sizes)}")
    device, dtype = _param_device_dtype(model)
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    with _inference(model):
        for b in batch_sizes:
            x = torch.randn(b, *dims[1:], generator=generator)
            expected = model(x.to(device=device, dtype=dtype)).double().cpu()
            try:
                (got,) = session.run([OUTPUT_NAME], {spec.name: x.numpy()})
            except Exception as exc:  # onnxruntime raises its own exception types
                raise OnnxParityError(
                    f"onnxruntime could not run the export at batch size {b} ({exc}); the exported graph "
                    "does not accept the model's input", error=float("inf"), tolerance=rtol, batch_size=b,
                ) from exc
            got = torch.from_numpy(got).double()
            if got.shape != expected.shape:
                raise OnnxParityError(
                    f"onnxruntime returned logits of shape {tuple(got.shape)} at batch size {b}, PyTorch "
                    f"{tuple(expected.shape)}", error=float("inf"), tolerance=rtol, batch_size=b,
                )
            scale = float(expected.abs().max())
            diff = float((got - expected).abs().max())
            error = diff / scale if scale > 0 else diff
            if not error <= rtol:  # also catches NaN
                raise OnnxParityError(
                    f"onnxruntime disagrees with PyTorch at batch size {b}: max |onnx - torch| = {diff:.3g} is "
                    f"{error:.3g} of the largest logit ({scale:.3g}), tolerance {rtol:g}. The exported graph "
                    "computes something else than the model (an op the exporter dropped or traced wrongly, "
                    "e.g. an in-place temporal shift)",
                    error=error, tolerance=rtol, batch_size=b,
                )
            worst = max(worst, error)
    return worst


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' known, harmless warnings; others still show."""
    with warnings.catch_warnings():
        # Shape checks in tdnzoo's forward become constants in a trace: intended (the shapes are
        # fixed but for the batch), and verify_onnx would catch anything else.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"tdnzoo\.")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
        yield


def _export_proto(
    model: torch.nn.Module, example: torch.Tensor, *, exporter: str, opset: int, dynamic_batch: bool
) -> Any:
    onnx, _ = _require_onnx()
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    has_dynamo_flag = "dynamo" in inspect.signature(torch.onnx.export).parameters
    if exporter == "torchscript":
        import io

        buffer = io.BytesIO()
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
        extra = {"dynamo": False} if has_dynamo_flag else {}
        torch.onnx.export(model, (example,), buffer, dynamic_axes=axes, do_constant_folding=True, **names, **extra)
        return onnx.load_from_string(buffer.getvalue())
    if not has_dynamo_flag:
        raise OnnxExportError(f"the dynamo exporter needs a newer torch than {torch.__version__}")
    shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    program = torch.onnx.export(
        model, (example,), None, dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False, **names
    )
    return program.model_proto


def export_onnx(
    model: VideoClassifier,
    path: str | os.PathLike,
    *,
    image_size: int | Sequence[int] | None = None,
    batch_size: int = 1,
    dynamic_batch: bool = False,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    verify: bool = True,
    rtol: float = DEFAULT_RTOL,
    model_name: str | None = None,
) -> OnnxExport:
    """Export a TSN, TSM or TDN model to ONNX, recording how to feed it, and check it against PyTorch.

    The file is written only once onnxruntime's logits match the model's (unless ``verify=False``),
    so a graph that silently computes something else never reaches disk.

    Args:
        model: a :class:`~tdnzoo.VideoClassifier` (float32); its train/eval mode is left as found.
        path: the ``.onnx`` file to write (parent folders are created).
        image_size: frame ``H, W`` of the exported input (int or pair); default the model's ``input_size``.
        batch_size: the fixed batch size, when ``dynamic_batch`` is off.
        dynamic_batch: make the batch axis dynamic (named ``batch``).
        opset: ONNX opset.
        exporter: ``'torchscript'`` (default) or ``'dynamo'``, see ``ONNX_EXPORTERS``.
        verify: check with onnxruntime on random clips (batch 1 and 2 when dynamic).
        rtol: allowed ``max |onnx - torch|`` as a fraction of the largest logit.
        model_name: the name the model came from (``arch.tag``), for the metadata.

    Returns:
        An :class:`OnnxExport` with the path, the metadata written and the verified error.

    Raises:
        OnnxParityError: onnxruntime disagrees with PyTorch (nothing is written).
        OnnxExportError: the exporter failed, or lost the dynamic batch axis.
        ValueError: bad arguments, or frames too small for the backbone.

    Example:
        >>> model = tdnzoo.create_model('tsm_resnet50', num_segments=8)
        >>> export_onnx(model, 'tsm_resnet50.onnx', dynamic_batch=True).max_error < 1e-4
        True
    """
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"unknown exporter '{exporter}': expected one of {', '.join(ONNX_EXPORTERS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol}")
    onnx, _ = _require_onnx()
    size = _image_size(model, image_size)
    device, dtype = _param_device_dtype(model)
    # Batch 2 for a dynamic axis: torch.export specialises example dimensions of size 1.
    example_batch = 2 if dynamic_batch else batch_size
    generator = torch.Generator().manual_seed(1)  # verify_onnx uses other clips than the trace
    example = torch.randn(example_batch, model.num_frames, 3, *size, generator=generator).to(device, dtype)

    with _inference(model):
        model(example)  # the model's own input check (frames too small, ...) raises a clear ValueError here
        try:
            with _quiet_export():
                proto = _export_proto(model, example, exporter=exporter, opset=opset, dynamic_batch=dynamic_batch)
        except (TdnzooError, ValueError):
            raise
        except Exception as exc:
            other = next(e for e in ONNX_EXPORTERS if e != exporter)
            raise OnnxExportError(
                f"torch.onnx's {exporter} exporter failed on {model.pretrained_cfg.get('architecture', 'the model')} "
                f"at opset {opset}: {type(exc).__name__}: {exc}. Try exporter='{other}' (--exporter {other}) "
                "or another opset"
            ) from exc

    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    if dynamic_batch and not batch_dim.dim_param:
        raise OnnxExportError(
            f"the {exporter} exporter fixed the batch axis to {batch_dim.dim_value} although dynamic_batch was "
            "asked for; export with exporter='torchscript', or with a fixed batch_size"
        )
    metadata = onnx_metadata(
        model, image_size=size, batch_size=batch_dim.dim_param or batch_size, exporter=exporter, opset=opset,
        model_name=model_name,
    )
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = (
        f"tdnzoo {metadata['model_name']}: video [B, {model.num_frames}, 3, {size[0]}, {size[1]}] -> "
        f"logits [B, {model.num_classes}]. See metadata_props for layout and normalisation."
    )
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    max_error, checked = None, ()
    if verify:
        checked = (1, 2) if dynamic_batch else (batch_size,)
        max_error = verify_onnx(model, data, batch_sizes=checked, rtol=rtol)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)  # no half-written .onnx if interrupted
    return OnnxExport(path=path, metadata=metadata, max_error=max_error, verified_batch_sizes=tuple(checked))
