"""Pretraining the tiny world's CLIP: a small ResNet + text transformer, class-aware contrastive loss."""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from data import World, load_pixels
from torchvision.ops import roi_align

import oodfilter
from oodfilter.model.build import build_from_open_clip
from oodfilter.model.clipn import CLIPN, ModelSource

CONFIG = Path(__file__).resolve().parent / "tiny-world.json"
MODEL_NAME = "tiny-world"
TEMPLATES = ("a photo of a {}.", "a blurry photo of a {}.", "a close-up photo of a {}.", "a photo of the small {}.",
             "a cropped photo of a {}.")


def register() -> None:
    """Make the tiny-world config known to open_clip."""
    open_clip.add_model_config(CONFIG)


def world_key(world: World, *, seed: int, epochs: int, batch_size: int, lr: float) -> str:
    """Hash of everything that determines the pretrained world model (for the cache)."""
    spec = {"config": CONFIG.read_text(), "classes": world.wnids, "train": [str(p) for p, _ in world.train],
            "seed": seed, "epochs": epochs, "batch_size": batch_size, "lr": lr, "templates": TEMPLATES, "v": 1}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]


def class_tokens(model: CLIPN, world: World) -> list[torch.Tensor]:
    """Token ids of every caption of every class: templates × WordNet synonyms."""
    out = []
    for wnid in world.wnids:
        captions = [t.format(name) for t in TEMPLATES for name in world.names[wnid][:3]]
        out.append(model.tokenize(captions).cpu())
    return out


def augment_batch(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-sample random resized crop (scale 0.5–1), flip and brightness/contrast jitter, vectorised.

    (B, 3, S, S) uint8 → (B, 3, S, S) float in [0, 1]. Crops go through ``roi_align`` in one call, so
    augmentation costs little next to the model on 2 cores.
    """
    x = pixels.float() / 255.0
    b, _, size, _ = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(b, generator=generator)

    area, log_ratio = uniform(0.5, 1.0), uniform(math.log(3 / 4), math.log(4 / 3))
    w = (torch.sqrt(area * log_ratio.exp()) * size).clamp(max=size)
    h = (torch.sqrt(area / log_ratio.exp()) * size).clamp(max=size)
    x0, y0 = uniform(0, 1) * (size - w), uniform(0, 1) * (size - h)
    boxes = torch.stack([torch.arange(b, dtype=torch.float32), x0, y0, x0 + w, y0 + h], dim=1)
    out = roi_align(x, boxes, output_size=size, aligned=True)
    flip = torch.rand(b, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    out = out * uniform(0.7, 1.3).view(b, 1, 1, 1)  # brightness
    centre = out.mean(dim=(1, 2, 3), keepdim=True)
    out = centre + (out - centre) * uniform(0.7, 1.3).view(b, 1, 1, 1)  # contrast
    return out.clamp(0.0, 1.0)


def pretrain(world: World, cache: Path, *, seed: int, epochs: int, batch_size: int = 256, lr: float = 2e-3,
             log=print) -> CLIPN:
    """Return the pretrained world model (as a CLIPN with an untrained no-branch), from the cache if there."""
    register()
    bundle = cache / f"world-{world_key(world, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr)}"
    if (bundle / "oodfilter.json").is_file():
        log(f"world model from cache: {bundle}")
        return oodfilter.load_model(bundle, device="cpu")
    torch.manual_seed(seed)
    base = build_from_open_clip(MODEL_NAME)
    clip = base.clip
    clip.requires_grad_(True)
    clip.train()
    pixels = load_pixels([p for p, _ in world.train])
    labels = torch.tensor([c for _, c in world.train])
    tokens = class_tokens(base, world)
    cfg = open_clip.get_model_preprocess_cfg(clip)
    mean = torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1)
    steps_per_epoch = len(labels) // batch_size
    total = epochs * steps_per_epoch
    decay = [p for n, p in clip.named_parameters() if p.ndim >= 2 and "logit" not in n]
    rest = [p for n, p in clip.named_parameters() if p.ndim < 2 or "logit" in n]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=lr)
    generator = torch.Generator().manual_seed(seed)
    step, started = 0, time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for b in range(steps_per_epoch):
            index = order[b * batch_size : (b + 1) * batch_size]
            y = labels[index]
            images = (augment_batch(pixels[index], generator) - mean) / std
            choice = [int(torch.randint(len(tokens[c]), (1,), generator=generator)) for c in y.tolist()]
            text = torch.stack([tokens[c][k] for c, k in zip(y.tolist(), choice, strict=True)])
            warm = min(1.0, (step + 1) / max(1, total // 10))
            for group in optimizer.param_groups:
                group["lr"] = lr * warm * 0.5 * (1 + math.cos(math.pi * step / total))
            f = F.normalize(clip.encode_image(images), dim=-1)
            g = F.normalize(clip.encode_text(text), dim=-1)
            logits = clip.logit_scale.exp().clamp(max=100) * f @ g.T
            same = (y[:, None] == y[None, :]).float()  # class-aware: every same-class pair is a positive
            targets = same / same.sum(dim=1, keepdim=True)
            loss = 0.5 * (torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
                          + torch.sum(-targets * F.log_softmax(logits.T, 1), 1).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        log(f"  world epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, "
            f"{step * batch_size / (time.perf_counter() - started):.0f} img/s")
    with torch.no_grad():
        clip.logit_scale.clamp_(max=math.log(100))
    model = CLIPN(clip, base.tokenizer, model_config=base.model_config, preprocess=base.preprocess,
                  source=ModelSource(name=MODEL_NAME, kind="tiny-world", details={"seed": seed, "epochs": epochs}))
    oodfilter.save_bundle(model, bundle, training_config={"world_pretraining": {"seed": seed, "epochs": epochs}})
    return oodfilter.load_model(bundle, device="cpu")
