"""Data side of hf_relkd: real/virtual views as 🤗 Datasets transforms, a collator, normalisation helpers and
the embedded digits dataset used by the quick start."""

from .collator import DistillationCollator
from .digits import DIGITS_MEAN, DIGITS_NORMALIZATION, DIGITS_STD, load_digits_dataset
from .processor import build_image_processor
from .views import (
    CIFAR100_MEAN,
    CIFAR100_NORMALIZATION,
    CIFAR100_STD,
    IMAGE_COLUMN_CANDIDATES,
    IMAGENET_MEAN,
    IMAGENET_NORMALIZATION,
    IMAGENET_STD,
    LABEL_COLUMN_CANDIDATES,
    Normalization,
    Renormalize,
    ViewTransform,
    eval_transform,
    image_to_tensor,
    train_transform,
)

__all__ = [
    "build_image_processor",
    "CIFAR100_MEAN",
    "CIFAR100_NORMALIZATION",
    "CIFAR100_STD",
    "DIGITS_MEAN",
    "DIGITS_NORMALIZATION",
    "DIGITS_STD",
    "DistillationCollator",
    "IMAGENET_MEAN",
    "IMAGENET_NORMALIZATION",
    "IMAGENET_STD",
    "IMAGE_COLUMN_CANDIDATES",
    "LABEL_COLUMN_CANDIDATES",
    "Normalization",
    "Renormalize",
    "ViewTransform",
    "eval_transform",
    "image_to_tensor",
    "load_digits_dataset",
    "train_transform",
]
