"""Fine-tuning CLIPN's no-branch: losses, image-caption data, the training loop."""

from oodfilter.train.config import FinetuneConfig, load_finetune_config
from oodfilter.train.loop import FinetuneResult, TrainingDivergedError, finetune
from oodfilter.train.losses import LossParts, clipn_loss

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LossParts",
    "TrainingDivergedError",
    "clipn_loss",
    "finetune",
    "load_finetune_config",
]
