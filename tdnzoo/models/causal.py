"""Causal models: the temporal layers of a TSM or TDN made to read the past only, for live video.

``temporalize(..., causal=True)`` (and ``create_model(name, causal=True)`` or a ``+causal`` name such as
``tsm+causal_resnet50``) builds every temporal layer causal from the method table
(:attr:`~tdnzoo.models.methods.BuildOptions.causal`): :class:`~tdnzoo.layers.TemporalShift`,
:class:`~tdnzoo.layers.TemporalConv` and :class:`~tdnzoo.layers.LongTermTDM` with ``causal=True``, the
same modules, parameters and ``state_dict`` keys, so an offline checkpoint loads into a causal model.
S-TDM reads the frames of its own segment only and TSN has no temporal layer: both stay.
A causal model's segment ``t`` never sees a later segment, which is what lets
:func:`tdnzoo.stream` run it one segment at a time.
"""
from __future__ import annotations

from torch import nn

from ..layers import LongTermTDM, TemporalConv, TemporalShift

__all__ = ["TEMPORAL_LAYERS", "is_causal"]

TEMPORAL_LAYERS = (TemporalShift, TemporalConv, LongTermTDM)


def is_causal(model: nn.Module) -> bool:
    """Whether every temporal layer of ``model`` reads the past only (true of a TSN, which has none)."""
    return all(getattr(m, "causal", False) for m in model.modules() if isinstance(m, TEMPORAL_LAYERS))
