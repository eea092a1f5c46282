"""Configuration of ``oodfilter robustness``: defaults < YAML file < explicit arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oodfilter.config import ModelOptions, build_config
from oodfilter.errors import InputError
from oodfilter.text.templates import DEFAULT_TEMPLATES

OBJECTIVES = ("feature", "score")
TARGETS = ("image", "text")


@dataclass
class RobustnessConfig(ModelOptions):
    """What to attack and how; see ``oodfilter robustness --help`` for each field.

    ``id`` and ``ood`` are a folder, glob, URL or manifest each, or (from Python) lists of image files.
    ``eps`` is in 8-bit levels (4 = 4/255). ``limit`` caps the OOD images attacked (the first N, sorted).
    """

    classes: str | list[str] = ""
    id: str | list[str] = ""
    ood: str | list[str] = ""
    methods: list[str] = field(default_factory=list)
    eps: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 8.0])
    steps: int = 10
    step_size: float | None = None
    objectives: list[str] = field(default_factory=lambda: list(OBJECTIVES))
    target: str = "image"
    id_recall: float = 0.95
    limit: int | None = None
    seed: int = 0
    templates: str | list[str] = DEFAULT_TEMPLATES
    cache_dir: str | None = None
    out: str | None = None
    overwrite: bool = False

    def validate_budgets(self, option: str) -> None:
        """Refuse budgets that are not whole 8-bit levels in [0, 255], or repeat; ``option`` names the flag.

        Raises:
            InputError: see above.

        """
        if not self.eps or any(not math.isfinite(e) or e < 0 or e > 255 for e in self.eps):
            raise InputError(f"{option} takes budgets in 8-bit levels between 0 and 255, got {self.eps}")
        if any(e != int(e) for e in self.eps):
            raise InputError(f"{option} takes whole 8-bit levels (a saved image moves in steps of 1/255), got "
                             f"{self.eps}")
        if len(set(self.eps)) != len(self.eps):
            raise InputError(f"{option} lists a budget twice: {self.eps}")

    def validate(self) -> None:
        """Refuse values that cannot run.

        Raises:
            InputError: a missing set or class list, a negative or duplicate ε, an unknown objective or
                target, no steps, a recall outside (0, 1).

        """
        if not self.id or not self.ood:
            raise InputError("pass the in-distribution images (--id) and the OOD images to manipulate (--ood)")
        if not self.classes:
            raise InputError("pass the class list (--classes)")
        self.validate_budgets("--eps")
        if self.step_size is not None and not (math.isfinite(self.step_size) and self.step_size > 0):
            raise InputError(f"--step-size must be a positive number of 8-bit levels, got {self.step_size}")
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise InputError(f"--objective must be among {', '.join(OBJECTIVES)}, got {self.objectives}")
        if self.target not in TARGETS:
            raise InputError(f"--target must be one of {', '.join(TARGETS)}, got '{self.target}'")
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if not 0 < self.id_recall < 1:
            raise InputError(f"--id-recall must be in (0, 1), got {self.id_recall}")
        if self.limit is not None and self.limit < 1:
            raise InputError(f"--limit must be at least 1, got {self.limit}")


def load_robustness_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RobustnessConfig:
    """Build a :class:`RobustnessConfig` from defaults, then a YAML file, then ``overrides``.

    Raises:
        InputError: the YAML file is unreadable or holds unknown keys or values of the wrong type.

    """
    return build_config(RobustnessConfig, path, overrides)
