"""Prompt templates that turn class names into captions."""

from __future__ import annotations

from collections.abc import Sequence

from oodfilter.errors import InputError, UnknownNameError

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    # The single template of MCM and of CLIPN's evaluation.
    "photo": ("a photo of a {}.",),
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
DEFAULT_TEMPLATES = "photo"


def resolve_templates(templates: str | Sequence[str] = DEFAULT_TEMPLATES) -> tuple[str, ...]:
    """Return the templates for a set name (``photo``, ``ensemble``) or a list of template strings.

    Raises:
        UnknownNameError: an unknown set name.
        InputError: an empty list, or a template without exactly one ``{}`` placeholder.

    """
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise UnknownNameError(
                f"unknown template set '{templates}'; choose {', '.join(TEMPLATE_SETS)} or pass a list"
            )
        return TEMPLATE_SETS[templates]
    resolved = tuple(templates)
    if not resolved:
        raise InputError("the template list is empty; pass at least one template such as 'a photo of a {}.'")
    for template in resolved:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise InputError(f"template {template!r} must contain exactly one '{{}}' where the class name goes")
    return resolved
