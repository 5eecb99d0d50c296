"""Small on-disk image data sets for tests: no network, seconds to write, easy enough to learn."""

from __future__ import annotations

import colorsys
import struct
from pathlib import Path

import numpy as np
from PIL import Image

MNIST_SIZE = 28
MNIST_TYPE_UBYTE = 0x08  # IDX element type code for unsigned bytes


def class_colour(k: int, classes: int) -> np.ndarray:
    """Class ``k``'s dominant RGB colour: hues spread evenly, so any two classes differ clearly."""
    return np.array(colorsys.hsv_to_rgb(k / classes, 0.8, 0.9)) * 255


def make_image_folder(root: Path, classes: int = 2, per_class: int = 16, size: int = 32,
                      seed: int = 0) -> Path:
    """Write ``root/{train,val}/class_K/NNNN.png`` (ImageFolder layout) and return ``root``.

    Class K is its own colour plus pixel noise: a small CNN separates the classes within a couple
    of epochs, while no two images are equal (so random augmentations visibly change them).
    Validation gets ``per_class // 4`` images per class, at least 2.
    """
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(2, per_class // 4))):
        for k in range(classes):
            folder = root / split / f"class_{k}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = class_colour(k, classes) + rng.normal(scale=30, size=(size, size, 3))
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


def write_mnist_raw(root: Path, train: int, test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Write MNIST's four uncompressed IDX files into ``root/MNIST/raw``, the names and format
    torchvision's ``MNIST`` reads (it checks only that the four files exist); return the labels
    written, train then test.

    Digit k is a bright 5x8 block at a position of its own on a dark noisy background: learnable.
    """
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = []
    for prefix, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, size=count).astype(np.uint8)
        images = rng.integers(0, 60, size=(count, MNIST_SIZE, MNIST_SIZE)).astype(np.uint8)
        for image, label in zip(images, labels, strict=True):
            row, col = 4 + 12 * (label // 5), 1 + 5 * (label % 5)
            image[row:row + 8, col:col + 5] = 255
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written.append(labels)
    return written[0], written[1]


def _write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, the element type, the number of dimensions, each size as a big-endian
    uint32, then the bytes."""
    header = struct.pack(">HBB", 0, MNIST_TYPE_UBYTE, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())
