"""What a scorer's scores depend on, as plain data: a threshold fitted on them is valid only for the same."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the scoring factory imports this module: no runtime import back into scoring
    from oodfilter.scoring.scorer import Scorer


def classes_digest(names: list[str]) -> str:
    """sha256 of a class list in order (the scan manifest's ``classes_sha256``)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def score_identity(scorer: Scorer) -> dict[str, Any]:
    """Return what ``scorer``'s scores depend on: tower fingerprints, class list, templates, precision."""
    vectors = scorer.class_vectors
    return {
        "fingerprints": {"image": scorer.model.image_fingerprint(), **vectors.fingerprints},
        "classes_sha256": classes_digest(list(vectors.class_names)),
        "templates": list(vectors.templates),
        "precision": scorer.precision,
    }
