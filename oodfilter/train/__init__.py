"""Fine-tuning CLIPN's no-branch: losses, image-caption data, the training loop.

The names below are imported on first access (see :mod:`oodfilter.lazy`), so that ``oodfilter finetune
--help`` reads :mod:`oodfilter.train.config` without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "FinetuneConfig": "oodfilter.train.config",
    "FinetuneResult": "oodfilter.train.loop",
    "LossParts": "oodfilter.train.losses",
    "TrainingDivergedError": "oodfilter.train.loop",
    "clipn_loss": "oodfilter.train.losses",
    "finetune": "oodfilter.train.loop",
    "load_finetune_config": "oodfilter.train.config",
}

if TYPE_CHECKING:
    from oodfilter.train.config import FinetuneConfig, load_finetune_config
    from oodfilter.train.loop import FinetuneResult, TrainingDivergedError, finetune
    from oodfilter.train.losses import LossParts, clipn_loss


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LossParts",
    "TrainingDivergedError",
    "clipn_loss",
    "finetune",
    "load_finetune_config",
]
