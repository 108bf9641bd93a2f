"""dspseg synth --volume: an OME-Zarr image + NGFF label image of 3D bodies, written slab by slab."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dspseg.cli import app
from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
from dspseg.data.synthetic import volume as volume_module
from dspseg.data.synthetic.style import GroupStyle
from dspseg.data.synthetic.volume import downsample
from dspseg.data.synthetic.volume_render import render_slab
from dspseg.data.synthetic.volume_scene import plan_volume
from dspseg.data.volumes import ChunkCache, open_volume

SHAPE = (32, 64, 48)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "cell.ome.zarr"
    style = GroupStyle(cell_radius=70.0, nucleus_prob=0.3, ecs_pocket=6.0, mito_rate=12.0, vesicle_rate=20.0, er_rate=8.0,
                       lipid_rate=4.0, mito_presence=1.0, vesicle_presence=1.0, er_presence=1.0, lipid_presence=1.0)
    return write_synthetic_volume(out, shape=SHAPE, seed=3, chunks=(8, 32, 32), style=style)


def test_image_and_labels_are_ngff_with_class_names_and_colours(synth):
    image = open_volume(str(synth), cache=ChunkCache())
    labels = open_volume({"url": str(synth), "array": "labels/organelles"}, cache=ChunkCache())
    coarse = open_volume({"url": str(synth), "level": 1}, cache=ChunkCache())
    assert (image.format, image.shape, image.dtype, image.voxel_size, image.unit) == (
        "ome-zarr", SHAPE, np.uint8, (8.0, 8.0, 8.0), "nanometer")
    assert (labels.shape, coarse.shape, coarse.voxel_size, coarse.translation) == (
        SHAPE, (16, 32, 24), (16.0, 16.0, 16.0), (4.0, 4.0, 4.0))
    meta = json.loads((synth / "labels" / "organelles" / "zarr.json").read_text())["attributes"]["ome"]
    assert [p["class"] for p in meta["image-label"]["properties"]] == SYNTH_CLASSES
    assert len(meta["image-label"]["colors"]) == len(SYNTH_CLASSES)
    assert json.loads((synth / "labels" / "zarr.json").read_text())["attributes"]["ome"]["labels"] == ["organelles"]
    lab = np.stack([labels.section("z", z) for z in range(SHAPE[0])])
    present = {SYNTH_CLASSES[c] for c in np.unique(lab)}
    assert {"cytosol", "plasma_membrane", "mitochondrion", "vesicle", "er"} <= present
    img = np.stack([image.section("z", z) for z in range(SHAPE[0])])
    # membranes are dark and cytosol mid-grey, as in the 2D data
    assert img[lab == 2].mean() + 40 < img[lab == 1].mean()


def test_sections_change_smoothly_along_z(synth):
    labels = open_volume({"url": str(synth), "array": "labels/organelles"}, cache=ChunkCache())
    lab = np.stack([labels.section("z", z) for z in range(SHAPE[0])])
    near = np.mean([(lab[z] == lab[z + 1]).mean() for z in range(SHAPE[0] - 1)])
    far = (lab[0] == lab[-1]).mean()
    assert near > 0.9 and far < near - 0.1
    xz = labels.section("y", 30)  # an xz section shows the same bodies cut the other way
    assert xz.shape == (SHAPE[0], SHAPE[2]) and len(np.unique(xz)) >= 3


def test_slabs_do_not_change_the_voxels_and_levels_follow_s0(synth):
    scene = plan_volume((24, 40, 40), GroupStyle(cell_radius=40.0), seed=1)
    whole_img, whole_lab = render_slab(scene, 0, 24)
    part_img, part_lab = render_slab(scene, 8, 16)
    np.testing.assert_array_equal(part_img, whole_img[8:16])
    np.testing.assert_array_equal(part_lab, whole_lab[8:16])
    s0 = open_volume({"url": str(synth), "array": "labels/organelles"}, cache=ChunkCache())
    s1 = open_volume({"url": str(synth), "array": "labels/organelles", "level": 1}, cache=ChunkCache())
    full = s0.read((0, 0, 0), SHAPE)
    _, expected = downsample(np.zeros(SHAPE, np.uint8), full)
    np.testing.assert_array_equal(s1.read((0, 0, 0), s1.shape), expected)


def test_memory_is_one_slab(tmp_path, monkeypatch):
    seen = []

    def spy(scene, z0, z1):
        seen.append((z0, z1))
        return render_slab(scene, z0, z1)

    monkeypatch.setattr(volume_module, "render_slab", spy)
    write_synthetic_volume(tmp_path / "v.ome.zarr", shape=(48, 32, 32), chunks=(8, 16, 16), levels=2)
    assert seen == [(0, 16), (16, 32), (32, 48)]  # 2 x chunk depth per slab: whole chunks of both levels


def test_cli_writes_a_volume_and_refuses_a_used_folder(tmp_path):
    runner = CliRunner()
    out = tmp_path / "v.ome.zarr"
    r = runner.invoke(app, ["synth", str(out), "--volume", "--size", "32", "--depth", "16", "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert open_volume(str(out), cache=ChunkCache()).shape == (16, 32, 32)
    r = runner.invoke(app, ["synth", str(out), "--volume", "--size", "32", "--depth", "16"])
    assert r.exit_code != 0 and "not empty" in r.output
