"""tdnzoo: TSN, TSM and TDN video models on any timm 2D backbone."""
from .errors import (
    CheckpointError,
    CheckpointMismatchError,
    TdnzooError,
    UnknownModelError,
    UnsupportedBackboneError,
)
from .hub import push_to_hub, save_pretrained
from .labels import load_label_names
from .models import (
    METHODS,
    MethodPreset,
    TemporalBlock,
    VideoClassifier,
    create_model,
    fuse_for_inference,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    load_checkpoint,
    register_method,
    save_weights,
    stream,
    temporalize,
)
from .version import __version__

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "METHODS",
    "MethodPreset",
    "TdnzooError",
    "TemporalBlock",
    "UnknownModelError",
    "UnsupportedBackboneError",
    "VideoClassifier",
    "__version__",
    "count_flops",
    "create_model",
    "fuse_for_inference",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "load_label_names",
    "predict",
    "push_to_hub",
    "register_method",
    "save_pretrained",
    "save_weights",
    "stream",
    "temporalize",
]


_LAZY = ("count_flops", "predict")


def __getattr__(name: str):
    # Imported on first use so that `import tdnzoo` stays light: ``predict`` brings the video stack (PyAV,
    # torchvision transforms), ``count_flops`` fvcore and the benchmark package.
    if name == "predict":
        from .prediction import predict

        return predict
    if name == "count_flops":
        from .bench.flops import count_flops

        return count_flops
    raise AttributeError(f"module 'tdnzoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
