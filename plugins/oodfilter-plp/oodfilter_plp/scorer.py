"""The PLP scorer: MSP (or energy) of a linear probe trained on zero-shot pseudo-labels.

ood_score = 1 − max_c softmax(probe(f))_c  (``kind="msp"``)  or  −logsumexp_c probe(f)_c  (``kind="energy"``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch

from oodfilter.errors import InputError
from oodfilter.model.clipn import CLIPN
from oodfilter.scoring import functional as fn
from oodfilter.scoring.functional import ScoreOutput
from oodfilter.scoring.methods import FeatureBatch, PrerequisiteContext, ScoreMethod, ScoringContext
from oodfilter.text.class_vectors import ClassVectors
from oodfilter_plp.probe import LinearProbe, classes_sha256, fit_probe, probe_cache_path
from oodfilter_plp.templates import PLP_TEMPLATES as PLP_TEMPLATES  # re-exported

logger = logging.getLogger(__name__)
_NO_PROBE = ("PLP has no probe for this model and class list: run 'oodfilter fit plp --images ID_DIR --classes FILE "
             "--model MODEL' first (it trains on unlabelled ID images)")



def fit_plp(
    model: CLIPN, index: ClassVectors, features: torch.Tensor, *, epochs: int = 100, seed: int = 0
) -> LinearProbe:
    """Pseudo-label ``features`` (N, D) by zero-shot argmax over ``index`` and fit the probe on them."""
    if features.shape[0] < 2:
        raise InputError("PLP needs at least two ID images to fit its probe")
    pseudo = (features.float() @ index.yes.T.to(features.device)).argmax(dim=1)  # (N,)
    weight, bias, accuracy = fit_probe(features, pseudo, len(index), epochs=epochs, seed=seed)
    logger.info("PLP probe fitted on %d images; agreement with pseudo-labels %.3f", len(features), accuracy)
    return LinearProbe(weight, bias, model.text_fingerprint("yes"), classes_sha256(index.class_names), accuracy)


class PLP(ScoreMethod):
    """Pseudo-label probing.

    The probe for (model, class list) is looked up in the cache (``oodfilter fit plp`` puts it there) or
    given as ``probe``; failing both, it is fitted on the scoring context's reference ID features.

    Args:
        probe: A probe file to use.
        kind: ``msp`` or ``energy`` of the probe logits.
    """

    name: ClassVar[str] = "plp"

    def __init__(self, probe: str | Path | None = None, *, kind: str = "msp") -> None:
        if kind not in ("msp", "energy"):
            raise InputError(f"PLP kind must be 'msp' or 'energy', got '{kind}'")
        self.probe_path = Path(probe) if probe is not None else None
        self.kind = kind
        self.probe: LinearProbe | None = None

    def check_prerequisites(self, context: PrerequisiteContext) -> None:
        """Refuse, before any text is encoded, to run without a probe or ID features to fit one on."""
        path = self._probe_file(context.model, context.class_names, context.cache_dir)
        if not path.is_file() and not context.reference_features:
            raise InputError(_NO_PROBE)

    def prepare(self, context: ScoringContext) -> None:
        """Load the cached or given probe, or fit one on the context's reference features."""
        names: Sequence[str] = context.class_vectors.class_names
        fingerprint = context.model.text_fingerprint("yes")
        path = self._probe_file(context.model, names, context.cache_dir)
        if path.is_file():
            probe = LinearProbe.load(path)
        elif context.reference_features is not None:
            probe = fit_plp(context.model, context.class_vectors, context.reference_features)
            probe.save(path)
        else:
            raise InputError(_NO_PROBE)
        if probe.yes_fingerprint != fingerprint or probe.classes_sha256 != classes_sha256(list(names)):
            raise InputError(f"PLP probe {path} was fitted for another model or class list; fit it again")
        self.probe = probe

    def _probe_file(self, model: CLIPN, class_names: Sequence[str], cache_dir: Path | None) -> Path:
        """Return the given probe file, or where the probe for (model, class list) is cached."""
        return self.probe_path or probe_cache_path(model.text_fingerprint("yes"), list(class_names), cache_dir)

    def __call__(self, batch: FeatureBatch) -> ScoreOutput:
        """Score a batch with the probe (needs :meth:`prepare` first)."""
        if self.probe is None:
            raise InputError("PLP was not prepared; create it through oodfilter.Scorer")
        logits = self.probe.logits(batch.features)  # (B, C)
        return fn.msp(logits) if self.kind == "msp" else fn.energy(logits)
