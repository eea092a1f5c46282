"""Frozen-tower features, computed once and cached: the backbone's pooled image features and ImageNet
logits, and MiniLM's mean-pooled caption features.

The towers never change, so a world's heads, its seeds and every rerun share these. Image features are
taken at the world's resolution through the same open_clip preprocessing the finished world model uses,
so ``normalize(image_head(pooled))`` equals the world model's ``encode_image`` (checked in ``build``).
Caches are ``.npz`` files (no pickle) named by a hash of what decides them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from oodfilter import load_rgb_image


def cache_key(*parts: object) -> str:
    """A short hash of JSON-able parts: the name of a cache entry."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Images(Dataset):
    def __init__(self, files: Sequence[Path], transform: nn.Module) -> None:
        self.files, self.transform = list(files), transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(load_rgb_image(self.files[index]))


@torch.no_grad()
def backbone_features(
    backbone: nn.Module, transform: nn.Module, files: Sequence[Path], cache: Path, *, workers: int = 1,
    log=print,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features (N, 1280) and ImageNet logits (N, 1000) of ``files``, cached under ``cache``.

    Args:
        backbone: timm's EfficientNet-Lite0 with its ImageNet head, in eval mode.
        transform: The world model's preprocessing (resize, centre crop, normalisation).
        files: Image files.
        cache: Cache folder.
        workers: DataLoader decoding processes.
        log: Progress printer.

    """
    path = cache / f"image-features-{cache_key([str(f) for f in files], repr(transform))}.npz"
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        return torch.from_numpy(stored["pooled"]), torch.from_numpy(stored["logits"])
    loader = DataLoader(_Images(files, transform), batch_size=64, num_workers=workers)
    pooled = []
    for i, batch in enumerate(loader):
        pooled.append(backbone.forward_head(backbone.forward_features(batch), pre_logits=True))
        if i % 20 == 0:
            log(f"  image features {min(len(files), (i + 1) * 64)}/{len(files)}")
    features = torch.cat(pooled) if pooled else torch.zeros(0, backbone.num_features)
    logits = backbone.get_classifier()(features)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), pooled=features.numpy(), logits=logits.numpy())
    path.with_suffix(".tmp.npz").replace(path)
    return features, logits


@torch.no_grad()
def caption_features(text_tower: nn.Module, tokenizer, captions: Sequence[str], cache: Path) -> torch.Tensor:
    """MiniLM's mean-pooled features (N, 384) of ``captions`` (before the world's text head), cached."""
    path = cache / f"caption-features-{cache_key(list(captions), tokenizer.context_length)}.npz"
    if path.is_file():
        return torch.from_numpy(np.load(path, allow_pickle=False)["pooled"])
    chunks = []
    for start in range(0, len(captions), 256):
        tokens = tokenizer(list(captions[start : start + 256]))
        mask = (tokens != text_tower.config.pad_token_id).long()
        out = text_tower.transformer(input_ids=tokens, attention_mask=mask)
        chunks.append(text_tower.pooler(out, mask))
    pooled = torch.cat(chunks)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path.with_suffix(".tmp.npz"), pooled=pooled.numpy())
    path.with_suffix(".tmp.npz").replace(path)
    return pooled


def world_transform(image_size: int, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
    """open_clip's evaluation preprocessing for the world (what ``local-dir:`` loading rebuilds)."""
    return open_clip.image_transform(image_size, is_train=False, mean=tuple(mean), std=tuple(std),
                                     interpolation="bicubic", resize_mode="shortest")
