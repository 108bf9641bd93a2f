"""README "Volumes", command for command, as a user runs it: synth --volume → dataset.json → validate →
split → train → evaluate → predict into OME-Zarr, then the output reopened as an NGFF viewer reads it.

The commands are read from the README itself; the only changes: the volume is tiny (``--depth 64
--size 256`` becomes 16 × 64 × 64) and ``--steps 2000`` a few steps of a tiny network. The
``dataset.json`` the README leaves to the user is written here in the shape of the README's dspseg/2
example (a section masked from the label volume with an ``ignore`` value, a boxed one, a clicked
one, a range of unlabeled sections; plus masked sections for ``split``'s val and test), its boxes
and points taken from the label volume so they are true.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import zarr
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.colours import image_label_colors
from dspseg.data.synthetic import SYNTH_CLASSES
from dspseg.data.volumes import open_volume
from test_byod_walk import ROOT, documented

TINY = ["--steps", "3", "--width", "4", "--batch-size", "2", "--threads", "1", "--set", "levels=2",
        "--set", "crop_size=32"]
SHAPE = (16, 64, 64)


def readme_volume_walk() -> list[list[str]]:
    return documented((ROOT / "README.md").read_text(), "## Volumes", "## More")


def _dataset(folder: Path) -> dict:
    """The README example's records for ``folder/cell.ome.zarr``: masks from the label volume on sections
    1, 9 and 13 (three groups of ``group_every`` 4, so split finds val and test masks), a box around
    every mitochondrion of section 2, a click on one in section 5, and last the range of sections 4-7
    (but 6, and 5 named above) unlabeled."""
    labels = open_volume({"url": str(folder / "cell.ome.zarr"), "array": "labels/organelles"})
    mito = SYNTH_CLASSES.index("mitochondrion")
    ys, xs = np.nonzero(labels.section("z", 2) == mito)
    assert len(ys), "the tiny volume's section 2 shows a mitochondrion"
    box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    ys, xs = np.nonzero(labels.section("z", 5) == mito)
    point = [int(xs[len(xs) // 2]), int(ys[len(ys) // 2])]
    masked = {"mask": {"volume": {"url": "cell.ome.zarr", "array": "labels/organelles"}, "ignore": 255}}
    return {"format": "dspseg/2", "classes": SYNTH_CLASSES, "group_every": 4, "images": [
        {"volume": {"url": "cell.ome.zarr", "level": 0}, "axis": "z", "index": 1, **masked},
        {"volume": {"url": "cell.ome.zarr"}, "axis": "z", "index": 2, "boxes": [{"class": "mitochondrion", "xyxy": box}]},
        {"volume": {"url": "cell.ome.zarr"}, "axis": "z", "index": 5, "points": [{"class": "mitochondrion", "xy": point}]},
        {"volume": {"url": "cell.ome.zarr"}, "axis": "z", "index": 9, **masked},
        {"volume": {"url": "cell.ome.zarr"}, "axis": "z", "index": 13, **masked},
        {"volume": {"url": "cell.ome.zarr"}, "sections": {"axis": "z", "start": 4, "stop": 8, "exclude": [6]}}]}


def test_readme_lists_the_volume_walk() -> None:
    assert [c[0] for c in readme_volume_walk()] == ["synth", "validate", "split", "train", "evaluate", "predict"]


def test_volume_walk(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the README's relative paths: fib/, runs/, seg.ome.zarr
    runner, outputs = CliRunner(), {}
    for args in readme_volume_walk():
        if args[0] == "synth":
            assert args[-4:] == ["--depth", "64", "--size", "256"]
            args = [*args[:-4], "--depth", str(SHAPE[0]), "--size", str(SHAPE[1])]
        if args[0] == "train":
            assert args[-2:] == ["--steps", "2000"]
            args = args[:-2] + TINY
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
        assert "Traceback" not in result.output
        outputs[args[0]] = result.output
        if args[0] == "synth":  # the user writes dataset.json next
            (tmp_path / "fib" / "dataset.json").write_text(json.dumps(_dataset(tmp_path / "fib"), indent=1))

    assert "groups: 4" in outputs["validate"]
    splits = [r.get("split") for r in json.loads((tmp_path / "fib" / "dataset.json").read_text())["images"]]
    assert {"train", "val", "test"} <= set(splits)
    scores = json.loads((tmp_path / "runs" / "fib" / "eval" / "test.json").read_text())
    assert scores["split"] == "test" and scores["images"] >= 1 and 0.0 <= scores["mean_dice"] <= 1.0

    # the label image, as an NGFF viewer opens it
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        (node,) = list(Reader(parse_url(str(tmp_path / "seg.ome.zarr" / "labels" / "segmentation")))())
    assert [type(s).__name__ for s in node.specs] == ["Label", "Multiscales"]
    assert tuple(node.data[0].shape) == SHAPE
    labels = np.asarray(node.data[0])
    assert labels.dtype == np.uint8 and labels.max() < len(SYNTH_CLASSES)
    meta = zarr.open_group(str(tmp_path / "seg.ome.zarr" / "labels" / "segmentation"), mode="r").attrs.asdict()["ome"]
    assert [p["class"] for p in meta["image-label"]["properties"]] == SYNTH_CLASSES
    assert [p["label-value"] for p in meta["image-label"]["properties"]] == list(range(len(SYNTH_CLASSES)))
    assert meta["image-label"]["colors"] == image_label_colors(len(SYNTH_CLASSES))
    # voxel size, translation and axes are the input's
    image = zarr.open_group(str(tmp_path / "fib" / "cell.ome.zarr"), mode="r").attrs.asdict()["ome"]["multiscales"][0]
    ours = meta["multiscales"][0]
    assert ours["axes"] == image["axes"]
    assert ours["datasets"][0]["coordinateTransformations"] == image["datasets"][0]["coordinateTransformations"]
    assert open_volume({"url": str(tmp_path / "seg.ome.zarr"), "array": "labels/segmentation"}).voxel_size == \
        open_volume(str(tmp_path / "fib" / "cell.ome.zarr")).voxel_size
    assert "wrote seg.ome.zarr" in outputs["predict"].replace("\n", " ")
