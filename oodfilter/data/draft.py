"""Fast decoding of large photos: a JPEG reduced while it decodes, then resized as the model resizes the full one.

libjpeg can decode a JPEG at 1/2, 1/4 or 1/8 of its size by scaling in the DCT domain, skipping most of
the work of a full decode (:func:`~oodfilter.data.decode.load_reduced_rgb_image`). The reduction stops
while the image keeps at least twice the model's resize target on each side (``FLOOR_FACTOR``). The
reduced image is then resized by the model's own first step, a torchvision ``Resize``, with the full
image's geometry: the output size the Resize computes for the full image, its interpolation, and the
reduced image's region that shows the full picture (a plain Resize of the reduced image would get a size
one pixel off and a partial last row of pixels, and shift the centre crop). The model's transform then
runs unchanged: its Resize finds the image already at its output size and returns it as it is.

Measured on 12 MP JPEGs (``benchmarks/decode.py``, 2 busy cores): after the model's preprocessing at 224 px
the pixels differ from the full decode's by 0.2 grey levels on average, 4 at most; decoding and preprocessing
run 4.3-6.3x faster. It is not the default (``scan --fast-decode`` opts in): on the benchmark world 0.5-1.9% of
decisions at a threshold calibrated for 95% ID recall move, above the 0.5% a default may move
(``benchmarks/world/RESULTS.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from oodfilter.data.decode import ReducedImage

# The reduced image keeps at least this many times the model's resize target on each side.
FLOOR_FACTOR = 2


@dataclass(frozen=True)
class FastDecode:
    """How to decode images for a model whose preprocessing starts with ``resize`` (picklable, for workers).

    Attributes:
        resize: The model's first preprocessing step.

    """

    resize: T.Resize

    @property
    def floor(self) -> tuple[int, int]:
        """The smallest (width, height) a JPEG may be reduced to: ``FLOOR_FACTOR`` times the resize target."""
        size = self.resize.size
        height, width = (size, size) if isinstance(size, int) else (size[0], size[-1])
        return FLOOR_FACTOR * int(width), FLOOR_FACTOR * int(height)

    def output_size(self, full_size: tuple[int, int]) -> tuple[int, int]:
        """(width, height) the Resize makes of an image of ``full_size``, by torchvision's rule (no max_size)."""
        width, height = full_size
        size = self.resize.size
        if not isinstance(size, int) and len(size) == 2:  # (height, width): squashed to it
            return int(size[1]), int(size[0])
        short_target = size if isinstance(size, int) else size[0]
        short, long = min(width, height), max(width, height)
        new_long = int(short_target * long / short)
        return (short_target, new_long) if width <= height else (new_long, short_target)

    def __call__(self, decoded: ReducedImage) -> Image.Image:
        """Resize ``decoded`` to what the model's Resize makes of the full image (the image itself if not reduced)."""
        if not decoded.reduced:
            return decoded.image
        resample = TF.pil_modes_mapping[self.resize.interpolation]
        return decoded.image.resize(self.output_size(decoded.full_size), resample, box=decoded.box)


def fast_decode_for(transform: Callable[[Any], Any]) -> FastDecode | None:
    """Return how to decode fast for ``transform``, or None when it cannot be done without changing the result.

    Only a torchvision ``Compose`` whose first step is a plain ``Resize`` (open_clip's evaluation
    preprocessing) to a size of one or two numbers, without ``max_size``, qualifies; for any other
    transform images are decoded in full (a step before the resize, a crop say, would see other pixels).
    """
    steps = getattr(transform, "transforms", None)
    if not isinstance(transform, T.Compose) or not isinstance(steps, list) or not steps:
        return None
    resize = steps[0]
    if type(resize) is not T.Resize or resize.max_size is not None:
        return None
    size = resize.size
    sides = [size] if isinstance(size, int) else list(size) if isinstance(size, list | tuple) else []
    if len(sides) not in (1, 2) or not all(isinstance(side, int) and side >= 1 for side in sides):
        return None
    if resize.interpolation not in TF.pil_modes_mapping:
        return None
    return FastDecode(resize)
