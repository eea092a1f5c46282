"""Fine-tuning configuration (defaults are the reference recipe of docs/method.md §2)."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oodfilter.config import ModelOptions, build_config
from oodfilter.errors import InputError


@dataclass
class FinetuneConfig(ModelOptions):
    """Everything a fine-tuning run needs; see ``oodfilter finetune --help`` for each field.

    The model options (model, pretrained, device, precision, batch_size) come from
    :class:`~oodfilter.config.ModelOptions`; ``batch_size`` is redeclared with the reference recipe's
    default. It is the global batch (split across processes under torchrun); the N×N loss of docs/method.md §2
    covers the whole global batch, as in the reference.
    """

    data: str = ""
    out: str = ""
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 256
    lr: float = 3e-4
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.2
    warmup_steps: int = 0
    grad_accum: int = 1
    grad_clip: float | None = None
    seed: int = 0
    val_fraction: float = 0.05
    val_every: int = 0
    val_max: int = 512
    checkpoint_every: int = 0
    log_every: int = 10
    workers: int = dataclasses.field(default_factory=lambda: max(0, min(8, (os.cpu_count() or 2) - 1)))
    templates: str | list[str] = "ensemble"
    resume: bool = False

    def validate(self) -> None:
        """Check values that do not depend on files or the model.

        Raises:
            InputError: a missing or out-of-range value.
        """
        if not self.data:
            raise InputError("no training data: pass --data (a caption table or an image-folder tree)")
        if not self.out:
            raise InputError("no output folder: pass --out DIR (the bundle is written there)")
        if (self.steps is None) == (self.epochs is None):
            raise InputError("pass exactly one of --steps N or --epochs N")
        if (self.steps is not None and self.steps < 1) or (self.epochs is not None and self.epochs < 1):
            raise InputError("--steps and --epochs must be at least 1")
        if self.batch_size < 2:
            raise InputError("--batch-size must be at least 2 (the loss contrasts pairs within a batch)")
        if self.grad_accum < 1 or self.batch_size % self.grad_accum:
            raise InputError(f"--grad-accum must divide the batch size ({self.batch_size})")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        self._validate_ranges()

    def _validate_ranges(self) -> None:
        """Refuse the numeric options that torch would refuse with a bare error, or that would silently misbehave."""
        for name, value in (("beta1", self.beta1), ("beta2", self.beta2)):  # config-file options (no flag)
            if not 0 <= value < 1:
                raise InputError(f"{name} must be in [0, 1), got {value}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise InputError(f"eps must be a positive number, got {self.eps}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InputError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.grad_clip is not None and not self.grad_clip >= 0:  # a negative norm flips the gradients; NaN
            raise InputError(f"--grad-clip must be 0 or more (0: no clipping), got {self.grad_clip}")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        for name, value in (("--warmup-steps", self.warmup_steps), ("--val-every", self.val_every),
                            ("--checkpoint-every", self.checkpoint_every), ("val_max", self.val_max),
                            ("--workers", self.workers)):
            if value < 0:
                raise InputError(f"{name} must be 0 or more, got {value}")
        if self.log_every < 1:
            raise InputError(f"log_every must be at least 1, got {self.log_every}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain data (stored in the bundle)."""
        return dataclasses.asdict(self)


def load_finetune_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> FinetuneConfig:
    """Build a :class:`FinetuneConfig` from defaults, a YAML file, then ``overrides``.

    Raises:
        InputError: the YAML file is unreadable, not a mapping, names unknown keys, or holds a value
            its option's type cannot take.
    """
    return build_config(FinetuneConfig, path, overrides)
