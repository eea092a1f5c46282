"""Shared fixtures: the tiny model, temporary caches, and the real image data under ../shared/data."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Helper modules that several test files import (tests run in importlib mode, so they cannot import each other).
sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports open_clip / huggingface_hub: never touch the network.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session", autouse=True)
def private_state_dir(tmp_path_factory: pytest.TempPathFactory):
    """The user's state folder (the journal key) is one of the session's, never the real one."""
    folder = tmp_path_factory.mktemp("state")
    previous = os.environ.get("OODFILTER_STATE_DIR")
    os.environ["OODFILTER_STATE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("OODFILTER_STATE_DIR", None)
    else:
        os.environ["OODFILTER_STATE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_model():
    """The registered test-tiny CLIPN (seeded random weights, trained-looking no-branch)."""
    import oodfilter

    return oodfilter.load_model("test-tiny", device="cpu")


@pytest.fixture
def fresh_tiny_model():
    """A test-tiny model built like any open_clip name: untrained no-branch copied from the yes tower."""
    from oodfilter.model.build import build_from_open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return build_from_open_clip("test-tiny").eval()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """An empty cache root for text vectors."""
    path = tmp_path / "cache"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's real image data (ImageNet sample, DTD, Tiny-ImageNet, WordNet); skips without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real image data not found at {SHARED_DATA} (only present in the project workspace and CI)")
    return SHARED_DATA


def _png_with_declared_size(path: Path, width: int, height: int) -> None:
    """A small PNG whose header claims ``width`` x ``height`` pixels: a decompression bomb's signature."""
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


def make_awkward_images(folder: Path) -> dict[str, str]:
    """Write one file per awkward case into ``folder``; return file name → expected status."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    expected: dict[str, str] = {}

    (folder / "zero.jpg").write_bytes(b"")
    expected["zero.jpg"] = "error"
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    expected["truncated.jpg"] = "error"
    (folder / "text.jpg").write_text("I am a text file with an image name\n")
    expected["text.jpg"] = "error"
    _png_with_declared_size(folder / "bomb.png", 30_000, 30_000)
    expected["bomb.png"] = "error"
    (folder / "broken_link.jpg").symlink_to(folder / "does-not-exist.jpg")
    expected["broken_link.jpg"] = "error"

    photo.convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (32, 32))).astype(np.uint16)).save(folder / "deep16.png")
    photo.convert("P").save(folder / "palette.png")
    photo.convert("RGBA").save(folder / "alpha.png")
    photo.convert("L").save(folder / "gray.JPG")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(folder / "rotated.jpeg", exif=exif)
    Image.new("RGB", (1, 1), (9, 9, 9)).save(folder / "one_pixel.png")
    Image.fromarray(rng.integers(0, 255, (1500, 2500, 3), dtype=np.uint8)).save(folder / "large.jpg", quality=70)
    for name in ("cmyk.jpg", "deep16.png", "palette.png", "alpha.png", "gray.JPG", "rotated.jpeg", "one_pixel.png",
                 "large.jpg"):
        expected[name] = "ok"
    return expected


@pytest.fixture(scope="session")
def awkward_images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A folder of awkward inputs (corrupt, bomb, CMYK, 16-bit, EXIF, ...) and each one's expected status."""
    folder = tmp_path_factory.mktemp("awkward")
    return folder, make_awkward_images(folder)


@pytest.fixture(scope="session")
def real_images(shared_data: Path) -> list[Path]:
    """Two dozen real photos (ImageNet sample) and textures (DTD)."""
    photos = sorted((shared_data / "imagenet-sample" / "images").iterdir())[:16]
    textures = sorted((shared_data / "textures-dtd" / "images").rglob("*.jpg"))[::150][:8]
    return photos + textures
