"""Evaluation with the official protocols: ``CLIPSxCROPS`` views per video, softmax averaged over views.

* :func:`evaluate`: run a model over a test-mode :class:`~tdnzoo.data.VideoDataset` (one process,
  or sharded under torchrun and gathered), returning an :class:`EvalResult` with top-1, top-5,
  mean class accuracy and the confusion matrix.
* :func:`load_eval_model`: a model from a zoo name/tag, an export, a weights file, or a training checkpoint.
* :func:`write_report`: ``report.json``, ``report.md`` (published numbers beside measured ones
  when the model's pretrained cfg has them) and ``confusion.png``.

Example:
    >>> model = load_eval_model("tdn_resnet50.sthv1_8f")
    >>> ds = build_eval_dataset(model, dataset="sthv1", root="data", list_file="val.txt", views="1x1")
    >>> result = evaluate(model, ds, batch_size=4)
    >>> result.top1, result.top5
"""
from .dataset import build_eval_dataset
from .model import load_described_model, load_eval_model, read_training_meta
from .report import published_numbers, write_report
from .runner import evaluate
from .scores import EvalResult, average_view_scores

__all__ = [
    "EvalResult",
    "average_view_scores",
    "build_eval_dataset",
    "evaluate",
    "load_described_model",
    "load_eval_model",
    "published_numbers",
    "read_training_meta",
    "write_report",
]
