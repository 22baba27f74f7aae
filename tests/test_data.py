"""Tests for hf_relkd.data: views, normalisation helpers, collator and the digits dataset."""

from __future__ import annotations

import pickle

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from hf_relkd.data import (
    CIFAR100_NORMALIZATION,
    DIGITS_MEAN,
    DIGITS_STD,
    IMAGENET_NORMALIZATION,
    DistillationCollator,
    Normalization,
    Renormalize,
    ViewTransform,
    eval_transform,
    image_to_tensor,
    load_digits_dataset,
    train_transform,
)


def _rgb_images(n: int, size: int = 32, seed: int = 0) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _cifar_batch(n: int = 4, size: int = 32) -> dict:
    return {"img": _rgb_images(n, size), "fine_label": list(range(n)), "coarse_label": [7] * n}


@pytest.fixture(scope="module")
def digits() -> datasets.DatasetDict:
    return load_digits_dataset()


# ---------------------------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("virtual", [False, True])
def test_view_shapes_and_dtypes(virtual: bool) -> None:
    out = ViewTransform(virtual_view=virtual)(_cifar_batch(3))
    expected = {"pixel_values", "labels"} | ({"pixel_values_virtual"} if virtual else set())
    assert set(out) == expected
    assert out["labels"] == [0, 1, 2] and all(type(label) is int for label in out["labels"])
    for key in expected - {"labels"}:
        assert len(out[key]) == 3
        for x in out[key]:
            assert type(x) is torch.Tensor and x.dtype == torch.float32 and x.shape == (3, 32, 32)


def test_virtual_view_differs_but_is_spatially_aligned() -> None:
    torch.manual_seed(0)
    # Identity RandAugment (0 ops): the virtual view must equal the real view, i.e. crop/flip are shared.
    aligned = ViewTransform(virtual_view=True, randaugment_num_ops=0)(_cifar_batch(4))
    for real, virtual in zip(aligned["pixel_values"], aligned["pixel_values_virtual"]):
        assert torch.equal(real, virtual)
    out = ViewTransform(virtual_view=True)(_cifar_batch(8))
    diffs = [(r - v).abs().max().item() for r, v in zip(out["pixel_values"], out["pixel_values_virtual"])]
    assert sum(d > 1e-3 for d in diffs) >= 6


def test_eval_is_deterministic_and_has_no_virtual_view() -> None:
    t = eval_transform()
    batch = _cifar_batch(3)
    first, second = t(batch), t(batch)
    assert set(first) == {"pixel_values", "labels"}
    for a, b in zip(first["pixel_values"], second["pixel_values"]):
        assert torch.equal(a, b)
    # Same-size eval is just ToTensor + Normalize.
    expected = CIFAR100_NORMALIZATION.normalize(
        torch.from_numpy(np.array(batch["img"][0])).permute(2, 0, 1) / 255
    )
    torch.testing.assert_close(first["pixel_values"][0], expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="virtual_view=True` needs `train=True"):
        ViewTransform(train=False, virtual_view=True)


def test_eval_resizes_larger_and_smaller_images() -> None:
    t = eval_transform(image_size=24)
    out = t(
        {
            "image": _rgb_images(1, 40) + _rgb_images(1, 10) + [PIL.Image.new("RGB", (50, 30))],
            "label": [0, 1, 2],
        }
    )
    assert [tuple(x.shape) for x in out["pixel_values"]] == [(3, 24, 24)] * 3


def test_train_transform_reproducible_with_seed() -> None:
    t = train_transform(virtual_view=True)
    batch = _cifar_batch(4)
    torch.manual_seed(123)
    a = t(batch)
    torch.manual_seed(123)
    b = t(batch)
    for key in ("pixel_values", "pixel_values_virtual"):
        for x, y in zip(a[key], b[key]):
            assert torch.equal(x, y)


def test_train_random_resized_crop_for_other_sizes() -> None:
    out = train_transform(image_size=16)({"image": _rgb_images(2, 48), "label": [3, 4]})
    assert [tuple(x.shape) for x in out["pixel_values"]] == [(3, 16, 16)] * 2


def test_column_autodetection_cifar_and_image_label() -> None:
    t = ViewTransform()
    assert t(_cifar_batch(2))["labels"] == [0, 1]  # img / fine_label (coarse_label ignored)
    assert t({"image": _rgb_images(2), "label": [5, 6]})["labels"] == [5, 6]
    # Fallback: the single column holding PIL images.
    assert t({"scan": _rgb_images(1), "label": [2]})["labels"] == [2]


def test_explicit_column_names() -> None:
    t = ViewTransform(image_column="photo_b", label_column="coarse_label")
    batch = {
        "img": _rgb_images(2, seed=1),
        "photo_b": _rgb_images(2, seed=2),
        "fine_label": [1, 2],
        "coarse_label": [8, 9],
    }
    out = t(batch)
    assert out["labels"] == [8, 9]
    ref = eval_transform(image_column="photo_b", label_column="coarse_label")(batch)["pixel_values"][0]
    torch.testing.assert_close(
        ref, eval_transform()({"img": batch["photo_b"], "label": [0, 0]})["pixel_values"][0]
    )
    with pytest.raises(ValueError, match="image_column='nope'.*available columns"):
        ViewTransform(image_column="nope")(batch)


def test_single_example_and_dataset_with_transform() -> None:
    ds = datasets.Dataset.from_dict(_cifar_batch(3)).cast_column(
        "fine_label", datasets.ClassLabel(num_classes=100)
    )
    t = ViewTransform(virtual_view=True)
    assert t.check_dataset(ds) == {"image": "img", "label": "fine_label"}
    row = ds.with_transform(t)[1]
    assert row["labels"] == 1 and row["pixel_values"].shape == (3, 32, 32)
    assert row["pixel_values_virtual"].shape == (3, 32, 32)
    single = t({"image": _rgb_images(1)[0], "label": 4})
    assert single["labels"] == 4 and single["pixel_values"].shape == (3, 32, 32)


def test_grayscale_rgba_palette_and_arrays_become_rgb() -> None:
    gray = PIL.Image.fromarray(np.full((32, 32), 100, dtype=np.uint8), mode="L")
    rgba = PIL.Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent -> white background
    palette = gray.convert("P")
    x = image_to_tensor(gray)
    assert x.shape == (3, 32, 32) and x.dtype == torch.uint8 and (x == 100).all()
    assert (image_to_tensor(rgba) == 255).all()
    assert (
        image_to_tensor(PIL.Image.new("RGBA", (4, 4), (10, 20, 30, 255)))[:, 0, 0]
        == torch.tensor([10, 20, 30])
    ).all()
    assert (image_to_tensor(palette) == 100).all()
    assert (image_to_tensor(np.full((5, 6), 0.5)) == 128).all()
    assert image_to_tensor(np.zeros((5, 6, 3), dtype=np.uint8)).shape == (3, 5, 6)
    assert image_to_tensor(torch.zeros(1, 5, 6, dtype=torch.uint8)).shape == (3, 5, 6)
    out = ViewTransform(virtual_view=True)(
        {"image": [gray, rgba, palette, np.zeros((32, 32, 3), np.uint8)], "label": [0, 1, 2, 3]}
    )
    assert all(v.shape == (3, 32, 32) for v in out["pixel_values"] + out["pixel_values_virtual"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        image_to_tensor(np.full((4, 4), 3.0))


def test_missing_image_column_error_names_columns() -> None:
    with pytest.raises(ValueError) as info:
        ViewTransform()({"pixels": [[1, 2]], "label": [0], "extra": ["x"]})
    msg = str(info.value)
    assert "['pixels', 'label', 'extra']" in msg and "image_column=" in msg
    with pytest.raises(
        ValueError, match=r"label_column=.*\['img', 'target'\]|\['img', 'target'\].*label_column="
    ):
        ViewTransform()({"img": _rgb_images(1), "target": [0]})


def test_string_label_error_names_columns() -> None:
    with pytest.raises(ValueError) as info:
        ViewTransform()({"image": _rgb_images(1), "label": ["cat"]})
    msg = str(info.value)
    assert "['image', 'label']" in msg and "label_column=" in msg and "class_encode_column" in msg
    ds = datasets.Dataset.from_dict({"image": _rgb_images(2), "label": ["cat", "dog"]})
    with pytest.raises(ValueError) as info:
        ViewTransform().check_dataset(ds)
    assert "['image', 'label']" in str(info.value) and "label_column=" in str(info.value)
    with pytest.raises(ValueError, match="image_column="):
        ViewTransform().check_dataset(datasets.Dataset.from_dict({"x": [1.0], "label": [0]}))


def test_required_columns() -> None:
    t = ViewTransform()
    assert t.required_columns(["img", "fine_label", "coarse_label"]) == ["img", "fine_label"]
    assert {"img", "image", "fine_label", "label"} <= set(t.required_columns())
    assert ViewTransform(image_column="a", label_column="b").required_columns() == ["a", "b"]


def test_transform_and_collator_pickle() -> None:
    t = pickle.loads(pickle.dumps(ViewTransform(virtual_view=True, normalization=IMAGENET_NORMALIZATION)))
    assert t.normalization == IMAGENET_NORMALIZATION and t.virtual_view
    assert pickle.loads(pickle.dumps(DistillationCollator())) == DistillationCollator()


# ---------------------------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------------------------


def test_normalization_from_image_processor() -> None:
    from transformers import ViTImageProcessor

    processor = ViTImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6])
    assert Normalization.from_model(processor) == Normalization((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert Normalization.from_model(torch.nn.Linear(2, 2)) is None
    assert Normalization.from_model(None) is None
    assert Normalization.from_model({"mean": (0.5,), "std": 0.25}) == Normalization((0.5,) * 3, (0.25,) * 3)


def test_normalization_from_timm_wrapper() -> None:
    from transformers import TimmWrapperConfig, TimmWrapperForImageClassification

    model = TimmWrapperForImageClassification(TimmWrapperConfig(architecture="resnet18", num_labels=10))
    norm = Normalization.from_model(model)
    assert norm is not None and norm.isclose(IMAGENET_NORMALIZATION, atol=1e-4)
    assert Normalization.from_model(model.timm_model) == norm


def test_normalization_validation() -> None:
    with pytest.raises(ValueError, match="3 values"):
        Normalization((0.1, 0.2), (0.3, 0.4))
    with pytest.raises(ValueError, match="positive stds"):
        Normalization((0.1, 0.2, 0.3), (0.3, 0.0, 0.4))
    with pytest.raises(TypeError, match="Normalization.from_model"):
        ViewTransform(normalization=((0.5,) * 3, (0.5,) * 3))  # type: ignore[arg-type]


def test_renormalize_maps_a_to_b() -> None:
    images = torch.rand(2, 3, 8, 8)
    a, b = CIFAR100_NORMALIZATION, IMAGENET_NORMALIZATION
    renorm = Renormalize.between(a, b)
    assert renorm is not None and not renorm.is_identity
    torch.testing.assert_close(renorm(a.normalize(images)), b.normalize(images))
    torch.testing.assert_close(renorm(a.normalize(images[0])), b.normalize(images[0]))
    assert renorm(a.normalize(images).double()).dtype == torch.float64
    assert Renormalize.between(a, Normalization(a.mean, a.std)) is None
    assert Renormalize.between(a, None) is None
    x = torch.randn(1, 3, 2, 2)
    assert Renormalize(a, a)(x) is x
    assert len(renorm.state_dict()) == 0


def test_renormalize_matches_transform_outputs() -> None:
    batch = {"image": _rgb_images(1), "label": [0]}
    from_cifar = eval_transform()(batch)["pixel_values"][0]
    from_imagenet = eval_transform(normalization=IMAGENET_NORMALIZATION)(batch)["pixel_values"][0]
    renorm = Renormalize.between(CIFAR100_NORMALIZATION, IMAGENET_NORMALIZATION)
    torch.testing.assert_close(renorm(from_cifar), from_imagenet, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Collator
# ---------------------------------------------------------------------------------------------------------------


def _rows(n: int, virtual: bool) -> list[dict]:
    rows = []
    for i in range(n):
        row = {"pixel_values": torch.full((3, 4, 4), float(i)), "labels": i, "img": "ignored"}
        if virtual:
            row["pixel_values_virtual"] = torch.full((3, 4, 4), -float(i))
        rows.append(row)
    return rows


def test_collator_stacks() -> None:
    batch = DistillationCollator()(_rows(3, virtual=True))
    assert set(batch) == {"pixel_values", "pixel_values_virtual", "labels"}
    assert batch["pixel_values"].shape == (3, 3, 4, 4) and batch["pixel_values_virtual"].shape == (3, 3, 4, 4)
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 2]
    assert batch["pixel_values_virtual"][2, 0, 0, 0] == -2.0
    assert set(DistillationCollator()(_rows(2, virtual=False))) == {"pixel_values", "labels"}


def test_collator_errors() -> None:
    rows = _rows(3, virtual=True)
    del rows[1]["pixel_values_virtual"]
    with pytest.raises(ValueError, match=r"missing in rows \[1\]"):
        DistillationCollator()(rows)
    rows = _rows(2, virtual=False)
    del rows[0]["labels"]
    with pytest.raises(ValueError, match="no `labels`"):
        DistillationCollator()(rows)
    with pytest.raises(ValueError, match="empty"):
        DistillationCollator()([])
    rows = _rows(2, virtual=False)
    rows[1]["pixel_values"] = torch.zeros(3, 5, 5)
    with pytest.raises(ValueError, match="different shapes"):
        DistillationCollator()(rows)


def test_dataloader_with_workers() -> None:
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(num_classes=100),
            "coarse_label": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict(_cifar_batch(8), features=features)
    loader = torch.utils.data.DataLoader(
        ds.with_transform(ViewTransform(virtual_view=True)),
        batch_size=4,
        num_workers=2,
        collate_fn=DistillationCollator(),
    )
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert batch["pixel_values"].shape == (4, 3, 32, 32)
        assert batch["pixel_values_virtual"].shape == (4, 3, 32, 32)
        assert batch["labels"].dtype == torch.long
    assert torch.cat([b["labels"] for b in batches]).tolist() == list(range(8))


# ---------------------------------------------------------------------------------------------------------------
# Digits
# ---------------------------------------------------------------------------------------------------------------


def test_load_digits_dataset(digits: datasets.DatasetDict) -> None:
    assert set(digits) == {"train", "test"}
    assert digits["train"].num_rows + digits["test"].num_rows == 1797
    assert digits["test"].num_rows == 450
    assert digits["train"].column_names == ["image", "label"]
    assert digits["train"].features["label"].names == [str(d) for d in range(10)]
    image = digits["train"][0]["image"]
    assert image.mode == "RGB" and image.size == (32, 32)
    # Stratified: every class in both splits, in near-equal proportions.
    for split in ("train", "test"):
        counts = np.bincount(digits[split]["label"], minlength=10)
        assert counts.min() > 0 and counts.max() - counts.min() <= 0.1 * digits[split].num_rows
    out = ViewTransform(normalization=Normalization(DIGITS_MEAN, DIGITS_STD))(digits["train"][:4])
    assert len(out["pixel_values"]) == 4 and out["pixel_values"][0].shape == (3, 32, 32)
    small = load_digits_dataset(image_size=16, test_size=0.5, seed=1)
    assert small["train"][0]["image"].size == (16, 16) and abs(small["test"].num_rows - 899) <= 1


def test_digits_stats_match_hard_coded(digits: datasets.DatasetDict) -> None:
    norm = Normalization.from_dataset(digits["train"])
    np.testing.assert_allclose(norm.mean, DIGITS_MEAN, atol=1e-4)
    np.testing.assert_allclose(norm.std, DIGITS_STD, atol=1e-4)
