"""Strict state-dict loading with a readable difference."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from oodfilter.errors import CheckpointError

_SHOW = 12


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Load ``state`` into ``module`` requiring exactly its keys and shapes.

    Args:
        module: The module to fill.
        state: Tensors by key.
        what: Names the source in errors (``"no_tower.safetensors in bundle X"``).

    Raises:
        CheckpointError: keys are missing or unexpected, or shapes differ; the message lists them.

    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{key}: expected {tuple(expected[key].shape)}, found {tuple(state[key].shape)}"
        for key in sorted(set(expected) & set(state))
        if tuple(expected[key].shape) != tuple(state[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_preview(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_preview(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_preview(mismatched)}")
    if problems:
        raise CheckpointError(
            f"{what} does not match the model architecture: " + "; ".join(problems)
            + ". Check that the checkpoint and the architecture name belong together."
        )
    module.load_state_dict(dict(state), strict=True)


def _preview(items: list[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... (+{len(items) - _SHOW} more)" if len(items) > _SHOW else "")
