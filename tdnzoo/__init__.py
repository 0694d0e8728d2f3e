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
    VideoClassifier,
    create_model,
    get_pretrained_cfg,
    list_models,
    list_pretrained,
    load_checkpoint,
    save_weights,
    temporalize,
)
from .version import __version__

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "METHODS",
    "TdnzooError",
    "UnknownModelError",
    "UnsupportedBackboneError",
    "VideoClassifier",
    "__version__",
    "create_model",
    "get_pretrained_cfg",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "load_label_names",
    "predict",
    "push_to_hub",
    "save_pretrained",
    "save_weights",
    "temporalize",
]


def __getattr__(name: str):
    # ``tdnzoo.predict`` brings the video stack (PyAV, torchvision transforms) on first use: `import tdnzoo` stays light.
    if name == "predict":
        from .prediction import predict

        return predict
    raise AttributeError(f"module 'tdnzoo' has no attribute {name!r}")
