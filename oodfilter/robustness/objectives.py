"""What an attack minimises: a method's OOD score, or the distance of the image's feature to an ID target.

Both run the frozen image tower in float32 (no autocast: reduced-precision gradients are not shown to be
safe here) on pixels in [0, 1], normalised by the model's own preprocessing mean and std.

Score functions are differentiable as written: MSP, energy, MCM and ATD are smooth; max-logit and CTW
take a max / argmax over classes, whose gradient flows through the selected class (the exact score,
piecewise smooth, so no surrogate is used); NegLabel and PLP are smooth in the feature. A method whose
score does not carry a gradient is refused with :class:`NotDifferentiableError`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from oodfilter.data.split_transform import SplitTransform
from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.scoring.methods import FeatureBatch
from oodfilter.scoring.scorer import Scorer

Loss = Callable[[torch.Tensor], torch.Tensor]


class NotDifferentiableError(InputError):
    """A method's score carries no gradient to the image, so the score attack cannot run against it."""


def image_features(model: CLIPN, split: SplitTransform, pixels: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) pixels in [0, 1] → (B, D) L2-normalised float32 features, differentiable in the pixels."""
    return F.normalize(model.encode_image(split.finish(pixels)).float(), dim=-1)


def method_scores(scorer: Scorer, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return the scorer's method on (B, D) features: (B,) OOD scores and (B,) own-rule decisions (or None).

    Unlike :meth:`Scorer.score_features` this keeps the autograd graph and the device.
    """
    vectors = scorer.class_vectors
    yes = vectors.yes.to(features.device, torch.float32)  # (C, D)
    no = vectors.no.to(features.device, torch.float32) if vectors.no is not None else None  # (C, D)
    batch = FeatureBatch(features=features, cosines_yes=features @ yes.T,
                         cosines_no=features @ no.T if no is not None else None,
                         logit_scale=scorer.model.logit_scale)
    output = scorer.method(batch)
    return output.ood_score, output.is_ood


def score_loss(scorer: Scorer, split: SplitTransform) -> Loss:
    """Return the score attack's loss: the method's own OOD score of the image (lower = looks in-distribution).

    Raises:
        NotDifferentiableError: (when called) the method's score carries no gradient.

    """
    def loss(pixels: torch.Tensor) -> torch.Tensor:
        scores, _ = method_scores(scorer, image_features(scorer.model, split, pixels))
        if not scores.requires_grad:
            raise NotDifferentiableError(f"{scorer.method.name}'s score carries no gradient to the image, so it "
                                         "cannot be attacked directly; use the feature attack for it")
        return scores.float()

    return loss


def feature_loss(model: CLIPN, split: SplitTransform, targets: torch.Tensor) -> Loss:
    """Return the feature attack's loss: −cos(f(image), target), for (B, D) normalised targets (one per image)."""
    def loss(pixels: torch.Tensor) -> torch.Tensor:
        return -(image_features(model, split, pixels) * targets).sum(dim=-1)

    return loss
