"""The 5-template ensemble PLP pseudo-labels with (torch-free: ``oodfilter fit plp`` checks its options first)."""

PLP_TEMPLATES = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of many {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
)
