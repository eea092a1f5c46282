"""The reference images of the fitted methods (``reference=`` / ``--reference``): found and checked, no torch.

A reference item is an image file, a folder, a glob, or an oodfilter manifest: one with stored features
(``scan --save-features``) is read once the model is known (:mod:`oodfilter.scoring.reference`), without
encoding, when they come from the same image tower; otherwise its ok rows are the images. Everything
here runs before the model loads, so a missing reference fails in a moment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oodfilter.data.discovery import discover_images
from oodfilter.data.remote import is_url
from oodfilter.errors import InputError
from oodfilter.scoring.fitted import needs_reference_message
from oodfilter.scoring.methods import ScoreMethod, score_methods
from oodfilter.sinks.features import header_path
from oodfilter.sinks.manifest import FORMATS, read_manifest, sidecar
from oodfilter.sinks.row_paths import resolved_paths


def is_reference_manifest(item: str) -> bool:
    """Whether a reference item is an oodfilter manifest (its suffix and its meta file say so)."""
    return Path(item).suffix.lower() in FORMATS and sidecar(item, "meta.json").is_file()


def reference_images(items: Sequence[str]) -> list[str]:
    """Return the image files of reference items: files, folders and globs, and manifests' ok rows.

    Sorted and without repeats, so that the same items always give the same features in the same order.

    Raises:
        InputError: an item that does not exist, or items that hold no image; the message names the item.

    """
    paths: list[str] = []
    for item in items:
        if is_reference_manifest(item):
            found = resolved_paths(item, (row for row in read_manifest(item) if row.ok))
        else:
            try:
                found = [entry.name for entry in discover_images([item]) if entry.error is None]
            except InputError as error:
                raise InputError(f"--reference {item}: {error}") from None
        if not found:
            raise InputError(f"--reference {item} holds no image to fit on; name folders, files, globs or manifests "
                             "of known in-distribution images")
        paths += found
    return sorted({path if is_url(path) else os.path.normpath(os.path.abspath(path)) for path in paths})


def check_reference(items: Sequence[str]) -> None:
    """Refuse reference items that are missing or hold no image, before the model loads.

    A manifest with stored features passes here: whether they come from the model's image tower is
    known once it is loaded (if not, its images are encoded and must then exist).

    Raises:
        InputError: a missing item, or one without images.

    """
    if isinstance(items, str):
        raise InputError(f"reference= takes a list of paths, got the string {items!r}: pass [{items!r}]")
    for item in items:
        if is_reference_manifest(item) and header_path(item).is_file():
            continue
        reference_images([item])


def check_reference_given(method: str | None, reference: Sequence[str], method_object: ScoreMethod | None = None,
                          *, reference_given: bool = False) -> None:
    """Refuse a method fitted on reference images (knn, mahalanobis) when none are given.

    Args:
        method: The method's registry name (None: the default method, which needs none).
        reference: The reference items given.
        method_object: A configured method instance that replaces the registry's ``method``.
        reference_given: Reference features are given some other way (already loaded).

    Raises:
        InputError: the method needs reference images and none were given; the message names ``--reference``.

    """
    if reference or reference_given:
        return
    chosen: Any = method_object
    if chosen is None:
        if not method:
            return
        chosen = score_methods.peek(method.lower()) or score_methods.get(method.lower())
    if getattr(chosen, "needs_reference", False):
        raise InputError(needs_reference_message(str(chosen.name)))
