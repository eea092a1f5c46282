"""Fast decoding of large JPEGs (scan --fast-decode): reduced in the DCT domain, then resized as the full image.

Tolerance, stated once: after the model's preprocessing (resize, centre crop) the reduced decode's uint8
pixels differ from the full decode's by at most MEAN_LEVELS grey levels on average and MAX_LEVELS at any
pixel (measured on 12 MP photos: 0.05-0.2 on average, at most 5).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, JpegImagePlugin
from servers import http_server
from shard_data import add_member
from torchvision import transforms as T

import oodfilter
from oodfilter.cli.main import cli
from oodfilter.data.dataset import decode_item
from oodfilter.data.decode import ImageDecodeError, load_reduced_rgb_image, load_rgb_image
from oodfilter.data.draft import FLOOR_FACTOR, fast_decode_for
from oodfilter.data.loader import image_batches
from oodfilter.data.split_transform import split_transform
from oodfilter.engines.ray_engine import decode_batch
from oodfilter.scan import ScanConfig, scan
from oodfilter.sinks.manifest import read_manifest

MEAN_LEVELS, MAX_LEVELS = 0.5, 8
VIT = open_clip.image_transform(224, is_train=False)  # ViT-B-16's preprocessing: Resize(224), CenterCrop(224), ...


def _large(source: Path, path: Path, megapixels: float = 12.0, exif: Image.Exif | None = None) -> Path:
    """``source`` upscaled (aspect kept) to ``megapixels`` and saved as a quality-90 JPEG (a phone photo's size)."""
    image = load_rgb_image(source)
    scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    image.save(path, quality=90, **({"exif": exif} if exif is not None else {}))
    return path


def _assert_close(full: torch.Tensor, fast: torch.Tensor) -> None:
    assert full.dtype == fast.dtype == torch.uint8 and full.shape == fast.shape
    difference = (full.float() - fast.float()).abs()
    assert difference.mean() <= MEAN_LEVELS and difference.max() <= MAX_LEVELS, (difference.mean(), difference.max())


def _photos(shared_data: Path) -> list[Path]:
    """A landscape and a portrait ImageNet photo and a DTD texture."""
    images = shared_data / "imagenet-sample" / "images"
    return [images / "n01440764_tench.JPEG", images / "n02669723_academic_gown.JPEG",
            sorted((shared_data / "textures-dtd" / "images").rglob("*.jpg"))[300]]


@pytest.mark.parametrize("size", [224, 32])
def test_a_reduced_12_mp_photo_gives_the_full_decodes_pixels_after_the_models_preprocessing(shared_data, tmp_path,
                                                                                             size):
    transform = VIT if size == 224 else open_clip.image_transform(size, is_train=False)
    split, fast = split_transform(transform), fast_decode_for(transform)
    assert split is not None and fast is not None and fast.floor == (2 * size, 2 * size)
    for number, source in enumerate(_photos(shared_data)):
        path = _large(source, tmp_path / f"{number}.jpg")
        decoded = load_reduced_rgb_image(path, fast.floor)
        assert decoded.reduced and decoded.image.width <= -(-decoded.full_size[0] // 4)  # by 1/4 or 1/8
        full, _ = decode_item(str(path), split.pixels)
        reduced, error = decode_item(str(path), split.pixels, fast=fast)
        assert error is None and full is not None and reduced is not None
        _assert_close(full, reduced)


FLOOR_CASES = [((4000, 3000), 4), ((3000, 4000), 4), ((895, 2000), 1), ((896, 2000), 2), ((1792, 1792), 4),
               ((3584, 3600), 8), ((9000, 900), 2), ((7168, 7168), 8), ((20000, 1000), 2)]


@pytest.mark.parametrize(("size", "scale"), FLOOR_CASES)
def test_the_reduction_is_the_largest_that_keeps_twice_the_target_on_each_side(tmp_path, size, scale):
    path = tmp_path / "plain.jpg"
    Image.new("RGB", size, (90, 120, 150)).save(path, quality=90)
    fast = fast_decode_for(VIT)
    assert fast is not None
    decoded = load_reduced_rgb_image(path, fast.floor)
    width, height = decoded.image.size
    assert decoded.full_size == size
    assert min(width, height) >= FLOOR_FACTOR * 224  # never below twice the model's input size
    assert (width, height) == (-(-size[0] // scale), -(-size[1] // scale))  # libjpeg rounds up
    assert decoded.box == (0.0, 0.0, size[0] / scale, size[1] / scale)


def test_a_target_of_height_and_width_floors_each_side_and_other_transforms_decode_in_full(tmp_path):
    squash = T.Compose([T.Resize((100, 300)), T.CenterCrop(100)])
    fast = fast_decode_for(squash)
    assert fast is not None and fast.floor == (600, 200)
    path = tmp_path / "wide.jpg"
    Image.new("RGB", (2500, 3000), (10, 200, 30)).save(path)
    assert load_reduced_rgb_image(path, fast.floor).image.size == (625, 750)  # width 2500/4 >= 600; /8 would not be
    for transform in (T.Compose([T.CenterCrop(100), T.Resize(50)]), T.Compose([T.Resize(224, max_size=300)]),
                      T.Resize(224), lambda image: image, T.Compose([])):
        assert fast_decode_for(transform) is None


@pytest.mark.parametrize("size", [(4000, 3000), (3000, 4001), (1001, 999), (333, 1000), (2921, 4107), (64, 64)])
def test_the_output_size_is_the_one_torchvisions_resize_gives_the_full_image(size):
    fast = fast_decode_for(VIT)
    assert fast is not None
    assert fast.output_size(size) == T.Resize(224)(Image.new("L", size)).size


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_rotated_large_jpegs_come_out_upright_like_the_full_decode(shared_data, tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _large(_photos(shared_data)[1], tmp_path / "rotated.jpg", megapixels=7.0, exif=exif)  # a portrait
    split, fast = split_transform(VIT), fast_decode_for(VIT)
    assert split is not None and fast is not None
    decoded = load_reduced_rgb_image(path, fast.floor)
    full = load_rgb_image(path)
    assert decoded.reduced and decoded.full_size == full.size
    shrunk = np.asarray(full.resize(decoded.image.size, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(shrunk - np.asarray(decoded.image, dtype=np.float32)).mean() < 3  # upright, not turned
    full_pixels, _ = decode_item(str(path), split.pixels)
    fast_pixels, _ = decode_item(str(path), split.pixels, fast=fast)
    assert full_pixels is not None and fast_pixels is not None
    _assert_close(full_pixels, fast_pixels)


def test_the_floor_is_turned_with_the_exif_orientation(tmp_path):
    stored = Image.new("RGB", (4000, 1000), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 400, 1000))  # a red strip on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: 1000 wide, 4000 high, the strip on top
    path = tmp_path / "sideways.jpg"
    stored.save(path, quality=95, exif=exif)
    # Width >= 600 as displayed: the 1000-pixel side cannot be halved (the stored 4000 alone would allow 1/4).
    decoded = load_reduced_rgb_image(path, (600, 200))
    assert decoded.image.size == (1000, 4000) and not decoded.reduced
    # Height >= 600 as displayed: the 4000-pixel side allows 1/4 (the stored 1000 alone would allow none).
    decoded = load_reduced_rgb_image(path, (200, 600))
    assert decoded.image.size == (250, 1000) and decoded.full_size == (1000, 4000)
    red, _, blue = decoded.image.getpixel((125, 20))
    assert red > 200 and blue < 60  # the strip is on top


def test_other_formats_and_small_jpegs_decode_exactly_as_before(shared_data, tmp_path):
    photo = load_rgb_image(_photos(shared_data)[0]).resize((2000, 1500))
    split, fast = split_transform(VIT), fast_decode_for(VIT)
    assert split is not None and fast is not None
    cases = {"large.png": {}, "large.webp": {"quality": 90}, "large.tiff": {}, "small.jpg": {"quality": 90}}
    for name, options in cases.items():
        image = photo.resize((800, 600)) if name == "small.jpg" else photo  # 600 < 4 x 224: nothing to reduce
        image.save(tmp_path / name, **options)
        decoded = load_reduced_rgb_image(tmp_path / name, fast.floor)
        assert not decoded.reduced and decoded.image.size == image.size, name
        full, _ = decode_item(str(tmp_path / name), split.pixels)
        same, _ = decode_item(str(tmp_path / name), split.pixels, fast=fast)
        assert full is not None and same is not None and torch.equal(full, same), name


def test_cmyk_and_grayscale_large_jpegs_are_reduced_and_converted(tmp_path):
    fast = fast_decode_for(VIT)
    assert fast is not None
    Image.new("CMYK", (2000, 2000), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    gradient = np.tile(np.linspace(0, 255, 2000, dtype=np.uint8), (2000, 1))
    Image.fromarray(gradient, mode="L").save(tmp_path / "gray.jpg")
    cmyk = load_reduced_rgb_image(tmp_path / "cmyk.jpg", fast.floor)
    assert cmyk.reduced and cmyk.image.mode == "RGB" and cmyk.image.size == (500, 500)
    red, green, blue = cmyk.image.getpixel((250, 250))
    assert red > 200 and green < 60 and blue < 60  # CMYK (0, 255, 255, 0) is red
    gray = load_reduced_rgb_image(tmp_path / "gray.jpg", fast.floor)
    assert gray.reduced and gray.image.mode == "RGB" and gray.image.size == (500, 500)
    r, g, b = gray.image.getpixel((250, 250))
    assert r == g == b and abs(r - 128) < 4


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A tiny JPEG whose frame header claims ``width`` x ``height`` pixels (and whose data is 8x8)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc0")
    data[frame + 5: frame + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_the_bomb_check_counts_the_full_size_before_any_pixel_is_decoded(shared_data, tmp_path, monkeypatch):
    fast = fast_decode_for(VIT)
    assert fast is not None
    path = _large(_photos(shared_data)[0], tmp_path / "twelve.jpg")
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 10000000"):
        load_reduced_rgb_image(path, fast.floor, max_pixels=10_000_000)  # reduced it would be 0.75 MP
    calls: list[str] = []

    def spy(name: str):
        original = getattr(JpegImagePlugin.JpegImageFile, name)
        return lambda self, *args: calls.append(name) or original(self, *args)

    for name in ("load", "draft"):
        monkeypatch.setattr(JpegImagePlugin.JpegImageFile, name, spy(name))
    claims = tmp_path / "claims.jpg"
    claims.write_bytes(_jpeg_claiming(9000, 9000))  # 81 MP declared, 8x8 stored
    with pytest.raises(ImageDecodeError, match="exceeds the limit of 50000000"):
        load_reduced_rgb_image(claims, fast.floor, max_pixels=50_000_000)
    image, reason = decode_item(str(claims), lambda x: x, 50_000_000, fast)
    assert image is None and reason is not None and "decompression bomb" in reason
    assert calls == []  # refused from the header: the decoder was neither set up nor run
    load_reduced_rgb_image(claims, fast.floor)  # under the default limit it is decoded (reduced)
    assert calls[:2] == ["draft", "load"]


def test_a_truncated_large_jpeg_is_an_error_row(shared_data, tmp_path):
    whole = _large(_photos(shared_data)[0], tmp_path / "whole.jpg", megapixels=4.0).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    split, fast = split_transform(VIT), fast_decode_for(VIT)
    assert split is not None
    image, reason = decode_item(str(cut), split.pixels, fast=fast)
    assert image is None and reason is not None and reason.startswith("corrupt or truncated")


def test_shards_urls_loader_and_ray_tasks_decode_reduced_through_the_same_path(shared_data, tmp_path):
    fast = fast_decode_for(VIT)
    split = split_transform(VIT)
    assert fast is not None and split is not None
    folder = tmp_path / "served"
    folder.mkdir()
    path = _large(_photos(shared_data)[0], folder / "big.jpg", megapixels=4.0)
    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as archive:
        add_member(archive, "000001.jpg", path.read_bytes())
    expected = load_reduced_rgb_image(path, fast.floor)
    assert expected.reduced
    with http_server(folder) as base:
        for name in (f"{shard}#000001", f"{base}/big.jpg"):
            decoded = load_reduced_rgb_image(name, fast.floor)
            assert decoded.image.tobytes() == expected.image.tobytes(), name
            assert (decoded.full_size, decoded.box) == (expected.full_size, expected.box), name
    reference, _ = decode_item(str(path), split.pixels, fast=fast)
    assert reference is not None
    (batch,) = list(image_batches([str(path)], VIT, batch_size=2, workers=0, fast_decode=True))
    assert batch.images is not None
    assert torch.equal(batch.images[0], split.finish(reference.unsqueeze(0))[0])
    full_batch = decode_batch({"path": np.array([str(path)])}, preprocess=VIT, image_size=224, max_pixels=10**8)
    fast_batch = decode_batch({"path": np.array([str(path)])}, preprocess=VIT, image_size=224, max_pixels=10**8,
                              fast_decode=True)
    assert torch.allclose(torch.from_numpy(fast_batch["image"][0]), split.finish(reference.unsqueeze(0))[0])
    assert not np.array_equal(full_batch["image"], fast_batch["image"])


CLASSES = ["tench", "goldfish", "great white shark", "hen", "ostrich"]


@pytest.mark.slow
def test_a_fast_decode_scan_and_its_calibration_decode_reduced(real_images, tmp_path, tiny_model):
    # test-tiny's input is 32 px: every real photo (short side >= 256) is at least 4x that, so it is reduced.
    config = {"inputs": [str(p) for p in real_images[:8]], "classes": CLASSES, "workers": 0, "batch_size": 4,
              "method": "mcm", "threshold": 0.5,
              "cache_dir": str(tmp_path / "cache")}
    scan(ScanConfig(**config, out=str(tmp_path / "full.jsonl")), model=tiny_model)
    scan(ScanConfig(**config, out=str(tmp_path / "fast.jsonl"), fast_decode=True), model=tiny_model)
    full = {row.path: row.ood_score for row in read_manifest(tmp_path / "full.jsonl")}
    fast = {row.path: row.ood_score for row in read_manifest(tmp_path / "fast.jsonl")}
    assert full.keys() == fast.keys() and len(full) == 8
    differences = [abs(full[p] - fast[p]) for p in full]
    assert 0 < max(differences) < 0.05  # decoded otherwise, and nearly the same scores
    vectors = oodfilter.build_class_vectors(tiny_model, CLASSES, templates="photo", cache_dir=tmp_path / "cache")
    scorer = oodfilter.Scorer(tiny_model, vectors, "mcm")
    files = [str(p) for p in real_images[:20]]
    thresholds = {setting: oodfilter.calibrate(scorer, files, 0.95, fast_decode=setting).threshold
                  for setting in (False, True)}
    scores = [row.score for rows in oodfilter.score_files(scorer, files, fast_decode=True) for row in rows]
    assert thresholds[True] == oodfilter.Calibration.fit(torch.tensor(scores, dtype=torch.float64), 0.95,
                                                         method="mcm", identity={}).threshold
    assert thresholds[True] != thresholds[False]


def test_the_cli_flag_sets_fast_decode_and_a_resume_must_keep_it(real_images, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(CLASSES) + "\n")
    out = tmp_path / "m.jsonl"
    common = ["scan", str(real_images[0]), "--model", "test-tiny", "--classes", str(classes), "--cache-dir",
              str(tmp_path / "cache"), "--workers", "0", "--out", str(out), "--method", "mcm", "--threshold", "0.5"]
    result = CliRunner().invoke(cli, [*common, "--fast-decode"])
    assert result.exit_code == 0, result.output
    assert "fast_decode: true" in (tmp_path / "m.jsonl.config.yaml").read_text()
    assert json.loads((tmp_path / "m.jsonl.meta.json").read_text())["decode"] == "fast"
    result = CliRunner().invoke(cli, [*common, "--resume"])  # without the flag: full decoding
    assert result.exit_code == 1 and "different decoding" in str(result.exception)
    assert CliRunner().invoke(cli, [*common, "--resume", "--fast-decode"]).exit_code == 0
    assert "--fast-decode / --no-fast-decode" in " ".join(CliRunner().invoke(cli, ["scan", "--help"]).output.split())
