"""``--precision int8``: the image tower with its linear layers dynamically quantised to int8 (CPU)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from oodfilter.model.clipn import CLIPN


def int8_image_encoder(model: CLIPN) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return ``encode_image`` on an int8 copy of the image tower: (B, 3, H, W) → (B, D) normalised.

    The model itself is left as it is (its text towers and its fp32 image tower keep working): the copy's
    ``nn.Linear`` layers get int8 weights and dynamically quantised activations (PyTorch's
    ``quantize_dynamic``); convolutions and attention's fused projections stay fp32.
    """
    from torch.ao.quantization import quantize_dynamic

    tower = copy.deepcopy(model.clip.visual).cpu().eval()
    with warnings.catch_warnings():  # PyTorch announces that this API moves to torchao: not the user's concern
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(tower, {nn.Linear}, dtype=torch.qint8)

    def encode(images: torch.Tensor) -> torch.Tensor:
        return F.normalize(quantized(images), dim=-1)

    return encode
