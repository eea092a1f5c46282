"""Projected gradient descent within an L∞ pixel budget, as pure tensor functions.

Images are (B, 3, H, W) pixels in [0, 1] *before* the model's normalisation, on the 8-bit grid (k/255):
what a PNG holds. The attack works in float, and :func:`to_pixel_grid` returns it to the 8-bit grid with
every pixel still within ε of the original, so the saved PNG is exactly the measured image.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Loss = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [0, 1] → (B,) to minimise


def default_step_size(eps: float, steps: int) -> float:
    """Return the usual PGD step, 2.5·ε / steps (enough to cross the ε-ball from the random start)."""
    return 2.5 * eps / max(steps, 1)


def pgd_minimise(
    images: torch.Tensor, loss: Loss, *, eps: float, steps: int, step_size: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return images within ``eps`` (L∞) of ``images`` and in [0, 1] that lower ``loss``: PGD with a random start.

    Args:
        images: (B, 3, H, W) pixels in [0, 1].
        loss: Per-image loss to minimise, (B, 3, H, W) → (B,); differentiable in its input.
        eps: L∞ budget in [0, 1] units (4/255 for four 8-bit levels); 0 returns ``images`` unchanged.
        steps: Gradient-sign steps after the random start.
        step_size: Step per iteration (default :func:`default_step_size`).
        generator: Randomness of the start (seeded for a reproducible attack).

    Returns:
        (B, 3, H, W) float pixels, detached.

    """
    if eps <= 0 or steps <= 0:
        return images.detach().clone()
    step = default_step_size(eps, steps) if step_size is None else step_size
    low, high = (images - eps).clamp(0, 1), (images + eps).clamp(0, 1)  # (B, 3, H, W) each
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    adversarial = (images + (2 * noise - 1) * eps).clamp(0, 1).detach()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss(adversarial).sum(), adversarial)
        if not torch.isfinite(gradient).all():  # a saturated score: keep the last finite point for those pixels
            gradient = torch.nan_to_num(gradient, nan=0.0, posinf=0.0, neginf=0.0)
        adversarial = torch.minimum(torch.maximum(adversarial.detach() - step * gradient.sign(), low), high)
    return adversarial.detach()


def to_pixel_grid(original: torch.Tensor, adversarial: torch.Tensor, eps: float) -> torch.Tensor:
    """Round ``adversarial`` to 8-bit pixels that differ from ``original`` by at most ⌊255·ε⌋ levels.

    Args:
        original: (B, 3, H, W) uint8 pixels.
        adversarial: (B, 3, H, W) float pixels in [0, 1].
        eps: The budget in [0, 1] units.

    Returns:
        (B, 3, H, W) uint8.

    """
    levels = math.floor(255 * eps + 1e-6)
    base = original.to(torch.int16)  # (B, 3, H, W)
    moved = torch.round(adversarial.float() * 255).to(torch.int16) - base
    return (base + moved.clamp(-levels, levels)).clamp(0, 255).to(torch.uint8)


def perturbation_norms(original: torch.Tensor, adversarial: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the (L∞, L2) size of each image's perturbation in [0, 1] pixel units: uint8 (B, 3, H, W) → (B,), (B,)."""
    delta = (adversarial.to(torch.float64) - original.to(torch.float64)).flatten(1) / 255  # (B, 3·H·W)
    return delta.abs().amax(dim=1), delta.norm(dim=1)
