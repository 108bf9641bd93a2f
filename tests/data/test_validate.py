"""``validate_dataset``: one tiny dataset per problem type, the summary of a valid set, and no writes.

Every dataset holds a ``base`` record whose full mask shows all classes, so that each test's problem
is the only one reported (no "class never occurs" warning, no cascade).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tifffile
from rich.console import Console

from dspseg.data.io import write_image, write_mask
from dspseg.data.manifest import Problem
from dspseg.data.validate import render_report, validate_dataset

H, W = 20, 30  # rows, columns: non-square
CLASSES = ["bg", "mito", "er"]


def put_image(root: Path, rel: str, c: int = 1, h: int = H, w: int = W) -> str:
    write_image(root / rel, np.random.default_rng(0).random((c, h, w)).astype(np.float32))
    return rel


def put_mask(root: Path, rel: str, arr: np.ndarray) -> str:
    write_mask(root / rel, arr)
    return rel


def full_mask() -> np.ndarray:
    """All classes: bg everywhere, mito rows 5..9 x cols 5..11 (35 px), er rows 12..13 x cols 20..27 (16 px)."""
    m = np.zeros((H, W), np.uint8)
    m[5:10, 5:12] = 1
    m[12:14, 20:28] = 2
    return m


def build(root: Path, records: list[dict], classes=CLASSES, ignore_index: int = 255, base: bool = True) -> Path:
    """Write dataset.json with ``records`` (after a valid ``base`` record if asked)."""
    if base:
        records = [{"file": put_image(root, "images/base.tif"),
                    "mask": put_mask(root, "masks/base.tif", full_mask())}] + records
    doc = {"format": "dspseg/1", "name": "t", "classes": list(classes), "ignore_index": ignore_index,
           "images": records}
    (root / "dataset.json").write_text(json.dumps(doc, indent=1))
    return root


def only(report, field: str, severity: str = "error") -> Problem:
    """The single problem of the report, which must be on ``field`` with ``severity``."""
    assert len(report.problems) == 1, "\n".join(map(str, report.problems))
    p = report.problems[0]
    assert (p.field, p.severity) == (field, severity), str(p)
    assert p.fix and p.message and p.where
    assert report.ok == (severity != "error")
    return p


def rec(root: Path, name: str = "a", c: int = 1, **fields) -> dict:
    return {"file": put_image(root, f"images/{name}.tif", c), **fields}


# ------------------------------------------------------------------------------------ manifest level


def test_missing_manifest(tmp_path):
    r = validate_dataset(tmp_path)
    assert not r.ok and r.summary is None
    p = r.problems[0]
    assert p.file.endswith("dataset.json") and "no such file" in p.message and "dataset.json" in p.fix


def test_malformed_json_line_and_column(tmp_path):
    (tmp_path / "dataset.json").write_text('{\n "classes": ["a"],\n "images": [],\n}\n')
    r = validate_dataset(tmp_path)
    assert not r.ok and r.summary is None
    p = r.problems[0]
    assert p.where == "line 4, column 1" and "malformed JSON" in p.message and "trailing commas" in p.fix


def test_structure_errors_do_not_stop_the_other_checks(tmp_path):
    build(tmp_path, [rec(tmp_path, boxes=[{"class": "mito", "xyxy": [1, 2, 3]}], split="training"),
                     {"file": "images/missing.tif"}])
    r = validate_dataset(tmp_path)
    got = {(p.where, p.field) for p in r.problems}
    assert got == {("images[1] (images/a.tif)", "boxes[0].xyxy"), ("images[1] (images/a.tif)", "split"),
                   ("images[2] (images/missing.tif)", "file")}
    box = next(p for p in r.problems if p.field == "boxes[0].xyxy")
    assert "got 3" in box.message and "[x0, y0, x1, y1]" in box.fix
    assert r.summary is not None and r.summary.n_images == 2  # base + missing; the broken record is skipped


def test_empty_images_list(tmp_path):
    build(tmp_path, [], base=False)
    p = only(validate_dataset(tmp_path), "images")
    assert "no images" in p.message and '"file"' in p.fix


def test_duplicate_class_names(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["bg", "mito", "er"])], classes=["bg", "mito", "er", "mito"])
    p = only(validate_dataset(tmp_path), "classes[3]")
    assert "'mito' is listed twice" in p.message and "classes[1]" in p.message and "unique" in p.fix


def test_ignore_index_collides_with_class(tmp_path):
    build(tmp_path, [], ignore_index=1)
    p = only(validate_dataset(tmp_path), "ignore_index")
    assert "class 'mito'" in p.message and "0..2" in p.message and "255" in p.fix


# ------------------------------------------------------------------------------------ files


def test_missing_image_file(tmp_path):
    build(tmp_path, [{"file": "images/nothere.tif", "labels": ["bg"]}])
    p = only(validate_dataset(tmp_path), "file")
    assert p.file.endswith("dataset.json") and p.where == "images[1] (images/nothere.tif)"
    assert "does not exist" in p.message and "nothere.tif" in p.message and "relative" in p.fix


def test_missing_mask_file(tmp_path):
    build(tmp_path, [rec(tmp_path, mask="masks/nothere.png")])
    p = only(validate_dataset(tmp_path), "mask")
    assert "mask file does not exist" in p.message and "nothere.png" in p.message


def test_text_file_named_tif(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.tif").write_text("hello")
    build(tmp_path, [{"file": "images/a.tif"}])
    p = only(validate_dataset(tmp_path), "file")
    assert p.file == str(tmp_path / "images/a.tif") and "corrupt" in p.message and "export" in p.fix


def test_truncated_tiff(tmp_path):
    put_image(tmp_path, "images/full.tif", c=3)
    data = (tmp_path / "images/full.tif").read_bytes()
    (tmp_path / "images/a.tif").write_bytes(data[: len(data) // 2])
    os.remove(tmp_path / "images/full.tif")
    build(tmp_path, [{"file": "images/a.tif"}])
    p = only(validate_dataset(tmp_path), "file")
    assert "truncated" in p.message and p.file.endswith("a.tif")


def test_volume_image(tmp_path):
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images/v.tif", np.zeros((5, H, W), np.uint8), imagej=True,
                     metadata={"axes": "ZYX"})
    build(tmp_path, [{"file": "images/v.tif"}])
    p = only(validate_dataset(tmp_path), "file")
    assert "volume" in p.message and "(5, 20, 30)" in p.message and "slice" in p.fix


def test_float_mask(tmp_path):
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "masks/a.tif", np.zeros((H, W), np.float32))
    build(tmp_path, [rec(tmp_path, mask="masks/a.tif")])
    p = only(validate_dataset(tmp_path), "mask")
    assert p.file.endswith("masks/a.tif") and "float32" in p.message and "uint8" in p.fix


def test_mask_shape_differs_from_image(tmp_path):
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", np.zeros((W, H), np.uint8)))])
    p = only(validate_dataset(tmp_path), "mask")
    assert p.file.endswith("masks/a.tif") and "30x20" in p.message and "20x30" in p.message
    assert "size" in p.fix


def test_mask_values_not_class_nor_ignore(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[0, :3] = 7
    m[1, :5] = 9
    m[2, 0] = 255
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", m))])
    p = only(validate_dataset(tmp_path), "mask")
    assert "7 (3 pixel(s)), 9 (5 pixel(s))" in p.message and "0..2" in p.message and "255" in p.message
    assert "class id" in p.fix


def test_mask_255_with_other_ignore_index_hints(tmp_path):
    m = full_mask()
    m[0, 0] = 255
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", m))], ignore_index=-1)
    p = only(validate_dataset(tmp_path), "mask")
    assert '"ignore_index": 255' in p.fix


def test_more_classes_than_mask_dtype_holds(tmp_path):
    classes = [f"c{i}" for i in range(300)]
    m = np.arange(H * W).reshape(H, W) % 256  # uint8 file, all classes < 256 used
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", m),
                         labels=classes[:256])] + [rec(tmp_path, "b", labels=classes)],
          classes=classes, ignore_index=65535, base=False)
    p = only(validate_dataset(tmp_path), "mask")
    assert "uint8" in p.message and "300 classes" in p.message and "uint16" in p.fix


def test_mask_entirely_ignore(tmp_path):
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", np.full((H, W), 255)))])
    p = only(validate_dataset(tmp_path), "mask", "warning")
    assert "annotates nothing" in p.message


def test_mask_is_the_image_itself(tmp_path):
    build(tmp_path, [rec(tmp_path, mask="images/a.tif", labels=["bg"])])
    r = validate_dataset(tmp_path)
    p = next(p for p in r.problems if "names the image file itself" in p.message)
    assert p.field == "mask" and not r.ok


def test_same_mask_for_two_images(tmp_path):
    build(tmp_path, [rec(tmp_path, mask="masks/base.tif")])
    p = only(validate_dataset(tmp_path), "mask", "warning")
    assert "images[0]" in p.message


def test_mixed_channel_counts(tmp_path):
    build(tmp_path, [rec(tmp_path, "a", labels=["bg"]), rec(tmp_path, "b", c=3, labels=["bg"])])
    p = only(validate_dataset(tmp_path), "file")
    assert p.file.endswith("b.tif") and "3 channel(s)" in p.message and "2 of 3 images have 1" in p.message
    assert "fixed number of input channels" in p.fix


def test_small_image(tmp_path):
    build(tmp_path, [{"file": put_image(tmp_path, "images/s.tif", h=8, w=30), "labels": ["bg"]}])
    p = only(validate_dataset(tmp_path), "file", "warning")
    assert "8x30" in p.message


# ------------------------------------------------------------------------------------ paths


def test_path_with_dotdot_leaves_folder(tmp_path):
    root = tmp_path / "ds"
    put_image(tmp_path, "outside.tif")
    build(root, [{"file": "../outside.tif"}])
    p = only(validate_dataset(root), "file")
    assert "leaves the dataset folder" in p.message and "'..'" in p.fix


def test_absolute_path_refused(tmp_path):
    root = tmp_path / "ds"
    build(root, [{"file": put_image(root, "images/a.tif"), "mask": str(root / "masks/base.tif")}])
    p = only(validate_dataset(root), "mask")
    assert "absolute" in p.message


def test_symlink_pointing_outside(tmp_path):
    root = tmp_path / "ds"
    put_image(tmp_path, "outside.tif")
    build(root, [])
    (root / "images" / "link.tif").symlink_to(tmp_path / "outside.tif")
    build(root, [{"file": "images/link.tif"}])
    p = only(validate_dataset(root), "file")
    assert "outside the dataset folder" in p.message


def test_duplicate_image_entries(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["bg"]),
                     {"file": "images/./a.tif", "points": [{"class": "bg", "xy": [1, 1]}]}])
    p = only(validate_dataset(tmp_path), "file")
    assert p.where == "images[2] (images/./a.tif)" and "images[1]" in p.message and "once" in p.fix


# ------------------------------------------------------------------------------------ classes, boxes, points


@pytest.mark.parametrize("field,record", [
    ("boxes[0].class", {"boxes": [{"class": "Mito", "xyxy": [0, 0, 5, 5]}], "labels": ["bg", "mito"]}),
    ("points[0].class", {"points": [{"class": "mitochondria", "xy": [1, 1]}], "labels": ["mito"]}),
    ("labels[1]", {"labels": ["bg", "mitto"]}),
])
def test_unknown_class_suggests_closest(tmp_path, field, record):
    build(tmp_path, [rec(tmp_path, **record)])
    p = only(validate_dataset(tmp_path), field)
    assert "unknown class" in p.message and "'mito' (the closest class name)" in p.fix
    assert "known classes: 'bg', 'mito', 'er'" in p.fix


def test_unknown_class_without_close_match(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["nucleus"])])
    p = only(validate_dataset(tmp_path), "labels[0]")
    assert "closest" not in p.fix and "append 'nucleus' to it" in p.fix


def test_empty_box(tmp_path):
    build(tmp_path, [rec(tmp_path, boxes=[{"class": "bg", "xyxy": [0, 0, W, H]},
                                          {"class": "mito", "xyxy": [10, 5, 4, 9]}], labels=["bg", "mito"])])
    p = only(validate_dataset(tmp_path), "boxes[1].xyxy")
    assert "is empty" in p.message and "[x, y, x+1, y+1]" in p.fix and "width, height" in p.fix


def test_box_outside_image_with_swap_hint(tmp_path):
    # 30 columns x 20 rows: x1 = 25 fits, y1 = 25 does not; swapped (x <-> y) it would fit.
    build(tmp_path, [rec(tmp_path, boxes=[{"class": "mito", "xyxy": [0, 0, 15, 25]}], labels=["bg", "mito"])])
    p = only(validate_dataset(tmp_path), "boxes[0].xyxy")
    assert "outside the image" in p.message and "30 columns (x) by 20 rows (y)" in p.message
    assert "y1 <= 20" in p.fix and "swapped" in p.fix


def test_point_outside_image(tmp_path):
    build(tmp_path, [rec(tmp_path, points=[{"class": "mito", "xy": [W, 0]}])])
    p = only(validate_dataset(tmp_path), "points[0].xy")
    assert f"[{W}, 0]" in p.message and f"x < {W}" in p.fix


def test_box_class_not_in_labels(tmp_path):
    build(tmp_path, [rec(tmp_path, boxes=[{"class": "er", "xyxy": [0, 0, 5, 5]}], labels=["bg", "mito"])])
    p = only(validate_dataset(tmp_path), "boxes[0].class")
    assert "'labels' does not list 'er'" in p.message and "add 'er' to 'labels'" in p.fix


def test_point_class_not_in_labels(tmp_path):
    build(tmp_path, [rec(tmp_path, points=[{"class": "er", "xy": [0, 0]}], labels=["bg"])])
    p = only(validate_dataset(tmp_path), "points[0].class")
    assert "'er'" in p.message


def test_two_points_of_different_classes_at_one_pixel(tmp_path):
    build(tmp_path, [rec(tmp_path, points=[{"class": "er", "xy": [3, 4]}, {"class": "mito", "xy": [3, 4]}])])
    p = only(validate_dataset(tmp_path), "points[1]")
    assert "points[0]" in p.message and "'er'" in p.message


def test_duplicate_point_is_a_warning(tmp_path):
    build(tmp_path, [rec(tmp_path, points=[{"class": "er", "xy": [3, 4]}, {"class": "er", "xy": [3, 4]}])])
    only(validate_dataset(tmp_path), "points[1]", "warning")


def test_empty_labels(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=[])])
    p = only(validate_dataset(tmp_path), "labels")
    assert "empty" in p.message


def test_duplicate_label_warning(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["bg", "bg"])])
    p = only(validate_dataset(tmp_path), "labels", "warning")
    assert "2 times" in p.message


def test_pixels_outside_every_box_when_all_classes_boxed(tmp_path):
    build(tmp_path, [rec(tmp_path, boxes=[{"class": "bg", "xyxy": [0, 0, 10, H]},
                                          {"class": "mito", "xyxy": [5, 5, 12, 10]}])])
    p = only(validate_dataset(tmp_path), "boxes", "warning")
    assert f"{H * W - (10 * H + 2 * 5)} pixel(s)" in p.message and "'bg', 'mito'" in p.message


# ------------------------------------------------------------------------------------ mask vs others


def test_mask_class_not_in_labels(tmp_path):
    build(tmp_path, [rec(tmp_path, mask="masks/base.tif", labels=["bg", "mito"])])
    r = validate_dataset(tmp_path)
    errors = [p for p in r.problems if p.severity == "error"]
    assert len(errors) == 1 and errors[0].field == "mask"
    assert "16 pixel(s) of class 'er'" in errors[0].message and "'labels' does not list it" in errors[0].message


def test_mask_class_not_among_boxes_without_labels(tmp_path):
    m = put_mask(tmp_path, "masks/a.tif", full_mask())
    build(tmp_path, [rec(tmp_path, mask=m, boxes=[{"class": "mito", "xyxy": [5, 5, 12, 10]},
                                                  {"class": "bg", "xyxy": [0, 0, W, H]}])])
    p = only(validate_dataset(tmp_path), "mask")
    assert "class 'er'" in p.message and "complete class set" in p.message


def test_label_absent_from_complete_mask(tmp_path):
    m = np.zeros((H, W), np.uint8)
    m[:5] = 1
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", m), labels=["bg", "mito", "er"])])
    p = only(validate_dataset(tmp_path), "labels")
    assert "'er'" in p.message and "annotates every pixel" in p.message


def test_label_absent_from_partial_mask_is_fine(tmp_path):
    m = np.full((H, W), 255, np.uint8)
    m[:5] = 1
    build(tmp_path, [rec(tmp_path, mask=put_mask(tmp_path, "masks/a.tif", m), labels=["bg", "mito", "er"])])
    assert validate_dataset(tmp_path).problems == []


def test_point_on_mask_pixel_of_another_class(tmp_path):
    m = put_mask(tmp_path, "masks/a.tif", full_mask())
    build(tmp_path, [rec(tmp_path, mask=m, points=[{"class": "er", "xy": [6, 7]}], labels=["bg", "mito", "er"])])
    p = only(validate_dataset(tmp_path), "points[0]")
    assert "[6, 7] is 'er'" in p.message and "says 'mito'" in p.message


def test_mask_pixels_of_boxed_class_outside_its_boxes(tmp_path):
    m = put_mask(tmp_path, "masks/a.tif", full_mask())
    build(tmp_path, [rec(tmp_path, mask=m, boxes=[{"class": "mito", "xyxy": [5, 5, 10, 10]}],
                         labels=["bg", "mito", "er"])])
    p = only(validate_dataset(tmp_path), "boxes")
    assert "10 pixel(s) of 'mito' outside every 'mito' box" in p.message


def test_box_without_its_class_in_the_mask(tmp_path):
    m = put_mask(tmp_path, "masks/a.tif", full_mask())
    build(tmp_path, [rec(tmp_path, mask=m, boxes=[{"class": "mito", "xyxy": [5, 5, 12, 10]},
                                                  {"class": "mito", "xyxy": [0, 0, 3, 3]}],
                         labels=["bg", "mito", "er"])])
    p = only(validate_dataset(tmp_path), "boxes[1]")
    assert "no 'mito' pixel inside the box" in p.message


# ------------------------------------------------------------------------------------ splits, groups


def test_group_cut_across_splits(tmp_path):
    m = put_mask(tmp_path, "masks/b.tif", full_mask())
    build(tmp_path, [rec(tmp_path, "a", group="g1", split="train", labels=["bg"]),
                     rec(tmp_path, "b", group="g1", split="test", mask=m)], base=True)
    r = validate_dataset(tmp_path)
    errs = [p for p in r.problems if p.severity == "error"]
    assert len(errs) == 1 and errs[0].field == "images[].group"
    assert "'g1'" in errs[0].message and "train: images[1]" in errs[0].message and "test: images[2]" in errs[0].message


def test_split_for_only_some_images(tmp_path):
    build(tmp_path, [rec(tmp_path, split="train", labels=["bg"])])
    p = only(validate_dataset(tmp_path), "images[].split", "warning")
    assert "1 of 2 images" in p.message and "images[0]" in p.message


def test_test_image_without_mask(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["bg"], split="test")], base=False)
    r = validate_dataset(tmp_path)
    assert any(p.field == "mask" and "cannot be scored" in p.message for p in r.warnings)


def test_class_never_annotated(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["bg"])], base=False)
    r = validate_dataset(tmp_path)
    assert sorted(p.field for p in r.problems) == ["classes[1]", "classes[2]", "images"]  # + only one class
    assert all(p.severity == "warning" for p in r.problems) and r.ok


# ------------------------------------------------------------------------------------ whole reports


def test_many_problems_all_reported(tmp_path):
    build(tmp_path, [{"file": "images/none1.tif"}, {"file": "images/none2.tif"},
                     rec(tmp_path, labels=["mitoo"]), {"file": "../x.tif"}])
    r = validate_dataset(tmp_path)
    assert [(p.where.split(" ")[0], p.field) for p in r.errors] == [
        ("images[1]", "file"), ("images[2]", "file"), ("images[3]", "labels[0]"), ("images[4]", "file")]


def test_check_files_false_opens_nothing(tmp_path):
    build(tmp_path, [{"file": "images/none.tif", "boxes": [{"class": "mito", "xyxy": [0, 0, 500, 500]}]}],
          classes=["mito"], base=False)
    r = validate_dataset(tmp_path, check_files=False)
    assert r.problems == [] and r.summary.sizes == Counter()


def _valid_dataset(root: Path) -> Path:
    full = put_mask(root, "masks/a.tif", full_mask())
    partial = np.full((H, W), 255, np.uint8)
    partial[:4, :4] = 1
    part = put_mask(root, "masks/b.png", partial)
    recs = [
        {"file": put_image(root, "images/a.tif", 2), "mask": full, "group": "g1", "split": "test"},
        {"file": put_image(root, "images/b.tif", 2), "mask": part, "group": "g1", "split": "test"},
        {"file": put_image(root, "images/c.tif", 2), "group": "g2", "split": "train",
         "boxes": [{"class": "bg", "xyxy": [0, 0, W, H]}, {"class": "mito", "xyxy": [2, 3, 10, 9]}]},
        {"file": put_image(root, "images/d.png", 2), "group": "g2", "split": "train",
         "points": [{"class": "er", "xy": [W - 1, H - 1]}]},
        {"file": put_image(root, "images/e.tif", 2), "group": "g3", "split": "train", "labels": ["bg", "er"]},
        {"file": put_image(root, "images/f.tif", 2), "group": "g3", "split": "train"},
    ]
    return build(root, recs, base=False)


def test_valid_dataset_summary_is_exact(tmp_path):
    r = validate_dataset(_valid_dataset(tmp_path))
    assert r.problems == [] and r.ok
    s = r.summary
    assert s.n_images == 6
    assert s.per_type == {"mask": 2, "box": 1, "point": 1, "image": 1, "none": 1}
    assert s.class_pixels == {"bg": H * W - 51, "mito": 35 + 16, "er": 16}
    assert s.class_images == {"bg": 3, "mito": 3, "er": 3}  # bg: a c e; mito: a b c; er: a d e
    assert s.sizes == Counter({(H, W): 6}) and s.channels == Counter({2: 6})
    assert s.groups == 3 and s.splits == Counter({"train": 4, "test": 2})


def test_report_carries_what_it_read(tmp_path):
    """The trainer takes the manifest, the image sizes and the masks from the report: read once."""
    from dspseg.data.manifest import load_manifest

    root = _valid_dataset(tmp_path)
    r = validate_dataset(root)
    assert r.manifest is not None and r.manifest.to_json() == load_manifest(root).to_json()
    assert r.manifest.root == root
    assert r.sizes == {f"images/{n}": (2, H, W) for n in ("a.tif", "b.tif", "c.tif", "d.png", "e.tif", "f.tif")}
    assert r.masks == {}  # only when asked
    kept = validate_dataset(root, keep_masks=True).masks
    assert sorted(kept) == ["masks/a.tif", "masks/b.png"]
    np.testing.assert_array_equal(kept["masks/a.tif"], full_mask())
    assert kept["masks/b.png"].dtype == np.uint8 and (kept["masks/b.png"] == 1).sum() == 16
    assert validate_dataset(build(tmp_path / "broken", [], classes=[])).manifest is None


def test_validate_never_modifies_files(tmp_path):
    def snapshot(root: Path) -> dict:
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
                for p in sorted(root.rglob("*"))}

    good = _valid_dataset(tmp_path / "good")
    bad = build(tmp_path / "bad", [rec(tmp_path / "bad", mask="masks/none.tif", labels=["x"]),
                                   {"file": "../good/images/a.tif"}])
    before = snapshot(tmp_path)
    assert validate_dataset(good).ok and not validate_dataset(bad).ok
    assert snapshot(tmp_path) == before


def test_render_report_errors_then_warnings(tmp_path):
    build(tmp_path, [rec(tmp_path, labels=["bg", "bg"]), {"file": "images/none.tif"}])
    out = io.StringIO()
    render_report(validate_dataset(tmp_path), Console(file=out, width=200))
    text = out.getvalue()
    assert text.index("error:") < text.index("warning:")
    assert "images[2] (images/none.tif), field 'file'" in text and "fix:" in text
    assert "1 error(s), 1 warning(s)" in text


def test_render_report_summary_tables(tmp_path):
    out = io.StringIO()
    render_report(validate_dataset(_valid_dataset(tmp_path)), Console(file=out, width=200))
    text = out.getvalue()
    for words in ("OK, 6 images", "Images per annotation type", "mask pixels", "Image sizes",
                  "20 x 30", "2 (6 images)", "groups: 3", "train: 4", "test: 2"):
        assert words in text, text


# ------------------------------------------------------------------------------------ robustness

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_names = st.sampled_from(["bg", "mito", "er", "Mito", "", "x" * 300, "../a", "a\u0000"])
_ints = st.one_of(st.integers(-5, 40), st.sampled_from([10**20, -(10**20)]))
_scalars = st.one_of(st.none(), st.booleans(), _ints, st.floats(allow_nan=True), _names)
_files = st.sampled_from(["images/base.tif", "masks/base.tif", "images/none.tif", "../x.tif", "/abs.tif",
                          "images", "", "images/base.tif ", "dataset.json"])
_record = st.fixed_dictionaries({"file": st.one_of(_files, _scalars)}, optional={
    "mask": st.one_of(_files, _scalars),
    "split": st.sampled_from(["train", "val", "test", "bogus"]),
    "group": st.one_of(_names, _ints),
    "boxes": st.lists(st.fixed_dictionaries({"class": _names, "xyxy": st.lists(_ints, max_size=5)}), max_size=3),
    "points": st.lists(st.fixed_dictionaries({"class": _names, "xy": st.lists(_ints, max_size=3)}), max_size=3),
    "labels": st.one_of(st.lists(_names, max_size=4), _scalars),
})
_manifest = st.fixed_dictionaries({"images": st.one_of(st.lists(st.one_of(_record, _scalars), max_size=4),
                                                       _scalars)}, optional={
    "classes": st.one_of(st.lists(_names, max_size=4), _scalars),
    "ignore_index": st.one_of(_ints, _scalars),
    "format": st.sampled_from(["dspseg/1", "coco"]),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_manifest)
def test_validate_never_raises_on_arbitrary_manifests(tmp_path, doc):
    if not (tmp_path / "masks/base.tif").exists():
        build(tmp_path, [])
    (tmp_path / "dataset.json").write_text(json.dumps(doc))
    r = validate_dataset(tmp_path)
    assert all(isinstance(p, Problem) and p.fix for p in r.problems)
    assert not any("dspseg failed" in p.message for p in r.problems), [str(p) for p in r.problems]


_coords = st.integers(-3, 35)
_weak_record = st.fixed_dictionaries({}, optional={
    "boxes": st.lists(st.fixed_dictionaries({"class": st.sampled_from(CLASSES),
                                             "xyxy": st.lists(_coords, min_size=4, max_size=4)}), max_size=3),
    "points": st.lists(st.fixed_dictionaries({"class": st.sampled_from(CLASSES),
                                              "xy": st.lists(_coords, min_size=2, max_size=2)}), max_size=3),
    "labels": st.lists(st.sampled_from(CLASSES), max_size=3, unique=True),
    "with_mask": st.booleans(),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(_weak_record, min_size=1, max_size=3))
def test_a_dataset_that_validates_never_gives_a_wrong_tensor(tmp_path, recs):
    """Random, often contradictory annotations: either validate reports an error, or every record
    rasterises, annotated pixels admit their class, no valid pixel is left without a class and every
    bag lies inside the image."""
    from dspseg.data.io import read_mask
    from dspseg.data.manifest import load_manifest
    from dspseg.data.rasterise import rasterise

    records = []
    for i, r in enumerate(recs):
        r = dict(r)
        with_mask = r.pop("with_mask", False)
        record = rec(tmp_path, f"w{i}", **r)
        if with_mask:
            record["mask"] = put_mask(tmp_path, f"masks/w{i}.tif", full_mask())
        records.append(record)
    build(tmp_path, records)
    report = validate_dataset(tmp_path)
    assert all(isinstance(p, Problem) and p.fix for p in report.problems)
    if not report.ok:
        return
    m = load_manifest(tmp_path)
    for r in m.images:
        mask = read_mask(m.path(r.mask)) if r.mask else None
        a = rasterise(r, m.classes, m.ignore_index, (H, W), mask=mask, derive_weak=True)
        assert a.allowed.shape == (len(CLASSES), H, W)
        assert a.allowed.any(axis=0).all()
        annotated = a.target != m.ignore_index
        rows, cols = np.nonzero(annotated)
        assert a.allowed[a.target[rows, cols], rows, cols].all()
        assert ((a.points[:, 1] >= 0) & (a.points[:, 1] < H) & (a.points[:, 2] >= 0) & (a.points[:, 2] < W)).all()
        assert ((a.boxes[:, 1] >= 0) & (a.boxes[:, 3] <= W) & (a.boxes[:, 2] >= 0) & (a.boxes[:, 4] <= H)).all()
        assert ((a.boxes[:, 3] > a.boxes[:, 1]) & (a.boxes[:, 4] > a.boxes[:, 2])).all()


# ------------------------------------------------------------------------------ untrainable, intensities


def test_untrainable_datasets_are_warned_about(tmp_path):
    ignored = put_mask(tmp_path, "masks/a.tif", np.full((H, W), 255, np.uint8))
    build(tmp_path, [rec(tmp_path, mask=ignored)], base=False)
    r = validate_dataset(tmp_path)
    assert r.ok and any(p.field == "images" and "name no class" in p.message and "refuses" in p.message
                        for p in r.warnings)


def test_mixed_pixel_scales_are_warned_about(tmp_path):
    import tifffile

    records = []
    for k in range(4):
        rel = f"images/u{k}.tif"
        (tmp_path / "images").mkdir(exist_ok=True)
        tifffile.imwrite(tmp_path / rel, np.full((H, W), 200, np.uint8))
        records.append({"file": rel})
    tifffile.imwrite(tmp_path / "images/f.tif", np.full((H, W), 200.0, np.float32))  # 0..255 as float
    tifffile.imwrite(tmp_path / "images/w.tif", np.full((H, W), 4000, np.uint16))  # 12-bit in uint16
    tifffile.imwrite(tmp_path / "images/g.tif", np.full((H, W), 60000, np.uint16))
    records += [{"file": "images/f.tif"}, {"file": "images/w.tif"}, {"file": "images/g.tif"}]
    build(tmp_path, records, base=False)
    warned = {p.where.split(" ")[0]: p.message for p in validate_dataset(tmp_path).warnings if "brighter" in p.message
              or "darker" in p.message}
    assert set(warned) == {"images[4]", "images[5]"}  # the float in 0..255, the 12-bit uint16; not g.tif
    assert "float32" in warned["images[4]"] and "255× brighter" in warned["images[4]"]
    assert "uint16" in warned["images[5]"] and "darker" in warned["images[5]"]
