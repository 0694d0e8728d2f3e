"""The explicit inference step: a copy of a model with BatchNorm folded into the convolutions.

As timm's ``reparameterize_model``: done once, on request, never inside a forward. Training code
never sees the folded form.
"""
from __future__ import annotations

import copy
from collections import OrderedDict, defaultdict

import torch
from timm.layers import BatchNormAct2d
from timm.utils import reparameterize_model
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norms", "fuse_for_inference"]


def fuse_for_inference(model: nn.Module, *, inplace: bool = False, example: torch.Tensor | None = None) -> nn.Module:
    """An eval-mode model with the same outputs (up to float rounding) and fewer passes.

    Reparameterizable blocks are collapsed (``timm.utils.reparameterize_model``: RepVGG, MobileOne,
    FastViT, ...; tdnzoo's :class:`~tdnzoo.layers.LongTermTDM` folds its own BatchNorms there),
    then every remaining BatchNorm that directly follows a convolution is folded into it. The
    result is for inference only: its BatchNorms are gone, so it must not be trained.

    Args:
        model: a tdnzoo video model (or any module taking ``example``).
        inplace: fold ``model`` itself instead of a copy.
        example: an input used to find which convolution feeds which BatchNorm; by default a
            zero clip ``[1, num_frames, 3, S, S]`` at the model's smallest convenient size.

    Example:
        >>> fast = tdnzoo.fuse_for_inference(model)
        >>> torch.compile(fast)(clip)  # doctest: +SKIP
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    if example is None:
        example = _example_clip(model)
    reparameterize_model(model, inplace=True)
    fold_batch_norms(model, example)
    return model


def _example_clip(model: nn.Module) -> torch.Tensor:
    frames = getattr(model, "num_frames", None)
    if frames is None:
        raise ValueError("give an example input: the model has no num_frames to build a clip from")
    size = max(64, 2 * int(getattr(model, "min_size", 32)))
    param = next(model.parameters(), None)
    device = param.device if param is not None else None
    generator = torch.Generator().manual_seed(0)
    return torch.randn(1, frames, 3, size, size, generator=generator).to(device)


def fold_batch_norms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold each eval-mode BatchNorm into the convolution whose output it normalises; returns how many.

    Pairs are found by running ``example`` once and matching each BatchNorm's input to the
    convolution output it is (the same tensor object), so the folding follows the model's real
    forward, whatever its container types. Only pairs where both modules run the same number of
    times and always together are folded. timm's ``BatchNormAct2d`` keeps its dropout and activation.
    """
    convs = {id(m): m for m in model.modules() if type(m) is nn.Conv2d}
    norms = {id(m): m for m in model.modules() if type(m) in (nn.BatchNorm2d, BatchNormAct2d)}
    produced_by: dict[int, tuple[int, torch.Tensor]] = {}  # id(output) -> (id(conv), output kept alive)
    calls: dict[int, int] = defaultdict(int)
    fed_by: dict[int, set[int | None]] = defaultdict(set)  # id(norm) -> ids of the convs that fed it

    def after_conv(module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
        calls[id(module)] += 1
        produced_by[id(output)] = (id(module), output)  # kept: a freed tensor's id could be reused

    def before_norm(module: nn.Module, args: tuple) -> None:
        calls[id(module)] += 1
        fed_by[id(module)].add(produced_by.get(id(args[0]), (None,))[0])

    handles = [m.register_forward_hook(after_conv) for m in convs.values()]
    handles += [m.register_forward_pre_hook(before_norm) for m in norms.values()]
    try:
        with torch.no_grad():
            expected = model(example)
    finally:
        for handle in handles:
            handle.remove()
    produced_by.clear()

    pairs = {}
    for norm_id, sources in fed_by.items():
        (conv_id,) = sources if len(sources) == 1 else (None,)
        if conv_id is not None and calls[conv_id] == calls[norm_id] and conv_id not in pairs.values():
            pairs[norm_id] = conv_id
    replacements: dict[int, nn.Module] = {}
    for norm_id, conv_id in pairs.items():
        norm, conv = norms[norm_id], convs[conv_id]
        replacements[conv_id] = fuse_conv_bn_eval(conv, norm)
        # BatchNormAct2d keeps its dropout and activation under their names (paths into them stay valid).
        after = nn.Identity() if type(norm) is nn.BatchNorm2d else nn.Sequential(OrderedDict(drop=norm.drop, act=norm.act))
        replacements[norm_id] = after
    _replace_modules(model, replacements)
    with torch.no_grad():
        got = model(example)
    # A convolution whose output also went elsewhere than its BatchNorm would now be wrong there.
    error = float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12))
    if error > 1e-4:
        raise RuntimeError(f"folding BatchNorm changed the output by {error:.2g} of its largest value")
    return len(pairs)


def _replace_modules(model: nn.Module, replacements: dict[int, nn.Module]) -> None:
    """Swap every submodule whose ``id`` is in ``replacements``, wherever it is registered."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
