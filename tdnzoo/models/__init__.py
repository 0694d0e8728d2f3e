"""Video models, their names and their weights.

- the architecture: :mod:`.methods` (the method table: blocks, presets, compositions), :mod:`.video`
  (the classifier, ``temporalize``), :mod:`.backbone` (where the modules go)
  and :mod:`.contract` (timm's model contract: features, checkpointing, parameter groups, fx; ``torch.export`` ahead of time);
- names and weights: :mod:`.registry` (names, ``list_models``), :mod:`.pretrained` (one metadata record
  per released weight), :mod:`.checkpoint` and :mod:`.official` (reading, converting, writing weights),
  :mod:`.zoo_table` (the README's table from the records);
- building: :mod:`.factory` (``create_model``) and :mod:`.builder`, the one path that builds a model.
"""
from .backbone import analyze_backbone
from .causal import is_causal
from .checkpoint import load_checkpoint, save_weights
from .contract import VideoFeatures
from .factory import create_model
from .inference import fold_batch_norms, fuse_for_inference
from .insertion import TemporalInsert
from .methods import METHOD_TABLE, MethodPreset, TemporalBlock, register_method
from .pretrained import PRETRAINED_CFGS, get_pretrained_cfg, register_pretrained_cfg
from .registry import COMMON_BACKBONES, list_models, list_pretrained, parse_model_name
from .streaming import Streamer, stream
from .video import METHODS, VideoClassifier, official_fusion_weights, temporalize

__all__ = [
    "fold_batch_norms",
    "fuse_for_inference",
    "COMMON_BACKBONES",
    "METHODS",
    "METHOD_TABLE",
    "MethodPreset",
    "PRETRAINED_CFGS",
    "Streamer",
    "TemporalBlock",
    "TemporalInsert",
    "VideoClassifier",
    "VideoFeatures",
    "analyze_backbone",
    "create_model",
    "get_pretrained_cfg",
    "is_causal",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "official_fusion_weights",
    "parse_model_name",
    "register_method",
    "register_pretrained_cfg",
    "save_weights",
    "stream",
    "temporalize",
]
