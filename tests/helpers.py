"""Tiny models and datasets shared by the tests (no download, CPU, seconds)."""

from __future__ import annotations

import datasets
import numpy as np
import torch
from PIL import Image
from torch import nn

NUM_CLASSES = 4


class TinyConvNet(nn.Module):
    """A plain ``nn.Module`` classifier returning logits (no BatchNorm, so runs are exactly reproducible)."""

    def __init__(self, width: int = 8, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make_pair(student_width: int = 8, teacher_width: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    return TinyConvNet(student_width), TinyConvNet(teacher_width)


def tensor_dataset(n: int = 32, size: int = 8, seed: int = 0, virtual: bool = True) -> datasets.Dataset:
    """A learnable in-memory dataset already in ``pixel_values``/``labels`` form (class = brightest channel)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    x = torch.randn(n, 3, size, size, generator=g) * 0.5
    for i, y in enumerate(labels):
        x[i, int(y) % 3] += 1.0 + (int(y) // 3)
    data = {"pixel_values": x.numpy(), "labels": labels.numpy()}
    if virtual:
        data["pixel_values_virtual"] = (x + 0.2 * torch.randn(x.shape, generator=g)).numpy()
    return datasets.Dataset.from_dict(data).with_format("torch")


def image_dataset(n: int = 16, size: int = 32, seed: int = 0, schema: str = "cifar100") -> datasets.Dataset:
    """Random PIL images in the ``uoft-cs/cifar100`` schema (img, fine_label, coarse_label) or ``image``/``label``."""
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]
    labels = [int(i % NUM_CLASSES) for i in range(n)]
    if schema == "cifar100":
        features = datasets.Features(
            {
                "img": datasets.Image(),
                "fine_label": datasets.ClassLabel(names=[f"class_{i}" for i in range(NUM_CLASSES)]),
                "coarse_label": datasets.ClassLabel(names=["a", "b"]),
            }
        )
        return datasets.Dataset.from_dict(
            {"img": images, "fine_label": labels, "coarse_label": [i % 2 for i in labels]}, features=features
        )
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[f"class_{i}" for i in range(NUM_CLASSES)]),
        }
    )
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


def trained_teacher(width: int = 16, steps: int = 150, seed: int = 0) -> TinyConvNet:
    """A teacher trained with plain cross-entropy on :func:`tensor_dataset` (about a second on CPU)."""
    torch.manual_seed(seed)
    teacher = TinyConvNet(width)
    data = tensor_dataset(64, seed=seed + 1)[:]
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.02)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(data["pixel_values"]), data["labels"]).backward()
        optimizer.step()
    return teacher.eval()
