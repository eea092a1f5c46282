"""The Scorer: image tensors (or image features) in, OOD scores out; batched, on a device, with AMP on CUDA."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from oodfilter.deprecation import deprecated_attribute, warn_deprecated
from oodfilter.device import inference_precision, maybe_autocast, precision_dtype, resolve_device
from oodfilter.errors import InputError, ModelMismatchError
from oodfilter.model.clipn import CLIPN
from oodfilter.scoring import functional as fn
from oodfilter.scoring.files import score_files
from oodfilter.scoring.low_precision import ImageEncoder, bf16_image_encoder, int8_image_encoder
from oodfilter.scoring.methods import FeatureBatch, ScoreMethod, ScoringContext, plain_methods, score_methods
from oodfilter.scoring.result import ScoreResult
from oodfilter.sinks.rows import ManifestRow
from oodfilter.text.class_vectors import ClassVectors, text_precision

if TYPE_CHECKING:
    from oodfilter.scoring.reference import ReferenceFeatures

logger = logging.getLogger(__name__)

# Features scored per step: bounds the (B, C) cosine matrices for large vocabularies.
_FEATURE_CHUNK = 4096


class Scorer:
    """Scores images against a class list with one score method.

    Args:
        model: The CLIPN model.
        class_vectors: Class vectors built by :func:`oodfilter.build_class_vectors` from the same model.
        method: A registered score name (``atd``, ``ctw``, ``msp``, ``maxlogit``, ``energy``, ``mcm``,
            plugins) or a :class:`ScoreMethod` instance.
        threshold: Decide ``is_ood = ood_score > threshold``; without it, threshold-free methods use
            their own rule and others give no decision.
        device: Where to run; default the model's device.
        batch_size: Images per forward pass.
        precision: ``auto`` (bf16 autocast on CUDA, fp16 on older CUDA devices, fp32 on the CPU), ``fp32``,
            ``fp16`` (CUDA), ``bf16`` (on the CPU: a bf16 copy of the image tower, made on the first encode;
            a CPU with native bf16 scores ~3x faster, and ~1-3% of decisions move) or ``int8`` (dynamically
            quantised image tower, CPU only). The resolved choice is :attr:`precision`; features and scores
            are float32 either way. The copies are made once: rebuild the scorer after changing weights.
        allow_untrained_no_branch: Permit CLIPN methods with a no-branch that was never trained.
        cache_dir: Cache root for methods that prepare state (mined negatives, probes).
        reference_features: Unlabelled ID image features for methods that fit on them (see
            :class:`~oodfilter.scoring.methods.ScoringContext`).

    Raises:
        ModelMismatchError: the class vectors were built with a different model.
        InputError: the method needs a trained no-branch that the model lacks.

    """

    def __init__(
        self,
        model: CLIPN,
        class_vectors: ClassVectors,
        method: str | ScoreMethod = "atd",
        *,
        threshold: float | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 64,
        precision: str = "auto",
        allow_untrained_no_branch: bool = False,
        cache_dir: str | Path | None = None,
        reference_features: torch.Tensor | None = None,
    ) -> None:
        self.method = score_methods.create(method) if isinstance(method, str) else method
        self.reference: ReferenceFeatures | None = None  # what build_scorer fitted the method on, for the record
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        _check_compatible(model, class_vectors, self.method, allow_untrained_no_branch)
        self.device = resolve_device(device) if device is not None else model.device
        self.model = model.to(self.device).eval()
        self.class_vectors = class_vectors
        self.threshold = threshold
        self.batch_size = batch_size
        self.precision = inference_precision(self.device, precision)
        self.amp_dtype = precision_dtype(self.precision)
        self._copy_encode: ImageEncoder | None = None  # made by the first encode_images (rescore never needs it)
        self._yes = class_vectors.yes.to(self.device)  # (C, D)
        self._no = class_vectors.no.to(self.device) if class_vectors.no is not None else None  # (C, D)
        self.method.prepare(ScoringContext(model=self.model, class_vectors=class_vectors, device=self.device,
                                           cache_dir=Path(cache_dir) if cache_dir is not None else None,
                                           reference_features=reference_features,
                                           text_precision=text_precision(self.device, self.precision)))
        if self.method.name == "atd" and len(class_vectors) == 1:
            warnings.warn(
                "ATD with a single class reduces to that class's yes-probability; list more ID classes "
                "or use ctw",
                stacklevel=2,
            )

    @property
    def text_index(self) -> ClassVectors:
        """Deprecated name of :attr:`class_vectors` (kept for one release)."""
        warn_deprecated("Scorer.text_index", "Scorer.class_vectors")
        return self.class_vectors

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode preprocessed images (N, 3, H, W) in batches → (N, D) float32 normalised features (CPU).

        On an out-of-memory error the batch size is halved for this and every later call and the same
        images are encoded again, so no image is lost or encoded twice; at batch size 1 the error is raised.
        """
        if self._copy_encode is None and images.shape[0]:
            self._copy_encode = _reduced_copy(self.model, self.device, self.precision)
        chunks = []
        start = 0
        while start < images.shape[0]:
            size = self.batch_size
            try:
                batch = images[start : start + size].to(self.device, non_blocking=True)
                if self._copy_encode is not None:  # a reduced-precision copy of the tower (CPU)
                    features = self._copy_encode(batch)
                else:
                    with maybe_autocast(self.device, self.amp_dtype):
                        features = self.model.encode_image(batch)
            except torch.OutOfMemoryError:
                if size == 1:
                    raise
                self.batch_size = max(1, size // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("out of memory at batch size %d on %s: continuing at %d", size, self.device,
                               self.batch_size)
                continue
            chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu())
            start += size
        return torch.cat(chunks) if chunks else torch.zeros(0, self.model.embed_dim)

    @torch.no_grad()
    def score_features(self, features: torch.Tensor) -> ScoreResult:
        """Score precomputed normalised image features (N, D)."""
        step = _FEATURE_CHUNK
        parts = [self._score_batch(features[i : i + step]) for i in range(0, len(features), step)]
        if not parts:
            parts = [self._score_batch(features.new_zeros(0, self.class_vectors.dim))]
        decisions = [p[1] for p in parts]
        return ScoreResult(
            method=self.method.name,
            ood_score=torch.cat([p[0] for p in parts]),
            is_ood=None if any(d is None for d in decisions) else torch.cat(decisions),  # type: ignore[arg-type]
            top_class=torch.cat([p[2] for p in parts]),
            top_prob=torch.cat([p[3] for p in parts]),
            class_names=self.class_vectors.class_names,
        )

    def _score_batch(
        self, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
        f = features.to(self.device, torch.float32)  # (B, D)
        batch = FeatureBatch(
            features=f,
            cosines_yes=f @ self._yes.T,  # (B, C)
            cosines_no=f @ self._no.T if self._no is not None else None,  # (B, C)
            logit_scale=self.model.logit_scale,
        )
        output = self.method(batch)
        top, top_prob = fn.top_class(batch.logits_yes)
        # in float64, as the manifest, ManifestFilter and the report compare the stored score with the threshold
        decision = output.ood_score.double() > self.threshold if self.threshold is not None else output.is_ood
        return (
            output.ood_score.float().cpu(),
            decision.cpu() if decision is not None else None,
            top.cpu(),
            top_prob.float().cpu(),
        )

    def score_images(self, images: torch.Tensor) -> ScoreResult:
        """Score preprocessed images (N, 3, H, W)."""
        return self.score_features(self.encode_images(images))

    def score_paths(self, paths: Sequence[str | Path]) -> list[ManifestRow]:
        """Score files (deprecated, kept for one release): use :func:`oodfilter.score_files` (rows batch by batch)."""
        warn_deprecated("Scorer.score_paths", "oodfilter.score_files(scorer, paths)")
        return [row for rows in score_files(self, paths) for row in rows]


def _reduced_copy(model: CLIPN, device: torch.device, precision: str) -> ImageEncoder | None:
    """Return the encoder of a reduced-precision copy of the image tower (int8, or bf16 on the CPU), or None."""
    if precision == "int8":
        return int8_image_encoder(model)
    if precision == "bf16" and device.type == "cpu":
        return bf16_image_encoder(model)
    return None


def check_method_runs_on(model: CLIPN, method: ScoreMethod, allow_untrained_no_branch: bool = False) -> None:
    """Refuse a method that needs a trained CLIPN no-branch on a model without one (before any encoding).

    Raises:
        InputError: ``method`` needs a trained no-branch, ``model`` has none, and that is not allowed.

    """
    if method.needs_no_branch and not model.no_branch_trained and not allow_untrained_no_branch:
        plain = ", ".join(plain_methods())
        raise InputError(
            f"method '{method.name}' needs a trained CLIPN no-branch, and model '{model.source.name}' has "
            f"none (load a CLIPN bundle, convert the reference release with 'oodfilter convert-clipn', or "
            f"train one with 'oodfilter finetune'); or pick a method that needs none: {plain}"
        )


def _check_compatible(
    model: CLIPN, class_vectors: ClassVectors, method: ScoreMethod, allow_untrained_no_branch: bool
) -> None:
    if class_vectors.fingerprints.get("yes") != model.text_fingerprint("yes"):
        raise ModelMismatchError(
            "the class vectors were built with a different model; rebuild them with build_class_vectors(model, ...)"
        )
    if not method.needs_no_branch:
        return
    check_method_runs_on(model, method, allow_untrained_no_branch)
    if class_vectors.no is None:
        raise InputError(f"method '{method.name}' needs no-branch class vectors; build them with include_no=True")
    if class_vectors.fingerprints.get("no") != model.text_fingerprint("no"):
        raise ModelMismatchError("the no-branch class vectors come from a different no-branch; rebuild them")


_DEPRECATED = {"ImageScore": "ManifestRow"}  # rows moved to oodfilter.sinks.rows


def __getattr__(name: str) -> object:
    return deprecated_attribute(__name__, globals(), _DEPRECATED, name)
