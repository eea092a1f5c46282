"""Image towers for scoring in reduced precision on the CPU: bf16 weights under autocast, and int8.

Both are copies of the image tower; the model itself is left as it is (its text towers and its fp32
image tower keep working). Why a bf16 copy rather than autocast on the model: CPU autocast recasts frozen
weights (``requires_grad=False``, as a loaded model's are) on every call, and for the patch-embedding
convolution that recast path is slow; measured on a ViT-B-32 image tower, batch 32, 2 cores with AMX:
fp32 28.8 img/s, autocast on the frozen model 22.6, autocast on a copy whose matrix weights are bf16 136.5
(features within 6e-5 cosine of fp32 either way).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from oodfilter.model.clipn import CLIPN

ImageEncoder = Callable[[torch.Tensor], torch.Tensor]

# Modules whose weights autocast would cast to bf16 for their matrix products (layer norms stay fp32).
_MATRIX_MODULES = (nn.Linear, nn.Conv2d, nn.MultiheadAttention)


def bf16_image_encoder(model: CLIPN) -> ImageEncoder:
    """Return ``encode_image`` on a CPU copy of the image tower whose matrix weights are bf16.

    It runs under bf16 autocast: (B, 3, H, W) → (B, D) normalised, as autocast on the model computes it,
    without the per-call weight casts.
    """
    tower = copy.deepcopy(model.clip.visual).cpu().eval()
    for module in tower.modules():
        if isinstance(module, _MATRIX_MODULES):
            for parameter in module.parameters(recurse=False):
                parameter.data = parameter.data.to(torch.bfloat16)

    def encode(images: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            return F.normalize(tower(images).float(), dim=-1)

    return encode


def int8_image_encoder(model: CLIPN) -> ImageEncoder:
    """Return ``encode_image`` on an int8 copy of the image tower: (B, 3, H, W) → (B, D) normalised.

    The copy's ``nn.Linear`` layers get int8 weights and dynamically quantised activations (PyTorch's
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
