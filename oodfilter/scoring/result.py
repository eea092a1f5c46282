"""The scores of a batch of images, as tensors: what a :class:`~oodfilter.scoring.scorer.Scorer` returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ScoreResult:
    """Scores of N images (CPU tensors), in input order.

    Attributes:
        method: The score method's name.
        ood_score: (N,) float, higher = more OOD.
        is_ood: (N,) bool decisions (threshold-free rule or the given threshold), or None.
        top_class: (N,) long index of the most likely ID class.
        top_prob: (N,) its softmax probability under the yes classifier.
        class_names: The C class names ``top_class`` indexes.

    """

    method: str
    ood_score: torch.Tensor
    is_ood: torch.Tensor | None
    top_class: torch.Tensor
    top_prob: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.ood_score.shape[0])

    @property
    def top_class_names(self) -> list[str]:
        """The most likely ID class name of each image."""
        return [self.class_names[i] for i in self.top_class.tolist()]
