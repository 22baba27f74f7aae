"""A tiny embedded image-classification dataset for the quick start: scikit-learn's handwritten digits.

``sklearn.datasets.load_digits`` ships 1,797 8x8 grayscale digits inside the scikit-learn wheel, so this needs no
download. Images are scaled from 0..16 to 0..255, upscaled with a bilinear resize and stored as RGB PIL images.

``DIGITS_MEAN``/``DIGITS_STD`` are hard-coded: they were computed with :meth:`Normalization.from_dataset` on the
``"train"`` split of ``load_digits_dataset()`` with its defaults (``image_size=32, test_size=0.25, seed=0``);
``tests/test_data.py`` recomputes them. For other settings, compute your own with
``Normalization.from_dataset(splits["train"])`` (the values barely change).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import PIL.Image

from .views import Normalization

if TYPE_CHECKING:
    from datasets import DatasetDict

__all__ = ["DIGITS_MEAN", "DIGITS_NORMALIZATION", "DIGITS_STD", "load_digits_dataset"]

DIGITS_MEAN: tuple[float, float, float] = (0.3055, 0.3055, 0.3055)
DIGITS_STD: tuple[float, float, float] = (0.3234, 0.3234, 0.3234)
DIGITS_NORMALIZATION = Normalization(mean=DIGITS_MEAN, std=DIGITS_STD)


def load_digits_dataset(image_size: int = 32, test_size: float = 0.25, seed: int = 0) -> DatasetDict:
    """Build the scikit-learn digits as a 🤗 ``DatasetDict`` with ``"train"`` and ``"test"`` splits.

    Args:
        image_size: side length the 8x8 digits are upscaled to (bilinear).
        test_size: fraction of the 1,797 images in the ``"test"`` split (stratified by class).
        seed: seed of the stratified split.

    Returns:
        ``datasets.DatasetDict`` whose splits have columns ``image`` (RGB PIL images, ``image_size`` squared) and
        ``label`` (``ClassLabel`` with names ``"0"`` .. ``"9"``).
    """
    if not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"`image_size` must be a positive int, got {image_size!r}.")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"`test_size` must be a fraction in (0, 1), got {test_size!r}.")
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image  # noqa: F811
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.clip(np.rint(digits.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    indices = np.arange(len(labels))
    train_idx, test_idx = train_test_split(indices, test_size=test_size, random_state=seed, stratify=labels)
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})

    def build(idx: np.ndarray) -> Dataset:
        images = [
            PIL.Image.fromarray(pixels[i], mode="L")
            .resize((image_size, image_size), PIL.Image.Resampling.BILINEAR)
            .convert("RGB")
            for i in idx
        ]
        return Dataset.from_dict({"image": images, "label": labels[idx].tolist()}, features=features)

    return DatasetDict({"train": build(train_idx), "test": build(test_idx)})
