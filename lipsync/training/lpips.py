"""LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018)
with the VGG16 backbone, version 0.1, written without torchvision.

d(x, y) = Σ_l mean_{h,w} ‖ w_l ⊙ (f̂_l(x) − f̂_l(y)) ‖²: f_l the VGG16 activations after relu1_2, relu2_2,
relu3_3, relu4_3 and relu5_3 of the input scaled by the lpips "scaling layer", f̂ = f / (‖f‖_channels + 1e-10),
w_l ≥ 0 the learned 1×1 "linear" heads. Inputs are RGB in [-1, 1].

Layouts, so the released files load as they are:
* :class:`VGG16Features` — keys ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}`` exactly as
  torchvision's ``vgg16().features`` (file ``vgg16-397923af.pth``; its ``classifier.*`` keys are ignored);
* the heads — ``lin{0..4}.model.1.weight`` of shape (1, C, 1, 1), as in the lpips package's
  ``weights/v0.1/vgg.pth``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch import nn

from lipsync.checkpoints import load_checked_state_dict, read_state_dict
from lipsync.training.weights import WeightsSource, find_weights

# torchvision's vgg16 "D" configuration: output channels of each 3x3 conv, "M" = 2x2 max pool.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Indices in ``features`` of the ReLUs LPIPS reads: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# The lpips package's input scaling (ImageNet statistics expressed for [-1, 1] inputs).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10

VGG16_SOURCE = WeightsSource(
    what="LPIPS VGG16 backbone (torchvision vgg16, ImageNet)",
    flag="--lpips-vgg",
    env_var="LIPSYNC_LPIPS_VGG",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    cache_name="vgg16-397923af.pth",
    hub_repo="ByteDance/LatentSync-1.5",
    hub_filename="auxiliary/vgg16-397923af.pth",
)


def _lpips_package_heads() -> Tuple[Path, ...]:
    """The heads file shipped inside an installed ``lpips`` package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return ()
    return tuple(Path(loc) / "weights" / "v0.1" / "vgg.pth" for loc in spec.submodule_search_locations)


def heads_source() -> WeightsSource:
    """Where the LPIPS v0.1 VGG heads come from (an installed ``lpips`` package's copy counts)."""
    return WeightsSource(
        what="LPIPS v0.1 VGG linear heads",
        flag="--lpips-heads",
        env_var="LIPSYNC_LPIPS_HEADS",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth",
        cache_name="lpips_v0.1_vgg.pth",
        local_candidates=_lpips_package_heads(),
    )


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` (13 convs + ReLUs + 5 max pools), same keys and shapes.

    ``forward(x, taps=LPIPS_TAPS)``: x (N, 3, H, W) (already normalised); returns the activations after
    the layers whose indices are in ``taps`` (a list, in order). Stops after the last tap.
    """

    def __init__(self):
        super().__init__()
        layers: List[nn.Module] = []
        cin = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, item, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                cin = item
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, taps: Tuple[int, ...] = LPIPS_TAPS) -> List[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in taps:
                outputs.append(x)
                if len(outputs) == len(taps):
                    break
        return outputs


class LinearHead(nn.Module):
    """LPIPS' per-layer 1×1 conv to one channel, no bias; key ``model.1.weight`` (1, C, 1, 1).

    (Index 0 is the dropout the lpips package puts first; it has no weights and is off in eval mode.)
    """

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(p=0.0), nn.Conv2d(channels, 1, kernel_size=1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unit_normalize(features: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """features (N, C, H, W) / (‖features‖ over C + eps): unit length at every pixel."""
    return features / (torch.sqrt((features ** 2).sum(dim=1, keepdim=True)) + eps)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with a VGG16 backbone.

    ``forward(x, y)``: x, y (N, 3, H, W) RGB in [-1, 1] (H, W >= 16); returns (N, 1, 1, 1) distances ≥ 0
    (0 for identical images). Keys: ``net.features.*`` (VGG16) and ``lin0..lin4.model.1.weight``;
    the scaling constants are non-persistent buffers. Frozen (no gradients to its weights) and in eval mode
    when built by :func:`load_lpips`; gradients still flow to the inputs.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.net = VGG16Features()
        for i, channels in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{i}", LinearHead(channels))

    @property
    def heads(self) -> List[LinearHead]:
        return [getattr(self, f"lin{i}") for i in range(len(LPIPS_CHANNELS))]

    def heads_state_dict(self) -> dict:
        """The heads' weights only, in the lpips package's layout (``lin{i}.model.1.weight``)."""
        return {k: v for k, v in self.state_dict().items() if k.startswith("lin")}

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"LPIPS takes two (N, 3, H, W) images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        both = (torch.cat([x, y], dim=0) - self.shift) / self.scale  # (2N, 3, H, W)
        total = x.new_zeros(n, 1, 1, 1)
        for head, feats in zip(self.heads, self.net(both)):
            diff = (unit_normalize(feats[:n]) - unit_normalize(feats[n:])) ** 2  # (N, C, h, w)
            total = total + head(diff).mean(dim=(2, 3), keepdim=True)
        return total


def load_lpips(vgg_path: Optional[os.PathLike | str] = None, heads_path: Optional[os.PathLike | str] = None,
               device: Optional[torch.device | str] = None) -> LPIPS:
    """An :class:`LPIPS` with released weights, frozen, in eval mode.

    Args:
        vgg_path: torchvision's ``vgg16-397923af.pth`` (its ``features.*`` keys; ``classifier.*`` is
            ignored; our own ``net.features.*`` keys load too); None -> env
            ``LIPSYNC_LPIPS_VGG`` -> torch.hub cache -> download.
        heads_path: the lpips package's ``weights/v0.1/vgg.pth``; None -> env ``LIPSYNC_LPIPS_HEADS`` ->
            an installed ``lpips`` package -> cache -> download.
        device: where to put it (default CPU).
    Raises WeightsUnavailableError (naming --lpips-vgg / --lpips-heads) or CheckpointMismatchError.
    """
    model = LPIPS()
    vgg = read_state_dict(find_weights(VGG16_SOURCE, vgg_path), what="the LPIPS VGG16 backbone")
    vgg = {("net." + k if k.startswith("features.") else k): v for k, v in vgg.items() if not k.startswith("classifier.")}
    heads = read_state_dict(find_weights(heads_source(), heads_path), what="the LPIPS heads")
    load_checked_state_dict(model, {**vgg, **heads}, what="LPIPS (VGG16 features + v0.1 heads)",
                            hint="pass torchvision's vgg16-397923af.pth with --lpips-vgg and lpips' v0.1 vgg.pth with --lpips-heads")
    model.requires_grad_(False)
    return model.to(device or "cpu").eval()
