"""Test weights that make every path of a randomly initialised model count."""
from __future__ import annotations

import torch
from torch import nn


def activate(model: nn.Module, seed: int = 0) -> nn.Module:
    """Randomise norm layers and layer scales so that every residual branch changes the output.

    timm zero-initialises the last BatchNorm of each ResNet block and starts ConvNeXt's layer scale
    at 1e-6: at init the temporal modules inside those branches (shift, L-TDM, temporal conv) do not
    change the logits, and no parity test could tell a correct export or compile from a broken one.
    """
    g = torch.Generator().manual_seed(seed)

    def like(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(t.shape, generator=g)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(like(m.weight, 0.5, 1.5))
                if getattr(m, "bias", None) is not None:
                    m.bias.copy_(like(m.bias, -0.2, 0.2))
                if getattr(m, "running_mean", None) is not None:
                    m.running_mean.copy_(like(m.running_mean, -0.2, 0.2))
                    m.running_var.copy_(like(m.running_var, 0.5, 1.5))
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] == "gamma":  # timm's layer scale
                p.copy_(like(p, 0.5, 1.5))
    return model
