"""Causal models: the temporal layers of a TSM or TDN made to read the past only, for live video.

``temporalize(..., causal=True)`` (and ``create_model(name, causal=True)`` or a ``+causal`` name such as
``tsm+causal_resnet50``) builds every temporal layer causal from the method table
(:attr:`~tdnzoo.models.methods.BuildOptions.causal`). :func:`make_causal` does the same to a model that
exists, swapping each temporal layer for its causal construction (:class:`~tdnzoo.layers.TemporalShift`,
:class:`~tdnzoo.layers.TemporalConv`, :class:`~tdnzoo.layers.LongTermTDM` with ``causal=True``): same
modules, parameters and ``state_dict`` keys, so an offline checkpoint loads into a causal model.
S-TDM reads the frames of its own segment only and TSN has no temporal layer: both stay.
A causal model's segment ``t`` never sees a later segment, which is what lets
:func:`tdnzoo.stream` run it one segment at a time.
"""
from __future__ import annotations

from torch import nn

from ..layers import LongTermTDM, TemporalConv, TemporalShift

__all__ = ["TEMPORAL_LAYERS", "causal_layer", "is_causal", "make_causal"]

TEMPORAL_LAYERS = (TemporalShift, TemporalConv, LongTermTDM)


def causal_layer(layer: nn.Module) -> nn.Module:
    """The causal construction of a temporal layer (a causal one is returned as it is).

    L-TDM keeps its weights (the causal module has the same ones). The temporal conv starts
    again from the causal shift kernel: this is for a model being built, whose weights are its
    initialisation (the offline kernel's look-ahead tap would leave ``1/fold_div`` of the channels at zero).
    """
    if getattr(layer, "causal", False):
        return layer
    if isinstance(layer, TemporalShift):
        return TemporalShift(layer.num_segments, layer.fold_div, causal=True)
    if isinstance(layer, TemporalConv):
        return TemporalConv(layer.channels, layer.num_segments, layer.fold_div, causal=True).to(layer.weight)
    if isinstance(layer, LongTermTDM):
        causal = LongTermTDM(layer.channels, layer.num_segments, layer.reduction, causal=True)
        causal.load_state_dict(layer.state_dict())
        return causal.to(next(layer.parameters())).train(layer.training)
    raise TypeError(f"{type(layer).__name__} is not a tdnzoo temporal layer")


def make_causal(module: nn.Module) -> nn.Module:
    """Swap, in place, every temporal layer inside ``module`` for its :func:`causal_layer`; returns ``module``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TEMPORAL_LAYERS):
                setattr(parent, name, causal_layer(child))
    return module


def is_causal(model: nn.Module) -> bool:
    """Whether every temporal layer of ``model`` reads the past only (true of a TSN, which has none)."""
    return all(getattr(m, "causal", False) for m in model.modules() if isinstance(m, TEMPORAL_LAYERS))
