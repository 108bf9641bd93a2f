"""Tests of the built-in synthetic FIB-SEM-like dataset (dspseg.data.synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi

from dspseg.data.manifest import load_manifest
from dspseg.data.synthetic import (
    SYNTH_CLASSES,
    GroupStyle,
    generate_image,
    group_styles,
    iter_synthetic,
    write_synthetic_dataset,
)
from dspseg.data.synthetic.style import ER, PLASMA_MEMBRANE, VESICLE
from dspseg.data.synthetic.writer import MARKER

N_CLASSES = len(SYNTH_CLASSES)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    """32 images of 64 x 64 in 4 groups, loaded back from disk: (manifest, images, masks, groups)."""
    out = tmp_path_factory.mktemp("synth") / "ds"
    write_synthetic_dataset(out, n_images=32, size=64, seed=0, groups=4)
    manifest = load_manifest(out)
    images = np.stack([tifffile.imread(manifest.path(r.file)) for r in manifest.images])
    masks = np.stack([tifffile.imread(manifest.path(r.mask)) for r in manifest.images])
    groups = np.array([r.group for r in manifest.images])
    return manifest, images, masks, groups


def test_classes() -> None:
    assert len(SYNTH_CLASSES) >= 8
    assert len(set(SYNTH_CLASSES)) == len(SYNTH_CLASSES)
    for name in ("extracellular", "cytosol", "plasma_membrane", "nucleus", "mitochondrion", "er",
                 "golgi", "vesicle", "lipid_droplet"):
        assert name in SYNTH_CLASSES


def test_generate_image_non_square() -> None:
    image, mask = generate_image((40, 72), GroupStyle(), np.random.default_rng(3))
    assert image.shape == mask.shape == (40, 72)
    assert image.dtype == np.uint8 and mask.dtype == np.uint8
    assert mask.max() < N_CLASSES
    assert image.std() > 5  # not a blank image


@pytest.mark.parametrize("size", [8, 64.5, "64", (16, 10), (32,), (16, 16, 16)])
def test_generate_image_rejects_bad_size(size) -> None:
    with pytest.raises(ValueError, match="size"):
        generate_image(size, GroupStyle(), np.random.default_rng(0))


def test_group_style_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="photons"):
        GroupStyle(photons=0.0)
    with pytest.raises(ValueError, match="golgi_presence"):
        GroupStyle(golgi_presence=1.5)
    a, b = GroupStyle.sample(np.random.default_rng(0)), GroupStyle.sample(np.random.default_rng(1))
    assert a != b


def test_deterministic_per_seed(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "a", n_images=6, size=48, seed=7, groups=2)
    write_synthetic_dataset(tmp_path / "b", n_images=6, size=48, seed=7, groups=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 6 * 2 + 2  # images, masks, dataset.json, marker
    assert a == b
    # iter_synthetic yields exactly what was written.
    for i, _, image, mask in iter_synthetic(6, 48, 7, 2):
        name = f"g{i * 2 // 6:02d}_i{i:04d}.tif"
        assert np.array_equal(tifffile.imread(tmp_path / "a" / "images" / name), image)
        assert np.array_equal(tifffile.imread(tmp_path / "a" / "masks" / name), mask)


def test_different_seeds_differ() -> None:
    (_, _, im0, m0), = iter_synthetic(1, 48, 0, 1)
    (_, _, im1, m1), = iter_synthetic(1, 48, 1, 1)
    assert not np.array_equal(im0, im1)
    assert not np.array_equal(m0, m1)
    assert group_styles(0, 2) != group_styles(1, 2)


def test_manifest(dataset) -> None:
    manifest, images, masks, groups = dataset
    assert manifest.format == "dspseg/1"
    assert manifest.classes == SYNTH_CLASSES
    assert manifest.ignore_index == 255
    assert len(manifest.images) == 32
    for r in manifest.images:
        assert r.mask is not None and r.group is not None and r.split is None
        assert r.annotation_type == "mask"
        assert r.file.startswith("images/") and r.mask.startswith("masks/")
    assert sorted(set(groups)) == ["g00", "g01", "g02", "g03"]
    assert all((groups == g).sum() == 8 for g in set(groups))
    assert images.dtype == np.uint8 and images.shape == (32, 64, 64)
    assert masks.dtype == np.uint8 and masks.shape == (32, 64, 64)
    assert masks.max() < N_CLASSES


def test_every_class_present_and_presence_varies(dataset) -> None:
    _, _, masks, _ = dataset
    present = np.stack([np.bincount(m.ravel(), minlength=N_CLASSES) > 0 for m in masks])  # (32, C)
    assert present.any(axis=0).all(), f"classes never drawn: {np.flatnonzero(~present.any(axis=0))}"
    varies = present.any(axis=0) & ~present.all(axis=0)
    assert varies.sum() >= 6, f"only {varies.sum()} classes are absent from some image"


def test_group_styles_differ(dataset) -> None:
    """Noise level differs much more between groups than within (one-way ANOVA F ratio)."""
    _, images, _, groups = dataset
    noise = np.array([np.median(np.abs(np.diff(im.astype(np.float64), axis=1))) for im in images])
    names = sorted(set(groups))
    between = np.var([noise[groups == g].mean() for g in names], ddof=1)
    within = np.mean([noise[groups == g].var(ddof=1) for g in names])
    assert between / within > 4.0


def test_structure_is_weak_label_friendly(dataset) -> None:
    """Thin classes are >= 2 px wide, ER fills little of its boxes, vesicles come in numbers."""
    _, _, masks, _ = dataset
    square = np.ones((2, 2), dtype=bool)
    for c in (ER, PLASMA_MEMBRANE):
        total = (masks == c).sum()
        kept = sum(ndi.binary_opening(m == c, square).sum() for m in masks)
        assert total > 0 and kept / total > 0.9, SYNTH_CLASSES[c]
    fills = []
    for m in masks:
        labels, _ = ndi.label(m == ER)
        for k, sl in enumerate(ndi.find_objects(labels), 1):
            fills.append((labels[sl] == k).mean())
    assert np.median(fills) < 0.6
    assert max(ndi.label(m == VESICLE)[1] for m in masks) >= 5


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a dspseg synthetic dataset"):
        write_synthetic_dataset(tmp_path, n_images=2, size=32, groups=1)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="is a file"):
        write_synthetic_dataset(tmp_path / "notes.txt", n_images=2, size=32, groups=1)


def test_rewrites_previous_synthetic_dataset(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    write_synthetic_dataset(out, n_images=4, size=32, seed=0, groups=2)
    (out / "README.txt").write_text("user note")
    m = write_synthetic_dataset(out, n_images=2, size=32, seed=1, groups=1)
    assert len(m.images) == 2 and len(load_manifest(out).images) == 2
    assert sorted(p.name for p in (out / "images").iterdir()) == ["g00_i0000.tif", "g00_i0001.tif"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["g00_i0000.tif", "g00_i0001.tif"]
    assert (out / "README.txt").read_text() == "user note"
    assert (out / MARKER).is_file()


@pytest.mark.parametrize("kwargs, field", [
    ({"n_images": 0}, "n_images"), ({"size": 8}, "size"), ({"groups": 0}, "groups"),
    ({"n_images": 2, "groups": 3}, "groups"), ({"seed": -1}, "seed"), ({"name": " "}, "name"),
])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        write_synthetic_dataset(tmp_path / "ds", **kwargs)
    assert not (tmp_path / "ds").exists()
