"""Calibrated thresholds: the score that keeps a chosen share R of images known to be in-distribution.

The threshold is the conformal quantile of the calibration scores: with N known-ID scores sorted
ascending, ``t`` is the ``ceil((N + 1) R)``-th smallest, and an image is OOD when ``score > t``. For a new
ID image drawn like the calibration images, ``P(score <= t) >= R`` holds for any N large enough for that
index to exist (N >= R / (1 - R)); the recall on new images is R plus at most about ``1 / (N + 1)``.
A :class:`Calibration` records the threshold together with what the scores depend on (model towers,
class list, templates, method), so it is refused where those differ, and keeps the sorted calibration
scores so a report can show the threshold at any other recall without scoring anything again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oodfilter.atomic import atomic_write_text
from oodfilter.errors import InputError
from oodfilter.finite import is_finite
from oodfilter.json_parse import parse_json
from oodfilter.messages import excerpt

FORMAT = "oodfilter-calibration/1"
# Below this many known-ID images a threshold is mostly noise, whatever the recall asked for.
MIN_CALIBRATION_IMAGES = 20


def minimum_calibration_images(id_recall: float) -> int:
    """Return the fewest calibration images for ``id_recall``: 20, and enough for the conformal quantile.

    That index, ``ceil((N + 1) R)``, is at most N only when N >= R / (1 - R): 19 images for R = 0.95,
    99 for R = 0.99. For R = 1 the threshold is the highest calibration score (every calibration image is
    kept; nothing is promised for new images).
    """
    _check_recall(id_recall)
    if id_recall >= 1.0:
        return MIN_CALIBRATION_IMAGES
    return max(MIN_CALIBRATION_IMAGES, math.ceil(id_recall / (1.0 - id_recall) - 1e-9))


def _sorted_scores(scores: Any) -> np.ndarray:
    """(N,) float64 ascending, from a tensor (any device or dtype), an array or a sequence of numbers."""
    if hasattr(scores, "detach"):  # a torch tensor; this module does not import torch (reports run without it)
        scores = scores.detach().to("cpu").double().numpy()
    return np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))


def recall_threshold(id_scores: Any, id_recall: float) -> float:
    """Return the threshold ``t`` (``is_ood = score > t``) that keeps a share ``id_recall`` of ID images.

    Args:
        id_scores: (N,) OOD scores of images known to be in-distribution (higher = more OOD): a tensor,
            an array or a sequence of numbers.
        id_recall: The share R of in-distribution images to keep, in (0, 1].

    Raises:
        InputError: R outside (0, 1], a score that is not finite, or fewer scores than
            :func:`minimum_calibration_images` asks for R.

    """
    ordered = _sorted_scores(id_scores)  # (N,)
    needed = minimum_calibration_images(id_recall)
    if ordered.size < needed:
        raise InputError(
            f"calibrating for an ID recall of {id_recall:g} needs at least {needed} images known to be "
            f"in-distribution, got {ordered.size}: add ID images to the calibration set, or ask for a lower recall"
        )
    if not bool(np.isfinite(ordered).all()):
        raise InputError("a calibration score is not finite; check the model's weights")
    count = ordered.size
    rank = count if id_recall >= 1.0 else min(count, math.ceil((count + 1) * id_recall - 1e-9))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class Calibration:
    """A threshold fitted on known in-distribution images, and what it is valid for.

    Attributes:
        method: The score method the threshold is for.
        threshold: Decide ``is_ood = ood_score > threshold``.
        id_recall: The share of ID images it was fitted to keep.
        num_images: How many calibration images it was fitted on.
        kept: The share of the calibration images it keeps (at least ``id_recall``, more with ties).
        identity: What the scores depend on: ``fingerprints`` (image, yes and no towers),
            ``classes_sha256``, ``templates``. Compared by :meth:`check_fits`.
        source: What the calibration images were (for people reading the file).
        scores: The sorted calibration scores (for thresholds at other recalls, see :meth:`threshold_at`).

    """

    method: str
    threshold: float
    id_recall: float
    num_images: int
    kept: float
    identity: dict[str, Any]
    source: str = ""
    scores: tuple[float, ...] = field(default=(), repr=False)

    @classmethod
    def fit(
        cls, id_scores: Any, id_recall: float, *, method: str, identity: Mapping[str, Any], source: str = ""
    ) -> Calibration:
        """Fit the threshold that keeps ``id_recall`` of the ID images scored in ``id_scores`` (N,).

        Raises:
            InputError: see :func:`recall_threshold`.

        """
        threshold = recall_threshold(id_scores, id_recall)
        ordered = _sorted_scores(id_scores)
        kept = float((ordered <= threshold).mean())
        return cls(method=method, threshold=threshold, id_recall=float(id_recall), num_images=int(ordered.size),
                   kept=kept, identity=dict(identity), source=source, scores=tuple(float(s) for s in ordered))

    def is_ood(self, scores: Any) -> Any:
        """Decisions for (N,) scores (tensor or array): ``score > threshold`` → (N,) bool of the same kind."""
        return scores > self.threshold

    def threshold_at(self, id_recall: float) -> float:
        """Return the threshold these calibration scores give for another recall (same rule as :meth:`fit`)."""
        return recall_threshold(self.scores, id_recall)

    def check_fits(self, method: str, identity: Mapping[str, Any], where: str = "the calibration") -> None:
        """Refuse to use this threshold for another method, model, class list, template set or precision.

        Raises:
            InputError: naming what differs and how to fix it.

        """
        different = []
        if method != self.method:
            different.append(f"method ({self.method}, not {method})")
        mine, theirs = self.identity.get("fingerprints", {}), identity.get("fingerprints", {})
        # towers both record (a method without the no-branch builds no no-tower vectors)
        if any(mine[tower] != theirs[tower] for tower in set(mine) & set(theirs)) or not set(mine) & set(theirs):
            different.append("model")
        for key, label in (("classes_sha256", "class list"), ("templates", "templates")):
            if self.identity.get(key) != identity.get(key):
                different.append(label)
        mine_precision, their_precision = self.identity.get("precision"), identity.get("precision")
        if mine_precision and their_precision and mine_precision != their_precision:  # older files record none
            different.append(f"precision ({mine_precision}, not {their_precision})")
        if different:
            raise InputError(f"{where} was fitted for a different {', '.join(different)}; a threshold only holds "
                             "for the scores it was fitted on: fit a new one (--id-recall with --calibrate-on)")

    def to_dict(self) -> dict[str, Any]:
        """Return the calibration as JSON-ready data."""
        data = asdict(self)
        data["scores"] = list(self.scores)
        return {"format": FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "calibration") -> Calibration:
        """Validate and rebuild a calibration from :meth:`to_dict`'s data.

        Raises:
            InputError: another format, a missing key or a value of the wrong type (the message names
                ``where`` and the key).

        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise InputError(f"{where} is not an oodfilter calibration (expected format '{FORMAT}')")
        checked = {key: _checked(data, key, kinds, where) for key, kinds in _FIELDS.items()}
        scores = checked["scores"]
        if not all(isinstance(s, int | float) and not isinstance(s, bool) and is_finite(s) for s in scores):
            raise InputError(f"{where}: 'scores' must be a list of finite numbers")
        if checked["num_images"] < 1 or checked["num_images"] != len(scores):
            raise InputError(f"{where}: 'num_images' ({checked['num_images']}) must be the number of 'scores' "
                             f"({len(scores)}), at least 1")
        if not 0.0 <= checked["kept"] <= 1.0:
            raise InputError(f"{where}: 'kept' must be a share in [0, 1]")
        _check_identity(checked["identity"], where)
        _check_recall(checked["id_recall"], where)
        _check_threshold(checked, [float(s) for s in scores], where)
        return cls(**{**checked, "scores": tuple(float(s) for s in scores)})

    def save(self, path: str | Path) -> Path:
        """Write the calibration as JSON (atomically) and return the path."""
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        """Read a calibration written by :meth:`save`.

        Raises:
            InputError: the file is missing, not JSON, or not a valid calibration.

        """
        try:
            data = parse_json(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"calibration file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"calibration file {path} cannot be read as JSON: {error}") from None
        return cls.from_dict(data, where=f"calibration file {path}")


_FIELDS: dict[str, tuple[type, ...]] = {
    "method": (str,), "threshold": (float, int), "id_recall": (float, int), "num_images": (int,),
    "kept": (float, int), "identity": (dict,), "source": (str,), "scores": (list,),
}



def _checked(data: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise InputError(f"{where}: missing key '{key}'")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, kinds):
        shown = repr(value)[:80]
        raise InputError(f"{where}: '{key}' holds {shown}; expected {' or '.join(k.__name__ for k in kinds)}")
    if float in kinds:
        if not is_finite(value):
            raise InputError(f"{where}: '{key}' is not a finite number")
        return float(value)  # type: ignore[arg-type]
    return value


def _check_identity(identity: dict[str, Any], where: str) -> None:
    fingerprints = identity.get("fingerprints", {})
    if not isinstance(fingerprints, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in fingerprints.items()):
        raise InputError(f"{where}: 'identity.fingerprints' must map tower names to fingerprints (strings)")
    if not isinstance(identity.get("classes_sha256", ""), str):
        raise InputError(f"{where}: 'identity.classes_sha256' must be a string")
    templates = identity.get("templates", [])
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise InputError(f"{where}: 'identity.templates' must be a list of strings")


def _check_threshold(checked: dict[str, Any], scores: list[float], where: str) -> None:
    """Refuse a threshold (or kept share) that is not what the file's own scores give for its recall.

    A file written by :meth:`Calibration.save` always passes (the same scores give the same float); an
    edited or damaged one is refused rather than deciding with a threshold nothing supports.
    """
    recall, threshold = checked["id_recall"], checked["threshold"]
    needed = minimum_calibration_images(recall)
    if len(scores) < needed:
        raise InputError(f"{where}: its {len(scores)} scores are too few for an ID recall of {recall:g} (at least "
                         f"{needed}); the file was edited or damaged: fit the calibration again")
    expected = recall_threshold(scores, recall)
    if threshold != expected:
        raise InputError(f"{where}: 'threshold' ({threshold:g}) is not the one its {len(scores)} scores give for an "
                         f"ID recall of {recall:g} ({expected:g}); the file was edited or damaged: fit the "
                         "calibration again (--id-recall with --calibrate-on)")
    kept = float((np.asarray(scores, dtype=np.float64) <= threshold).mean())
    if abs(checked["kept"] - kept) > 1e-9:
        raise InputError(f"{where}: 'kept' ({checked['kept']:g}) is not the share of its scores at or below the "
                         f"threshold ({kept:g}); the file was edited or damaged: fit the calibration again")


def _check_recall(id_recall: float, where: str = "id_recall") -> None:
    if isinstance(id_recall, bool) or not (isinstance(id_recall, int | float) and 0.0 < id_recall <= 1.0):
        raise InputError(f"{where}: the ID recall must be in (0, 1] (e.g. 0.95 keeps 95% of ID images), "
                         f"got {excerpt(id_recall)}")
