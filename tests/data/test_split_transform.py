"""The split preprocessing (uint8 pixels from the workers, normalised per batch) equals the whole transform."""

from __future__ import annotations

import open_clip
import pytest
import torch
from torchvision import transforms as T

import oodfilter
from oodfilter.data.dataset import collate_decoded
from oodfilter.data.loader import image_batches
from oodfilter.data.split_transform import split_transform


def test_open_clip_preprocessing_splits_bit_identically_on_real_and_awkward_images(real_images, awkward_images):
    preprocess = open_clip.image_transform(224, is_train=False)
    split = split_transform(preprocess)
    assert split is not None
    folder, expected = awkward_images
    files = [str(p) for p in real_images] + [str(folder / name) for name, status in expected.items()
                                             if status == "ok"]
    whole = [preprocess(oodfilter.load_rgb_image(f)) for f in files]
    batches = list(image_batches(files, preprocess, batch_size=7, workers=0))
    assert all(batch.errors == [] for batch in batches)
    split_images = torch.cat([batch.images for batch in batches])  # type: ignore[misc]
    assert split_images.dtype == torch.float32
    assert torch.equal(split_images, torch.stack(whole))  # the same float operations, bit for bit


def test_only_a_compose_ending_in_to_tensor_and_normalize_is_split():
    normalize = T.Normalize((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    assert split_transform(T.Compose([T.Resize(8), T.ToTensor(), normalize])) is not None
    assert split_transform(T.Compose([T.Resize(8), T.ToTensor()])) is None
    assert split_transform(T.Compose([T.ToTensor(), normalize, T.Resize(8)])) is None
    assert split_transform(T.Compose([T.ToTensor(), T.Lambda(lambda x: x), normalize])) is None
    assert split_transform(lambda image: T.functional.to_tensor(image)) is None


@pytest.mark.parametrize("mode", ["HSV", "RGB"])  # HSV: three channels, but not an RGB image
def test_a_non_rgb_result_is_handed_over_as_floats_and_a_mixed_batch_scales_the_rest(mode):
    from PIL import Image

    normalize = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    grey_to_three = T.Lambda(lambda image: image.convert(mode))
    transform = T.Compose([grey_to_three, T.ToTensor(), T.Lambda(lambda t: t.expand(3, -1, -1)), normalize])
    assert split_transform(transform) is None  # a step between ToTensor and Normalize: not split
    transform = T.Compose([grey_to_three, T.ToTensor(), normalize])
    split = split_transform(transform)
    assert split is not None
    image = Image.new("RGB", (4, 4), (10, 200, 30))
    handed = split.pixels(image)
    assert handed.dtype == (torch.uint8 if mode == "RGB" else torch.float32)
    rgb = split_transform(T.Compose([T.ToTensor(), normalize])).pixels(image)  # type: ignore[union-attr]
    batch = collate_decoded([{"index": 0, "image": rgb, "error": None},
                             {"index": 1, "image": T.functional.to_tensor(image), "error": None}])
    assert batch.images is not None and batch.images.dtype == torch.float32
    assert torch.equal(batch.images[0], batch.images[1])  # uint8 scaled exactly as ToTensor scales


def test_a_transform_whose_result_normalize_would_refuse_gives_error_rows_and_the_run_goes_on(tmp_path):
    from PIL import Image

    files = []
    for i in range(3):
        files.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (10 * i, 20, 30)).save(files[-1])
    normalize = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    for shaping in (T.Grayscale(1), T.Lambda(lambda image: image.convert("RGBA"))):
        transform = T.Compose([shaping, T.ToTensor(), normalize])
        assert split_transform(transform) is not None
        for workers in (0, 2):
            batches = list(image_batches(files, transform, batch_size=2, workers=workers))
            errors = [reason for batch in batches for _, reason in batch.errors]
            assert len(errors) == 3 and all("preprocessing failed" in e and "channels" in e for e in errors)
            assert all(batch.images is None for batch in batches)


def test_a_to_tensor_subclass_is_not_split_and_the_batch_can_be_finished_on_a_device():
    class Scaled(T.ToTensor):
        def __call__(self, picture):
            return super().__call__(picture) * 0.5

    normalize = T.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))
    assert split_transform(T.Compose([Scaled(), normalize])) is None
    split = split_transform(T.Compose([T.ToTensor(), normalize]))
    assert split is not None
    pixels = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    on_device = split.finish(pixels.to(torch.device("cpu")))
    assert torch.equal(on_device, normalize(pixels.float().div(255)))
