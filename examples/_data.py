"""Shared bits of the examples: where the real images are, and a tiny model to train."""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEXTURES = DATA / "textures-dtd" / "images"  # ImageFolder layout: 10 texture classes
# The in-distribution classes of these examples: the 10 DTD texture names as captions.
CLASSES = [f"{name} texture" for name in sorted(p.name for p in TEXTURES.iterdir())] if TEXTURES.is_dir() else []


def require_data() -> None:
    """Stop with a clear message when the example data is absent."""
    if not TEXTURES.is_dir():
        raise SystemExit(f"this example reads real images from {TEXTURES}; it is absent here")


def tiny_classifier(num_classes: int) -> torch.nn.Module:
    """A small CNN standing in for the user's model."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(8, num_classes),
    )


def train_steps(model: torch.nn.Module, batches, steps: int = 10) -> float:
    """Run ``steps`` SGD steps of cross-entropy on (images, labels) batches; return the last loss."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = torch.zeros(())
    for step, (images, labels) in enumerate(batches):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step + 1 == steps:
            break
    return float(loss.detach())
