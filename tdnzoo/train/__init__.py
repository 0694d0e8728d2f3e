"""Training: ``train(TrainConfig(...))`` or ``python -m tdnzoo train``; DDP under torchrun.

* :class:`TrainConfig`: every option, official recipe defaults, YAML-loadable.
* :func:`train`: the loop (checkpoints every epoch, ``resume``, metrics log, DDP).
* :func:`build_optimizer`, :func:`build_scheduler`: SGD/AdamW, step/cosine with warm-up.
* :func:`load_training_checkpoint`, :func:`save_atomic`: the checkpoint format.
"""
from .config import TrainConfig, load_config_file
from .distributed import DistInfo, ShardSampler, setup_distributed
from .loop import TrainingError, TrainResult, apply_bn_mode, build_datasets, train, validate
from .metrics import MetricsLog, topk_correct
from .optim import build_optimizer, build_scheduler
from .state import capture_rng, load_training_checkpoint, restore_rng, save_atomic, unwrap_model

__all__ = [
    "DistInfo",
    "MetricsLog",
    "ShardSampler",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "apply_bn_mode",
    "build_datasets",
    "build_optimizer",
    "build_scheduler",
    "capture_rng",
    "load_config_file",
    "load_training_checkpoint",
    "restore_rng",
    "save_atomic",
    "setup_distributed",
    "topk_correct",
    "train",
    "unwrap_model",
    "validate",
]
