"""Training a world's heads on cached frozen-tower features.

Only the image projection (1280 → D), the text MLP (384 → 448 → D) and the logit scale learn. Two
losses, as in WORLD.md: a class-level contrastive loss (each image against one random-template caption
of every training class, cross-entropy over classes) and distillation (KL from the backbone's own
ImageNet head to the world's zero-shot classifier over all 1000 ImageNet names). Distillation is what
lets names the heads never trained on (the 1000-way ImageNet sample) still be recognised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class HeadRecipe:
    """How the heads are trained (part of a world's cache key)."""

    epochs: int = 60
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    distill_weight: float = 1.0


@dataclass
class HeadInputs:
    """Cached features a world trains on.

    ``image`` (N, 1280) pooled backbone features with ``labels`` (N) into the training classes and
    ``teacher`` (N, 1000) ImageNet logits; ``class_captions`` (C, T, 384) pooled caption features of the
    C training classes under T templates; ``imagenet_captions`` (1000, T, 384) the same for ImageNet names.
    """

    image: torch.Tensor
    labels: torch.Tensor
    teacher: torch.Tensor
    class_captions: torch.Tensor
    imagenet_captions: torch.Tensor


def _one_template_each(captions: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(C, T, W) → (C, W): a random template's caption for each class."""
    pick = torch.randint(captions.shape[1], (captions.shape[0],), generator=generator)
    return captions[torch.arange(captions.shape[0]), pick]


def train_heads(image_head: nn.Linear, text_head: nn.Module, logit_scale: nn.Parameter, inputs: HeadInputs,
                recipe: HeadRecipe, seed: int) -> list[float]:
    """Train the heads in place; return the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    params = [*image_head.parameters(), *text_head.parameters(), logit_scale]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(inputs.image) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.epochs * steps_per_epoch)
    teacher = F.softmax(inputs.teacher, dim=-1)  # (N, 1000)
    history = []
    for _ in range(recipe.epochs):
        order = torch.randperm(len(inputs.image), generator=generator)
        total = 0.0
        for start in range(0, len(order), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            image = F.normalize(image_head(inputs.image[batch]), dim=-1)  # (B, D)
            classes = F.normalize(text_head(_one_template_each(inputs.class_captions, generator)), dim=-1)  # (C, D)
            names = F.normalize(text_head(_one_template_each(inputs.imagenet_captions, generator)), dim=-1)  # (K, D)
            scale = logit_scale.exp()
            contrastive = F.cross_entropy(scale * image @ classes.T, inputs.labels[batch])
            student = F.log_softmax(scale * image @ names.T, dim=-1)  # (B, K)
            distill = F.kl_div(student, teacher[batch], reduction="batchmean")
            loss = contrastive + recipe.distill_weight * distill
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                logit_scale.clamp_(0, math.log(100))
            total += float(loss.detach()) * len(batch)
        history.append(total / len(order))
    return history


@torch.no_grad()
def class_vectors(text_head: nn.Module, captions: torch.Tensor) -> torch.Tensor:
    """(C, T, 384) pooled caption features → (C, D) normalised template-mean class vectors."""
    projected = F.normalize(text_head(captions), dim=-1)  # (C, T, D)
    return F.normalize(projected.mean(dim=1), dim=-1)


@torch.no_grad()
def image_vectors(image_head: nn.Linear, pooled: torch.Tensor) -> torch.Tensor:
    """(N, 1280) pooled backbone features → (N, D) normalised world image features."""
    return F.normalize(image_head(pooled), dim=-1)
