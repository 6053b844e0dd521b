"""Exponential moving average of a model's weights: the weights inference uses after training."""

from __future__ import annotations

from typing import Dict

import torch
from torch import nn


class EMA:
    """Float32 shadow copy of every parameter and buffer, updated as ``shadow = d * shadow + (1 - d) * param``.

    ``decay`` is the long-run decay; with ``warmup`` the decay of update number ``n`` (1-based) is
    ``min(decay, (1 + n) / (10 + n))``, so short runs and fresh fine-tunes are not dominated by the
    initial weights. The shadow lives on the model's device; ``state_dict``/``load_state_dict`` make it
    part of a training checkpoint (exact resume).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: Dict[str, torch.Tensor] = {
            name: value.detach().float().clone() for name, value in model.state_dict().items()
        }
        self._live = None  # (model, shadows, its tensors, others): see _pairs

    def current_decay(self) -> float:
        """The decay the next update will use."""
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards ``model``'s current weights (call once per optimiser step).

        One multi-tensor ``lerp`` over all floating-point weights (shadow + (1 - d) * (w - shadow), equal to
        d * shadow + (1 - d) * w up to float rounding); the model's tensors are looked up once per model.
        """
        decay = self.current_decay()
        shadows, values, others = self._pairs(model)
        if shadows:
            if any(v.dtype != torch.float32 for v in values):
                values = [v.float() for v in values]
            torch._foreach_lerp_(shadows, values, 1.0 - decay)
        for shadow, value in others:
            shadow.copy_(value)
        self.num_updates += 1

    def _pairs(self, model: nn.Module):
        """(float shadows, the model's live float tensors, [(shadow, other tensor)]) of ``model``, cached."""
        if self._live is None or self._live[0] is not model:
            live = model.state_dict(keep_vars=True)  # the Parameters themselves: in-place updates stay visible
            floats = [n for n, v in live.items() if v.dtype.is_floating_point]
            self._live = (model, [self.shadow[n] for n in floats], [live[n] for n in floats],
                          [(self.shadow[n], v) for n, v in live.items() if not v.dtype.is_floating_point])
        return self._live[1:]

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into ``model`` (cast to its dtypes)."""
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()}, strict=True)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The shadow weights (name -> float32 tensor), e.g. for safetensors."""
        return {k: v.detach().clone().contiguous().cpu() for k, v in self.shadow.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor], num_updates: int) -> None:
        """Restore the shadow weights and the update count saved by ``state_dict``."""
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} weights, e.g. {sorted(missing)[:3]}")
        for name, shadow in self.shadow.items():
            shadow.copy_(state[name].to(shadow.device, torch.float32))
        self.num_updates = int(num_updates)
