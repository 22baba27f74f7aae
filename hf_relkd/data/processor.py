"""The image processor saved beside a student, so ``pipeline("image-classification")`` prepares inputs exactly like
the evaluation transform (resize to the training resolution, the student's normalisation)."""

from __future__ import annotations

from transformers import ViTImageProcessor

from .views import Normalization


def build_image_processor(normalization: Normalization, image_size: int) -> ViTImageProcessor:
    """A 🤗 image processor that resizes to ``image_size`` × ``image_size`` and applies ``normalization``.

    Args:
        normalization: the student's input normalisation (e.g. ``CIFAR100_NORMALIZATION``).
        image_size: the resolution the student was trained at.

    Returns:
        A ``ViTImageProcessor`` (a generic resize + rescale + normalise processor that ``AutoImageProcessor`` and
        ``pipeline`` load without any custom code).
    """
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(normalization.mean),
        image_std=list(normalization.std),
    )
