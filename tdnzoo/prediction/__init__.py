"""Prediction on video files: top classes of whole videos, and scores along long ones.

* :func:`predict` (also ``tdnzoo.predict``): top-k classes per video, sampled and transformed as
  the model's pretrained cfg says (segments, frames per segment, input size, mean/std, test views),
  softmax averaged over the views; unreadable videos come back with an ``error``.
* :func:`predict_windows`: sliding windows along a long video, scores per window, written as
  CSV/JSON and a PNG timeline (:meth:`WindowScores.save`).
* :func:`resolve_view_spec` / :class:`ViewSpec`: the sampling and transform, inspectable.

Example:
    >>> import tdnzoo
    >>> for p in tdnzoo.predict(["a.mp4", "b.mp4"], "tdn_resnet50.sthv2_8f", top_k=3):
    ...     print(p.video, p.error or [(c.label, round(c.prob, 3)) for c in p.top_k])
"""
from .loading import class_names_of, load_predict_model
from .report import format_predictions, format_segments
from .scoring import ViewScorer
from .spec import ViewSpec, dense_clip_indices, resolve_view_spec
from .videos import ClassScore, Prediction, predict, run_predictions, top_classes
from .windows import WindowScores, parse_span, predict_windows, score_windows, window_bounds

__all__ = [
    "ClassScore",
    "Prediction",
    "ViewScorer",
    "ViewSpec",
    "WindowScores",
    "class_names_of",
    "dense_clip_indices",
    "format_predictions",
    "format_segments",
    "load_predict_model",
    "parse_span",
    "predict",
    "predict_windows",
    "resolve_view_spec",
    "run_predictions",
    "score_windows",
    "top_classes",
    "window_bounds",
]
