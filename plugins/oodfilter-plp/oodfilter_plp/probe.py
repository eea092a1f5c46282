"""The linear probe of PLP: Linear(D, C) on frozen normalised image features, trained on pseudo-labels."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from oodfilter.errors import CheckpointError
from oodfilter.text.class_vectors import default_cache_dir


@dataclass
class LinearProbe:
    """Weights (C, D) and bias (C,) of the probe, and what it was fitted for."""

    weight: torch.Tensor
    bias: torch.Tensor
    yes_fingerprint: str
    classes_sha256: str
    pseudo_label_accuracy: float

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) features → (B, C) logits."""
        return features.float() @ self.weight.T.to(features.device) + self.bias.to(features.device)

    def save(self, path: str | Path) -> Path:
        """Write the probe as safetensors (metadata in the header)."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"yes_fingerprint": self.yes_fingerprint, "classes_sha256": self.classes_sha256,
                "pseudo_label_accuracy": json.dumps(self.pseudo_label_accuracy)}
        save_file({"weight": self.weight.contiguous().cpu(), "bias": self.bias.contiguous().cpu()}, str(out), meta)
        return out

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        """Read a probe written by :meth:`save`.

        Raises:
            CheckpointError: the file is missing or not a PLP probe.
        """
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as handle:
                meta = handle.metadata() or {}
        except Exception as error:  # unreadable file of any kind
            raise CheckpointError(f"PLP probe {path} is unreadable ({error})") from error
        if {"weight", "bias"} - set(tensors) or "yes_fingerprint" not in meta:
            raise CheckpointError(f"{path} is not a PLP probe")
        return cls(tensors["weight"], tensors["bias"], meta["yes_fingerprint"], meta["classes_sha256"],
                   float(json.loads(meta.get("pseudo_label_accuracy", "0"))))


def classes_sha256(class_names: list[str]) -> str:
    """Identity of a class list (order matters: it fixes the probe's outputs)."""
    return hashlib.sha256("\n".join(class_names).encode()).hexdigest()


def probe_cache_path(yes_fingerprint: str, class_names: list[str], cache_dir: Path | None = None) -> Path:
    """Where the probe for (model, class list) is cached, so the ``plp`` scorer finds it by itself."""
    root = cache_dir if cache_dir is not None else default_cache_dir()
    return root / "plp" / f"{yes_fingerprint[:24]}-{classes_sha256(class_names)[:24]}.safetensors"


def fit_probe(
    features: torch.Tensor,
    pseudo_labels: torch.Tensor,
    num_classes: int,
    *,
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    min_steps: int = 1000,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Train Linear(D, C) with cross-entropy (Adam, cosine schedule); return (weight, bias, train accuracy).

    Args:
        features: (N, D) normalised image features (frozen).
        pseudo_labels: (N,) zero-shot class indices.
        num_classes: C.
        epochs: Passes over the features.
        lr: Peak learning rate.
        batch_size: Features per step.
        seed: Seed of initialisation and order.
        min_steps: Run more epochs when the set is small, so that a few hundred images still get this
            many optimizer steps (100 epochs of one step each would leave the probe under-trained).
    """
    generator = torch.Generator().manual_seed(seed)
    x, y = features.float().cpu(), pseudo_labels.long().cpu()
    layer = torch.nn.Linear(x.shape[1], num_classes)
    with torch.no_grad():
        layer.weight.normal_(0, 0.01, generator=generator)
        layer.bias.zero_()
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    steps_per_epoch = max(1, math.ceil(len(x) / batch_size))
    epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = torch.nn.functional.cross_entropy(layer(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
    with torch.no_grad():
        accuracy = float((layer(x).argmax(dim=1) == y).float().mean())
    return layer.weight.detach().clone(), layer.bias.detach().clone(), accuracy


def is_probe_file(path: Path) -> bool:
    """Whether ``path`` is a probe written by :meth:`LinearProbe.save` (so ``--overwrite`` may replace it)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return set(handle.keys()) == {"weight", "bias"} and "classes_sha256" in (handle.metadata() or {})
    except Exception:  # not safetensors at all: a user's file
        return False
