"""Image decoding and data sources.

The names below are imported on first access (see :mod:`oodfilter.lazy`), so that the torch- and
Pillow-free modules of this package (remote URLs, file discovery) load on their own: the CLI reads
them to build ``--help``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oodfilter.lazy import lazy_attribute, lazy_dir

_EXPORTS = {
    "ImageDecodeError": "oodfilter.data.decode",
    "load_rgb_image": "oodfilter.data.decode",
}

if TYPE_CHECKING:
    from oodfilter.data.decode import ImageDecodeError, load_rgb_image


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, globals(), _EXPORTS, name)


def __dir__() -> list[str]:
    return lazy_dir(globals(), _EXPORTS)


__all__ = [
    "ImageDecodeError",
    "load_rgb_image",
]
