"""Evaluation configuration: defaults < YAML file < explicit arguments (the CLI's flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodfilter.config import ModelOptions, build_config
from oodfilter.errors import InputError
from oodfilter.text.templates import DEFAULT_TEMPLATES


@dataclass
class EvalConfig(ModelOptions):
    """What to evaluate; see ``oodfilter eval --help``.

    The model options (model, pretrained, device, precision, batch_size) come from
    :class:`~oodfilter.config.ModelOptions`.
    """

    classes: str | list[str] = ""
    id: str = ""
    ood: list[str] = field(default_factory=list)
    id_labels: str | None = None
    methods: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)
    out: str | None = None
    templates: str | list[str] = DEFAULT_TEMPLATES
    workers: int = 0
    cache_dir: str | None = None
    fpr_convention: str = "clipn"
    plots: bool = True
    overwrite: bool = False
    attack_eps: list[float] = field(default_factory=list)
    attack_steps: int = 10

    def validate(self) -> None:
        """Refuse numeric options out of range (before any image is scored).

        Raises:
            InputError: a negative ``workers``, or ``attack_steps`` below 1 with ``attack_eps``.

        """
        if self.workers < 0:
            raise InputError(f"--workers must be 0 or more, got {self.workers}")
        if self.attack_eps and self.attack_steps < 1:
            raise InputError(f"--attack-steps must be at least 1, got {self.attack_steps}")


def load_eval_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> EvalConfig:
    """Build an :class:`EvalConfig` from defaults, a YAML file, then ``overrides``.

    Raises:
        InputError: the YAML file is unreadable, not a mapping, names unknown keys, or holds a value
            its option's type cannot take.
    """
    return build_config(EvalConfig, path, overrides)
