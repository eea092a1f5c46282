"""Prompt templates that turn class names into captions."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from importlib import resources

from oodfilter.errors import InputError, UnknownNameError
from oodfilter.messages import excerpt


def _read_template_file(name: str) -> tuple[str, ...]:
    text = resources.files("oodfilter.text").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    return tuple(line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#"))


TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    # The single template of MCM's evaluation.
    "photo": ("a photo of a {}.",),
    # The 128 templates CLIPN's reference evaluation averages, as the reference tokenizes them (each wrapped in
    # literal quotes, two with a trailing comma): with the reference weights, scores equal the reference's
    # only with these.
    "clipn": _read_template_file("clipn_templates.txt"),
    # The same 128 without the quotes and commas (what oodfilter used as "clipn" before 0.2).
    "clipn-clean": _read_template_file("clipn_clean_templates.txt"),
    # The 7-template subset of CLIP's ImageNet prompts that its authors found best on their own.
    "ensemble": (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
}
# "auto": the CLIPN set for a CLIPN model (trained no-branch), "photo" otherwise; see resolve_template_choice.
AUTO_TEMPLATES = "auto"
DEFAULT_TEMPLATES = AUTO_TEMPLATES


def resolve_template_choice(templates: str | Sequence[str], *, clipn_model: bool) -> str | tuple[str, ...]:
    """Replace ``auto`` by the set it stands for: ``clipn`` for a CLIPN model, else ``photo``.

    The choice depends on the model only, so every method scores a model's images against the same
    class vectors (a CLIPN model's with the reference's 128 templates). Other names and lists are
    returned as they are (lists as tuples).
    """
    if isinstance(templates, str):
        if templates == AUTO_TEMPLATES:
            return "clipn" if clipn_model else "photo"
        return templates
    return tuple(templates)


def templates_digest(templates: Sequence[str]) -> str:
    """Return the sha256 of a template list's text, in order: the identity of the captions it makes.

    Manifests, rescores and resumes compare this, not a set's name, so an edited template file or a set whose
    captions changed between versions is never taken for the one a manifest was made with.
    """
    return hashlib.sha256(json.dumps(list(templates), ensure_ascii=False).encode("utf-8")).hexdigest()


def resolve_templates(templates: str | Sequence[str] = DEFAULT_TEMPLATES) -> tuple[str, ...]:
    """Return the templates for a set name (``photo``, ``clipn``, ``clipn-clean``, ``ensemble``) or a list of templates.

    ``auto`` means ``photo`` here; :func:`resolve_template_choice` picks ``clipn`` for CLIPN methods.

    Raises:
        UnknownNameError: an unknown set name.
        InputError: an empty list, or a template without exactly one ``{}`` placeholder.

    """
    if isinstance(templates, str):
        templates = resolve_template_choice(templates, clipn_model=False)
        if templates not in TEMPLATE_SETS:
            raise UnknownNameError(
                f"unknown template set '{templates}'; choose auto, {', '.join(TEMPLATE_SETS)} or pass a list"
            )
        return TEMPLATE_SETS[templates]
    resolved = tuple(templates)
    if not resolved:
        raise InputError("the template list is empty; pass at least one template such as 'a photo of a {}.'")
    for template in resolved:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise InputError(f"template {excerpt(template)} must contain exactly one '{{}}' where the class name goes")
    return resolved
