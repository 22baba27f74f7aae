"""Collate :class:`~hf_relkd.data.views.ViewTransform` rows into distillation batches."""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["DistillationCollator"]


def _as_tensor(value: Any, key: str, index: int) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(
        f"Row {index} has `{key}` of type {type(value).__name__}; expected a tensor or numpy array. Apply a "
        "`ViewTransform` to the dataset (`dataset.with_transform(ViewTransform(...))`) before collating."
    )


def _stack(values: list[Tensor], key: str) -> Tensor:
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) > 1:
        raise ValueError(
            f"Cannot stack `{key}`: rows have different shapes {sorted(shapes)}. Give every image the same size, "
            "e.g. one `ViewTransform(image_size=...)` for the whole dataset."
        )
    return torch.stack(values)


@dataclass
class DistillationCollator:
    """Stack ``pixel_values``, ``pixel_values_virtual`` (when present) and ``labels`` into a batch.

    Other keys are ignored. Picklable, so it works with ``dataloader_num_workers > 0``.

    Args:
        virtual_key: name of the virtual-view key.
    """

    virtual_key: str = "pixel_values_virtual"

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Tensor]:
        """Collate rows.

        Args:
            features: rows, each a dict with ``pixel_values`` (``(3, H, W)`` tensor), ``labels`` (int) and
                optionally ``pixel_values_virtual``.

        Returns:
            ``{"pixel_values": (N, 3, H, W), "labels": LongTensor (N,)}`` plus
            ``"pixel_values_virtual": (N, 3, H, W)`` when every row has a virtual view.

        Raises:
            ValueError: on an empty batch, rows without ``pixel_values``/``labels``, or a virtual view present
                in some rows only.
        """
        if len(features) == 0:
            raise ValueError("DistillationCollator got an empty list of rows; pass at least one row.")
        for index, row in enumerate(features):
            if not isinstance(row, Mapping):
                raise TypeError(f"Row {index} is a {type(row).__name__}, expected a dict of tensors.")
            for key in ("pixel_values", "labels"):
                if key not in row:
                    raise ValueError(
                        f"Row {index} has no `{key}` (keys: {sorted(row)}). Apply a `ViewTransform` to the "
                        "dataset (`dataset.with_transform(ViewTransform(...))`), which emits `pixel_values` and "
                        "`labels`, or rename your columns to these names."
                    )
        batch = {
            "pixel_values": _stack(
                [_as_tensor(row["pixel_values"], "pixel_values", i) for i, row in enumerate(features)],
                "pixel_values",
            )
        }
        with_virtual = [self.virtual_key in row and row[self.virtual_key] is not None for row in features]
        if any(with_virtual):
            if not all(with_virtual):
                missing = [i for i, has in enumerate(with_virtual) if not has]
                raise ValueError(
                    f"`{self.virtual_key}` is present in some rows but missing in rows {missing[:10]}; use one "
                    "transform for the whole dataset (`ViewTransform(virtual_view=True)` for every row, or "
                    "`virtual_view=False` for none)."
                )
            batch[self.virtual_key] = _stack(
                [_as_tensor(row[self.virtual_key], self.virtual_key, i) for i, row in enumerate(features)],
                self.virtual_key,
            )
        labels = []
        for index, row in enumerate(features):
            label = row["labels"]
            if isinstance(label, Tensor | np.ndarray) and label.ndim <= 1 and int(np.prod(label.shape)) == 1:
                label = label.item()
            if not isinstance(label, numbers.Integral):
                raise ValueError(
                    f"Row {index} has `labels`={label!r} ({type(label).__name__}); labels must be integer class "
                    "ids. Encode them first (e.g. `dataset.class_encode_column(...)`)."
                )
            labels.append(int(label))
        batch["labels"] = torch.tensor(labels, dtype=torch.long)
        return batch
