"""Video models: the classifier, the factory and the registry."""
from .backbone import analyze_backbone
from .factory import create_model
from .inference import fold_batch_norms, fuse_for_inference
from .insertion import TemporalInsert
from .registry import COMMON_BACKBONES, list_models, parse_model_name
from .video import METHODS, VideoClassifier, official_fusion_weights, temporalize

__all__ = [
    "fold_batch_norms",
    "fuse_for_inference",
    "COMMON_BACKBONES",
    "METHODS",
    "TemporalInsert",
    "VideoClassifier",
    "analyze_backbone",
    "create_model",
    "list_models",
    "official_fusion_weights",
    "parse_model_name",
    "temporalize",
]
