"""Real and virtual image views as 🤗 Datasets transforms, plus normalisation helpers.

A :class:`ViewTransform` is meant for :meth:`datasets.Dataset.with_transform` / ``set_transform``: it receives a
batch (column name -> list of values) and returns ``pixel_values`` (normalised float32 ``(3, H, W)`` tensors),
``labels`` (ints) and, for VRM, ``pixel_values_virtual``: the same image under RandAugment followed by the *same*
weak augmentation as the real view (identical crop and flip), so the two views are spatially aligned and differ
only by the RandAugment operations.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
from torch import Tensor, nn
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "CIFAR100_MEAN",
    "CIFAR100_NORMALIZATION",
    "CIFAR100_STD",
    "IMAGE_COLUMN_CANDIDATES",
    "IMAGENET_MEAN",
    "IMAGENET_NORMALIZATION",
    "IMAGENET_STD",
    "LABEL_COLUMN_CANDIDATES",
    "Normalization",
    "Renormalize",
    "ViewTransform",
    "eval_transform",
    "image_to_tensor",
    "train_transform",
]

CIFAR100_MEAN: tuple[float, float, float] = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: tuple[float, float, float] = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Column names tried, in order, when ``image_column`` is not given.
IMAGE_COLUMN_CANDIDATES: tuple[str, ...] = ("img", "image", "picture", "photo")
#: Column names tried, in order, when ``label_column`` is not given.
LABEL_COLUMN_CANDIDATES: tuple[str, ...] = ("fine_label", "label", "labels")


def _as_triple(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, numbers.Real):
        values = (float(values),) * 3
    if isinstance(values, Tensor | np.ndarray):
        values = values.tolist()
    try:
        out = tuple(float(v) for v in values)
    except TypeError as err:
        raise TypeError(
            f"Normalization `{name}` must be a sequence of 3 floats (one per RGB channel), got {values!r}."
        ) from err
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise ValueError(
            f"Normalization `{name}` must have 3 values (one per RGB channel), got {len(out)}: {out}. "
            "Pass e.g. `Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))`."
        )
    return out


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation of images scaled to ``[0, 1]``.

    Lists, scalars and single values are broadcast to three RGB channels; ``std`` must be positive.

    Args:
        mean: per-channel mean (R, G, B).
        std: per-channel standard deviation (R, G, B).
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = _as_triple(self.mean, "mean"), _as_triple(self.std, "std")
        if any(not math.isfinite(s) or s <= 0 for s in std) or any(not math.isfinite(m) for m in mean):
            raise ValueError(
                f"Normalization needs finite means and positive stds, got mean={mean}, std={std}."
            )
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def isclose(self, other: Normalization, atol: float = 1e-6) -> bool:
        """Whether two normalisations agree up to ``atol``.

        Args:
            other: the normalisation to compare with.
            atol: absolute tolerance per value.

        Returns:
            True when every mean and std differs by at most ``atol``.
        """
        return all(
            math.isclose(a, b, rel_tol=0.0, abs_tol=atol)
            for a, b in zip(self.mean + self.std, other.mean + other.std)
        )

    def normalize(self, images: Tensor) -> Tensor:
        """Normalise images in ``[0, 1]`` with shape ``(..., 3, H, W)``.

        Args:
            images: float tensor of images scaled to ``[0, 1]``.

        Returns:
            ``(images - mean) / std``.
        """
        mean, std = self._stats_like(images)
        return (images - mean) / std

    def denormalize(self, images: Tensor) -> Tensor:
        """Invert :meth:`normalize`.

        Args:
            images: float tensor ``(..., 3, H, W)`` normalised with this normalisation.

        Returns:
            ``images * std + mean``, i.e. images back in ``[0, 1]``.
        """
        mean, std = self._stats_like(images)
        return images * std + mean

    def _stats_like(self, images: Tensor) -> tuple[Tensor, Tensor]:
        kwargs = {
            "device": images.device,
            "dtype": images.dtype if images.is_floating_point() else torch.float32,
        }
        return (
            torch.tensor(self.mean, **kwargs).view(3, 1, 1),
            torch.tensor(self.std, **kwargs).view(3, 1, 1),
        )

    @classmethod
    def from_model(cls, model_or_processor: Any) -> Normalization | None:
        """Read the normalisation a model expects.

        Looks, in order, for: a :class:`Normalization` (returned as is); a mapping with ``mean``/``std`` keys
        (a timm ``pretrained_cfg`` or data config); ``image_mean``/``image_std`` attributes (a 🤗 image processor);
        a ``TimmWrapperForImageClassification`` (its ``timm_model``) or a timm model (anything with a
        ``pretrained_cfg``), resolved with ``timm.data.resolve_data_config({}, model=...)``.

        Args:
            model_or_processor: an image processor, a timm model, a ``TimmWrapper*`` model, a mapping or None.

        Returns:
            The normalisation, or None when nothing could be found (e.g. a plain ``nn.Module`` or a 🤗 model
            whose statistics live in its image processor; pass the processor then).
        """
        obj = model_or_processor
        if obj is None:
            return None
        if isinstance(obj, Normalization):
            return obj
        if isinstance(obj, Mapping):
            if obj.get("mean") is not None and obj.get("std") is not None:
                return cls(mean=obj["mean"], std=obj["std"])
            return None
        mean, std = getattr(obj, "image_mean", None), getattr(obj, "image_std", None)
        if mean is not None and std is not None:
            return cls(mean=mean, std=std)
        data_config = getattr(obj, "data_config", None)  # timm-backed 🤗 image processors
        if isinstance(data_config, Mapping) and data_config.get("mean") is not None:
            return cls.from_model(data_config)
        timm_model = getattr(obj, "timm_model", None)
        if isinstance(timm_model, nn.Module):
            obj = timm_model
        if isinstance(obj, nn.Module) and isinstance(getattr(obj, "pretrained_cfg", None), Mapping):
            from timm.data import resolve_data_config

            config = resolve_data_config({}, model=obj)
            return cls(mean=config["mean"], std=config["std"])
        return None

    @classmethod
    def from_dataset(
        cls,
        dataset: Iterable[Mapping[str, Any]],
        image_column: str | None = None,
        max_samples: int | None = None,
    ) -> Normalization:
        """Compute per-channel pixel mean and std (over all pixels) of a dataset's images in ``[0, 1]``.

        Args:
            dataset: a 🤗 ``Dataset`` (without a transform) or any iterable of example dicts.
            image_column: image column; auto-detected like :class:`ViewTransform` when None.
            max_samples: only use the first ``max_samples`` examples.

        Returns:
            The dataset's :class:`Normalization` (images converted to RGB first).
        """
        total = torch.zeros(3, dtype=torch.float64)
        total_sq = torch.zeros(3, dtype=torch.float64)
        count = 0
        column = image_column
        for i, example in enumerate(dataset):
            if max_samples is not None and i >= max_samples:
                break
            if column is None:
                column = _resolve_image_column(list(example), None, {k: [v] for k, v in example.items()})
            pixels = image_to_tensor(example[column]).to(torch.float64).div_(255.0).flatten(1)
            total += pixels.sum(1)
            total_sq += pixels.square().sum(1)
            count += pixels.shape[1]
        if count == 0:
            raise ValueError("Cannot compute a Normalization from an empty dataset; pass at least one image.")
        mean = total / count
        std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
        return cls(mean=tuple(mean.tolist()), std=tuple(std.clamp_min(1e-6).tolist()))


CIFAR100_NORMALIZATION = Normalization(mean=CIFAR100_MEAN, std=CIFAR100_STD)
IMAGENET_NORMALIZATION = Normalization(mean=IMAGENET_MEAN, std=IMAGENET_STD)


class Renormalize(nn.Module):
    """Map images normalised with ``source`` to images normalised with ``target``.

    ``y = (x * std_s + mean_s - mean_t) / std_t``, done as one fused ``x * scale + shift``; the identity (no
    arithmetic) when both normalisations agree. Used to feed a teacher that expects other statistics than the
    student. Works on ``(N, 3, H, W)`` and ``(3, H, W)`` tensors; the constants are non-persistent buffers.

    Args:
        source: normalisation the input was produced with (usually the student's).
        target: normalisation the output should have (usually the teacher's).
    """

    scale: Tensor
    shift: Tensor

    def __init__(self, source: Normalization, target: Normalization):
        super().__init__()
        for name, value in (("source", source), ("target", target)):
            if not isinstance(value, Normalization):
                raise TypeError(
                    f"Renormalize `{name}` must be a Normalization, got {type(value).__name__}; build one with "
                    "`Normalization(mean=..., std=...)` or `Normalization.from_model(model_or_processor)`."
                )
        self.source, self.target = source, target
        self.is_identity = source.isclose(target)
        f64 = torch.float64
        s_mean, s_std = torch.tensor(source.mean, dtype=f64), torch.tensor(source.std, dtype=f64)
        t_mean, t_std = torch.tensor(target.mean, dtype=f64), torch.tensor(target.std, dtype=f64)
        self.register_buffer("scale", (s_std / t_std).float().view(3, 1, 1), persistent=False)
        self.register_buffer("shift", ((s_mean - t_mean) / t_std).float().view(3, 1, 1), persistent=False)

    @classmethod
    def between(
        cls, student_norm: Normalization | None, teacher_norm: Normalization | None
    ) -> Renormalize | None:
        """Build the student-to-teacher mapping, or None when there is nothing to do.

        Args:
            student_norm: normalisation of the batches (the student's).
            teacher_norm: normalisation the teacher expects.

        Returns:
            A :class:`Renormalize`, or None when the two agree or when either is unknown (None).
        """
        if student_norm is None or teacher_norm is None or student_norm.isclose(teacher_norm):
            return None
        return cls(student_norm, teacher_norm)

    def forward(self, pixel_values: Tensor) -> Tensor:
        """Renormalise a batch.

        Args:
            pixel_values: ``(N, 3, H, W)`` or ``(3, H, W)`` float tensor normalised with ``source``.

        Returns:
            The same images normalised with ``target`` (same dtype and device).
        """
        if self.is_identity:
            return pixel_values
        if pixel_values.dim() < 3 or pixel_values.shape[-3] != 3:
            raise ValueError(
                f"Renormalize expects (N, 3, H, W) or (3, H, W) pixel values, got shape {tuple(pixel_values.shape)}."
            )
        scale = self.scale.to(device=pixel_values.device, dtype=pixel_values.dtype)
        shift = self.shift.to(device=pixel_values.device, dtype=pixel_values.dtype)
        return torch.addcmul(shift, pixel_values, scale)

    def extra_repr(self) -> str:
        return f"source={self.source}, target={self.target}, identity={self.is_identity}"


# --------------------------------------------------------------------------------------------------------------
# Image conversion
# --------------------------------------------------------------------------------------------------------------

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


def _pil_to_chw(image: PIL.Image.Image) -> Tensor:
    mode = image.mode
    if mode.startswith("I;16") or mode in {"I", "F"}:
        return _array_to_chw(np.asarray(image), channels_last=True)
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
    elif mode not in {"RGB", "L"}:
        image = image.convert("RGB")
    return TF.pil_to_tensor(image)


def _array_to_chw(array: np.ndarray | Tensor, channels_last: bool) -> Tensor:
    tensor = torch.as_tensor(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array.detach()
    tensor = tensor.cpu()
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    elif tensor.dim() == 3:
        last_ok, first_ok = tensor.shape[-1] in (1, 2, 3, 4), tensor.shape[0] in (1, 2, 3, 4)
        if (channels_last and last_ok) or (last_ok and not first_ok):
            tensor = tensor.permute(2, 0, 1)
        elif not first_ok:
            raise ValueError(
                f"Cannot read an image array of shape {tuple(tensor.shape)}: expected (H, W), (H, W, C) or "
                "(C, H, W) with C in 1..4."
            )
    else:
        raise ValueError(
            f"Cannot read an image array of shape {tuple(tensor.shape)}: expected (H, W), (H, W, C) or (C, H, W)."
        )
    if tensor.dtype == torch.uint8:
        return tensor.contiguous()
    if tensor.dtype == torch.bool:
        return tensor.to(torch.uint8).mul_(255)
    if tensor.is_floating_point():
        if tensor.numel() and (tensor.min() < -1e-3 or tensor.max() > 1 + 1e-3):
            raise ValueError(
                f"Float images must hold values in [0, 1], got range [{tensor.min().item():.3g}, "
                f"{tensor.max().item():.3g}]; pass uint8 arrays for 0..255 data or divide by the maximum first."
            )
        return tensor.float().mul(255).round_().clamp_(0, 255).to(torch.uint8)
    wide = tensor.to(torch.int64)
    low, high = (int(wide.min()), int(wide.max())) if wide.numel() else (0, 0)
    if low < 0 or high > 65535:
        raise ValueError(
            f"Integer images must hold values in 0..255 (or 0..65535 for 16-bit data), got range [{low}, {high}]; "
            "rescale them to uint8 first."
        )
    if tensor.dtype == torch.uint16 or high > 255:
        wide = wide.div(257, rounding_mode="floor")
    return wide.to(torch.uint8)


def image_to_tensor(image: Any) -> Tensor:
    """Convert one image to an RGB ``uint8`` tensor of shape ``(3, H, W)``.

    Accepts PIL images of any mode (grayscale and palette are expanded, alpha is composited onto white like 🤗
    image processors do), numpy arrays ``(H, W)``/``(H, W, C)``, tensors ``(C, H, W)``/``(H, W)`` (uint8
    0..255, 16-bit 0..65535, bool, or float in ``[0, 1]``), undecoded 🤗 image dicts (``{"bytes", "path"}``) and
    file paths.

    Args:
        image: the image.

    Returns:
        ``uint8`` tensor ``(3, H, W)``.
    """
    if isinstance(image, Mapping) and ("bytes" in image or "path" in image):
        source = io.BytesIO(image["bytes"]) if image.get("bytes") is not None else image.get("path")
        if source is None:
            raise ValueError("Got an image dict with neither `bytes` nor `path`; cannot decode it.")
        image = PIL.Image.open(source)
    elif isinstance(image, str | os.PathLike):
        image = PIL.Image.open(image)
    if isinstance(image, PIL.Image.Image):
        chw = _pil_to_chw(image)
    elif isinstance(image, np.ndarray):
        chw = _array_to_chw(image, channels_last=True)
    elif isinstance(image, Tensor):
        chw = _array_to_chw(image, channels_last=False)
    else:
        raise TypeError(
            f"Cannot read an image of type {type(image).__name__}; pass PIL images, numpy arrays (H, W[, C]), "
            "tensors (C, H, W), 🤗 image dicts or file paths."
        )
    channels = chw.shape[0]
    if channels in (2, 4):  # composite colour onto a white background using the alpha channel
        alpha = chw[-1:].float() / 255.0
        colour = chw[:-1].float()
        chw = (colour * alpha + 255.0 * (1.0 - alpha)).round_().clamp_(0, 255).to(torch.uint8)
        channels -= 1
    if channels == 1:
        chw = chw.expand(3, -1, -1)
    return chw.contiguous()


# --------------------------------------------------------------------------------------------------------------
# Column resolution
# --------------------------------------------------------------------------------------------------------------


_TRAINER_HINT = (
    " (With a 🤗 Trainer, also set `remove_unused_columns=False`: otherwise it drops the raw image and label "
    "columns before this transform runs.)"
)


def _looks_like_image(value: Any) -> bool:
    return isinstance(value, PIL.Image.Image)


def _resolve_image_column(
    columns: Sequence[str], explicit: str | None, batch: Mapping[str, Any] | None = None, features: Any = None
) -> str:
    if explicit is not None:
        if explicit not in columns:
            raise ValueError(
                f"image_column={explicit!r} is not a column; available columns: {list(columns)}. "
                "Pass `image_column=` with one of them." + _TRAINER_HINT
            )
        return explicit
    for name in IMAGE_COLUMN_CANDIDATES:
        if name in columns:
            return name
    # Fall back to the single column holding images (by feature type, else by value type).
    found: list[str] = []
    if features is not None:
        from datasets import Image as ImageFeature

        found = [c for c in columns if isinstance(features.get(c), ImageFeature)]
    elif batch is not None:
        for c in columns:
            values = batch[c]
            first = values[0] if isinstance(values, list) and values else values
            if _looks_like_image(first):
                found.append(c)
    if len(found) == 1:
        return found[0]
    raise ValueError(
        f"Could not find the image column among columns {list(columns)} (looked for "
        f"{list(IMAGE_COLUMN_CANDIDATES)}"
        + (f"; several hold images: {found}" if found else "")
        + "). Pass `image_column=` with the name of the column holding the images."
        + _TRAINER_HINT
    )


def _resolve_label_column(columns: Sequence[str], explicit: str | None) -> str:
    if explicit is not None:
        if explicit not in columns:
            raise ValueError(
                f"label_column={explicit!r} is not a column; available columns: {list(columns)}. "
                "Pass `label_column=` with one of them." + _TRAINER_HINT
            )
        return explicit
    for name in LABEL_COLUMN_CANDIDATES:
        if name in columns:
            return name
    raise ValueError(
        f"Could not find the label column among columns {list(columns)} (looked for "
        f"{list(LABEL_COLUMN_CANDIDATES)}). Pass `label_column=` with the name of the column holding integer "
        "class ids." + _TRAINER_HINT
    )


def _to_label(value: Any, column: str, columns: Sequence[str]) -> int:
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    if isinstance(value, numbers.Integral):
        return int(value)
    hint = (
        f"Encode string labels first with `dataset = dataset.class_encode_column({column!r})`, or pass"
        if isinstance(value, str)
        else "Pass"
    )
    raise ValueError(
        f"Label column {column!r} holds {type(value).__name__} values ({value!r}), but labels must be integer "
        f"class ids. {hint} `label_column=` naming an integer column; available columns: {list(columns)}."
    )


# --------------------------------------------------------------------------------------------------------------
# The transform
# --------------------------------------------------------------------------------------------------------------


class ViewTransform:
    """Batch transform producing the real (and optionally virtual) view of each image.

    Use with ``dataset.with_transform(ViewTransform(...))``. It returns a dict with ``pixel_values`` (list of
    normalised float32 ``(3, image_size, image_size)`` tensors), ``labels`` (list of ints) and, when
    ``virtual_view=True``, ``pixel_values_virtual``; every other column is dropped. A single (unbatched) example
    dict is accepted too and gives unbatched values.

    Train real view: ``RandomCrop(image_size, padding=crop_padding)`` + horizontal flip for images that already
    have size ``image_size`` x ``image_size`` (CIFAR), ``RandomResizedCrop(image_size)`` + flip otherwise. Virtual
    view: ``RandAugment(num_ops, magnitude)`` on the raw image, then the *same* crop/flip draw as the real view
    (the views are spatially aligned), then the same normalisation. Eval (``train=False``): identity for images of
    the right size, otherwise a resize of the shorter side (to ``image_size`` for images no larger than it, to
    ``image_size * 256 / 224`` for larger ones) and a center crop; deterministic, no virtual view
    (``virtual_view=True`` with ``train=False`` raises a ValueError).

    Images may be PIL images of any mode, arrays or tensors (see :func:`image_to_tensor`); they become RGB.

    Args:
        image_size: output side length.
        train: random (train) or deterministic (eval) geometry.
        virtual_view: also return ``pixel_values_virtual`` (train only).
        randaugment_num_ops: RandAugment ``N`` (VRM default 2).
        randaugment_magnitude: RandAugment ``M`` on torchvision's 0..30 scale (default 9).
        normalization: statistics for the final normalisation (default CIFAR-100).
        image_column: image column; auto-detected among :data:`IMAGE_COLUMN_CANDIDATES` (else the single column
            holding PIL images) when None.
        label_column: label column (integer class ids); auto-detected among :data:`LABEL_COLUMN_CANDIDATES`.
        crop_padding: zero padding of the train ``RandomCrop`` for ``image_size``-sized images.
    """

    def __init__(
        self,
        *,
        image_size: int = 32,
        train: bool = True,
        virtual_view: bool = False,
        randaugment_num_ops: int = 2,
        randaugment_magnitude: int = 9,
        normalization: Normalization = CIFAR100_NORMALIZATION,
        image_column: str | None = None,
        label_column: str | None = None,
        crop_padding: int = 4,
    ):
        if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
            raise ValueError(f"`image_size` must be a positive int, got {image_size!r}.")
        if virtual_view and not train:
            raise ValueError(
                "`virtual_view=True` needs `train=True`: evaluation is deterministic and has no virtual view. "
                "Pass `virtual_view=False` (or use `eval_transform(...)`) for evaluation."
            )
        if randaugment_num_ops < 0 or not 0 <= randaugment_magnitude <= 30:
            raise ValueError(
                "`randaugment_num_ops` must be >= 0 and `randaugment_magnitude` in 0..30, got "
                f"{randaugment_num_ops} and {randaugment_magnitude}."
            )
        if crop_padding < 0:
            raise ValueError(f"`crop_padding` must be >= 0, got {crop_padding}.")
        if not isinstance(normalization, Normalization):
            raise TypeError(
                f"`normalization` must be a Normalization, got {type(normalization).__name__}; pass "
                "`Normalization(mean=..., std=...)` or `Normalization.from_model(model_or_processor)`."
            )
        self.image_size = image_size
        self.train = train
        self.virtual_view = virtual_view
        self.randaugment_num_ops = randaugment_num_ops
        self.randaugment_magnitude = randaugment_magnitude
        self.normalization = normalization
        self.image_column = image_column
        self.label_column = label_column
        self.crop_padding = crop_padding

        self._same_size_aug = v2.Compose(
            [v2.RandomCrop(image_size, padding=crop_padding or None), v2.RandomHorizontalFlip()]
        )
        self._resize_aug = v2.Compose(
            [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        )
        self._randaugment = v2.RandAugment(num_ops=randaugment_num_ops, magnitude=randaugment_magnitude)
        self._to_float = v2.Compose(
            [
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(normalization.mean), std=list(normalization.std)),
            ]
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, train={self.train}, "
            f"virtual_view={self.virtual_view}, randaugment_num_ops={self.randaugment_num_ops}, "
            f"randaugment_magnitude={self.randaugment_magnitude}, normalization={self.normalization}, "
            f"image_column={self.image_column!r}, label_column={self.label_column!r}, "
            f"crop_padding={self.crop_padding})"
        )

    # ---- columns -------------------------------------------------------------------------------------------

    def required_columns(self, column_names: Sequence[str] | None = None) -> list[str]:
        """Columns the transform reads.

        Args:
            column_names: the dataset's columns; when given, the image and label columns are resolved against
                them (raising like :meth:`check_dataset` if they cannot be).

        Returns:
            ``[image_column, label_column]`` when resolvable; without ``column_names``, the explicit names and,
            for each one left to auto-detection, every candidate name it may use (useful for
            ``remove_unused_columns``-style filtering).
        """
        if column_names is not None:
            columns = list(column_names)
            return [
                _resolve_image_column(columns, self.image_column),
                _resolve_label_column(columns, self.label_column),
            ]
        image = [self.image_column] if self.image_column else list(IMAGE_COLUMN_CANDIDATES)
        label = [self.label_column] if self.label_column else list(LABEL_COLUMN_CANDIDATES)
        return image + label

    def check_dataset(self, dataset: Any) -> dict[str, str]:
        """Validate a dataset's columns and feature types up front, before any training.

        Args:
            dataset: a 🤗 ``Dataset``/``IterableDataset`` (or a ``DatasetDict``, every split checked).

        Returns:
            ``{"image": image_column, "label": label_column}`` as resolved (for a ``DatasetDict``, those of the
            last split).

        Raises:
            ValueError: when the image or label column cannot be found, or the label column does not hold
                integer class ids; the message names the existing columns and the argument to pass.
        """
        if isinstance(dataset, Mapping):  # DatasetDict / IterableDatasetDict
            resolved: dict[str, str] = {}
            for split in dataset.values():
                resolved = self.check_dataset(split)
            return resolved
        column_names = getattr(dataset, "column_names", None)
        features = getattr(dataset, "features", None)
        if column_names is None and features is not None:
            column_names = list(features)
        if column_names is None:
            raise ValueError(
                f"Cannot check a {type(dataset).__name__}: it exposes neither `column_names` nor `features`. "
                "Pass a 🤗 `datasets.Dataset`, or resolve the IterableDataset's features first "
                "(`dataset._resolve_features()`)."
            )
        columns = list(column_names)
        image_col = _resolve_image_column(columns, self.image_column, features=features)
        label_col = _resolve_label_column(columns, self.label_column)
        if features is not None:
            from datasets import ClassLabel, Value

            label_feature, image_feature = features.get(label_col), features.get(image_col)
            label_is_int = isinstance(label_feature, ClassLabel) or (
                isinstance(label_feature, Value)
                and (label_feature.dtype.startswith(("int", "uint")) or label_feature.dtype == "bool")
            )
            if label_feature is not None and not label_is_int:
                hint = (
                    f" Encode it with `dataset.class_encode_column({label_col!r})`"
                    if isinstance(label_feature, Value) and label_feature.dtype in ("string", "large_string")
                    else " Cast or map it to integer class ids"
                )
                raise ValueError(
                    f"Label column {label_col!r} has feature {label_feature}, but labels must be integer class "
                    f"ids (ClassLabel or an int Value).{hint}, or pass `label_column=` naming an integer "
                    f"column; available columns: {columns}."
                )
            if isinstance(image_feature, ClassLabel) or (
                isinstance(image_feature, Value)
                and image_feature.dtype not in ("string", "large_string", "binary", "large_binary")
            ):
                raise ValueError(
                    f"Column {image_col!r} has feature {image_feature}, which cannot hold images. Pass "
                    f"`image_column=` naming the image column; available columns: {columns}."
                )
        return {"image": image_col, "label": label_col}

    # ---- per image -----------------------------------------------------------------------------------------

    def _eval_geometry(self, image: Tensor) -> Tensor:
        size = self.image_size
        height, width = image.shape[-2:]
        if (height, width) == (size, size):
            return image
        resize = size if min(height, width) <= size else int(round(size * 256 / 224))
        image = TF.resize(image, [resize], antialias=True)
        return TF.center_crop(image, [size, size])

    def _finish(self, image: Tensor) -> Tensor:
        return self._to_float(image).as_subclass(Tensor).contiguous()

    def views(self, image: Any) -> tuple[Tensor, Tensor | None]:
        """Produce the views of one image.

        Args:
            image: any image :func:`image_to_tensor` accepts.

        Returns:
            ``(real, virtual)``: normalised float32 ``(3, image_size, image_size)`` tensors; ``virtual`` is None
            unless ``virtual_view=True``.
        """
        raw = tv_tensors.Image(image_to_tensor(image))
        if not self.train:
            return self._finish(self._eval_geometry(raw)), None
        size = self.image_size
        geometry = self._same_size_aug if tuple(raw.shape[-2:]) == (size, size) else self._resize_aug
        if not self.virtual_view:
            return self._finish(geometry(raw)), None
        strong = self._randaugment(raw)
        real, virtual = geometry(raw, strong)  # one crop/flip draw shared by both views
        return self._finish(real), self._finish(virtual)

    # ---- batch ---------------------------------------------------------------------------------------------

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Transform a batch (column -> list of values) or a single example dict.

        Args:
            batch: the formatted batch 🤗 Datasets passes to the transform.

        Returns:
            ``{"pixel_values": [...], "labels": [...]}`` plus ``"pixel_values_virtual"`` when enabled (lists for
            a batch, single values for a single example).
        """
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"ViewTransform expects a dict of columns (as passed by `Dataset.with_transform`), got "
                f"{type(batch).__name__}."
            )
        columns = list(batch.keys())
        image_col = _resolve_image_column(columns, self.image_column, batch=batch)
        label_col = _resolve_label_column(columns, self.label_column)
        images, labels = batch[image_col], batch[label_col]
        batched = isinstance(images, list | tuple)
        if not batched:
            images, labels = [images], [labels]
        elif not isinstance(labels, list | tuple) or len(labels) != len(images):
            raise ValueError(
                f"Column {label_col!r} does not match image column {image_col!r} in length; pass a batch dict "
                "mapping each column to a list of equal length."
            )
        out_labels = [_to_label(v, label_col, columns) for v in labels]
        real_views, virtual_views = [], []
        for image in images:
            real, virtual = self.views(image)
            real_views.append(real)
            virtual_views.append(virtual)
        out: dict[str, Any] = {"pixel_values": real_views, "labels": out_labels}
        if self.virtual_view:
            out["pixel_values_virtual"] = virtual_views
        if not batched:
            out = {k: v[0] for k, v in out.items()}
        return out


def train_transform(
    image_size: int = 32,
    *,
    virtual_view: bool = False,
    randaugment_num_ops: int = 2,
    randaugment_magnitude: int = 9,
    normalization: Normalization = CIFAR100_NORMALIZATION,
    image_column: str | None = None,
    label_column: str | None = None,
    crop_padding: int = 4,
) -> ViewTransform:
    """Training :class:`ViewTransform` (random crop/flip; optional RandAugment virtual view).

    Args:
        image_size: output side length.
        virtual_view: also return ``pixel_values_virtual`` (for VRM).
        randaugment_num_ops: RandAugment ``N``.
        randaugment_magnitude: RandAugment ``M`` (0..30).
        normalization: output normalisation (default CIFAR-100).
        image_column: image column (auto-detected when None).
        label_column: label column (auto-detected when None).
        crop_padding: ``RandomCrop`` padding for ``image_size``-sized images.

    Returns:
        The transform, for ``dataset.with_transform``.
    """
    return ViewTransform(
        image_size=image_size,
        train=True,
        virtual_view=virtual_view,
        randaugment_num_ops=randaugment_num_ops,
        randaugment_magnitude=randaugment_magnitude,
        normalization=normalization,
        image_column=image_column,
        label_column=label_column,
        crop_padding=crop_padding,
    )


def eval_transform(
    image_size: int = 32,
    *,
    normalization: Normalization = CIFAR100_NORMALIZATION,
    image_column: str | None = None,
    label_column: str | None = None,
) -> ViewTransform:
    """Deterministic evaluation :class:`ViewTransform` (resize/center-crop, no virtual view).

    Args:
        image_size: output side length.
        normalization: output normalisation (default CIFAR-100).
        image_column: image column (auto-detected when None).
        label_column: label column (auto-detected when None).

    Returns:
        The transform, for ``dataset.with_transform``.
    """
    return ViewTransform(
        image_size=image_size,
        train=False,
        normalization=normalization,
        image_column=image_column,
        label_column=label_column,
    )
