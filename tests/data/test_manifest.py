"""Manifest schema: structure errors name record, field and fix; paths stay inside; save/load round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dspseg.data.manifest import (Box, ImageRecord, Manifest, ManifestError, PathEscapeError, Point,
                                  load_manifest, parse_manifest, resolve_inside, save_manifest)


def problems(raw) -> list:
    with pytest.raises(ManifestError) as info:
        parse_manifest(raw, Path("."))
    return info.value.problems


def doc(**record) -> dict:
    return {"classes": ["bg", "mito"], "images": [{"file": "a.tif", **record}]}


@pytest.mark.parametrize("coords,got", [([1, 2, 3], "got 3"), ([1, 2, 3, 4, 5], "got 5"), ([], "got 0")])
def test_box_with_wrong_number_of_coordinates(coords, got):
    (p,) = problems(doc(boxes=[{"class": "mito", "xyxy": coords}]))
    assert (p.where, p.field) == ("images[0] (a.tif)", "boxes[0].xyxy")
    assert "needs exactly 4 numbers" in p.message and got in p.message
    assert "[x0, y0, x1, y1]" in p.fix and "Field required" not in p.message


@pytest.mark.parametrize("coords,got", [([1], "got 1"), ([1, 2, 3], "got 3")])
def test_point_with_wrong_number_of_coordinates(coords, got):
    (p,) = problems(doc(points=[{"class": "mito", "xy": coords}]))
    assert p.field == "points[0].xy" and got in p.message and "[x, y]" in p.fix


def test_unknown_fields_suggest_spelling_per_level():
    ps = problems({"classes": ["a"], "clases": 1, "images": [
        {"file": "a.tif", "label": ["a"], "boxes": [{"class": "a", "xyxy": [0, 0, 1, 1], "xy": [0, 0]}]}]})
    by_field = {p.field: p for p in ps}
    assert set(by_field) == {"clases", "label", "boxes[0].xy"}
    assert "rename it to 'classes'" in by_field["clases"].fix and "images" in by_field["clases"].fix
    assert "rename it to 'labels'" in by_field["label"].fix and "mask" in by_field["label"].fix
    assert "rename it to 'xyxy'" in by_field["boxes[0].xy"].fix
    assert all("unknown field" in p.message for p in ps)


def test_type_errors_name_field_and_fix():
    ps = problems(doc(split="training", group=3, boxes=[{"class": "mito", "xyxy": [1.5, 0, 2, 2]}]))
    by_field = {p.field: p for p in ps}
    assert "'train', 'val' or 'test'" in by_field["split"].fix
    assert "double quotes" in by_field["group"].fix
    assert "no decimals" in by_field["boxes[0].xyxy[0]"].fix


def test_missing_required_fields():
    ps = problems({"classes": ["a"], "images": [{"mask": "m.tif"}]})
    assert [(p.where, p.field, p.fix) for p in ps] == [("images[0]", "file", "add the field")]
    ps = problems({"images": []})
    assert [p.field for p in ps] == ["classes"]


def test_empty_classes():
    (p,) = problems({"classes": [], "images": []})
    assert p.field == "classes" and '"classes": [' in p.fix


def test_wrong_format_and_top_level():
    (p,) = problems({"format": "coco", "classes": ["a"], "images": []})
    assert p.field == "format" and "dspseg/1" in p.fix
    (p,) = problems([1, 2])
    assert "not a JSON object" in p.message


def test_load_reports_json_line_and_column(tmp_path):
    (tmp_path / "dataset.json").write_text('{"classes": ["a"],\n "images": [\n  {"file": \'a.tif\'}]}')
    with pytest.raises(ManifestError) as info:
        load_manifest(tmp_path)
    (p,) = info.value.problems
    assert p.where == "line 3, column 12" and "single quotes" in p.fix


def test_load_accepts_utf8_bom(tmp_path):
    text = json.dumps({"classes": ["a"], "images": [{"file": "a.tif"}]})
    (tmp_path / "dataset.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert load_manifest(tmp_path).images[0].file == "a.tif"


def test_missing_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        load_manifest(tmp_path)


def test_save_load_roundtrip(tmp_path):
    m = Manifest(classes=["bg", "mito"], ignore_index=255, images=[
        ImageRecord(file="a.tif", group="g", split="train", mask="m.tif",
                    boxes=[Box(cls="mito", xyxy=(1, 2, 3, 4))], points=[Point(cls="bg", xy=(0, 1))],
                    labels=["bg", "mito"]),
        ImageRecord(file="b.tif")])
    save_manifest(m, tmp_path)
    back = load_manifest(tmp_path / "dataset.json")
    assert back.to_json() == m.to_json() and back.root == tmp_path
    assert [r.annotation_type for r in back.images] == ["mask", "none"]
    assert back.images[1].group_name == "b.tif"
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.json"]  # no temporary file left


def test_resolve_inside(tmp_path):
    (tmp_path / "d").mkdir()
    assert resolve_inside(tmp_path, "d/x.tif") == Path(os.path.realpath(tmp_path)) / "d" / "x.tif"
    for bad in ("../x.tif", "/etc/passwd", "d/../../x.tif", "", " a.tif", "C:\\x.tif"):
        with pytest.raises(PathEscapeError):
            resolve_inside(tmp_path, bad)
    os.symlink(tmp_path.parent, tmp_path / "up")
    with pytest.raises(PathEscapeError, match="outside"):
        resolve_inside(tmp_path, "up/x.tif")


def test_saved_files_get_ordinary_permissions(tmp_path):
    """Atomic writes must not leave mkstemp's private 0600 mode on the user's files."""
    import os

    from dspseg.data.manifest import parse_manifest, save_manifest

    m = parse_manifest({"classes": ["a"], "images": [{"file": "x.tif"}]}, tmp_path)
    old = os.umask(0o022)
    try:
        path = save_manifest(m, tmp_path)
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["dataset.json"]  # no temporary file left


def test_new_folder_is_all_or_nothing_with_ordinary_permissions(tmp_path):
    import os

    import pytest

    from dspseg.fsutil import new_folder

    old = os.umask(0o022)
    try:
        with new_folder(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("x")
        assert oct((tmp_path / "out").stat().st_mode & 0o777) == oct(0o755)
        with pytest.raises(RuntimeError):
            with new_folder(tmp_path / "failed") as tmp:
                (tmp / "half.txt").write_text("x")
                raise RuntimeError("interrupted")
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing left of the failed build
    assert (tmp_path / "out" / "a.txt").read_text() == "x"
