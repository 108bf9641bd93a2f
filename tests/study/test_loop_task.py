"""A loop round's dataset (:func:`dspseg.study.loop_task.build_round`) without training: what it keeps of its source."""

from __future__ import annotations

import json
from pathlib import Path

from dspseg.data.acr import simulate_dataset
from dspseg.data.manifest import load_manifest
from dspseg.data.synthetic import SYNTH_CLASSES, write_synthetic_volume
from dspseg.study.costs import AnnotationCosts
from dspseg.study.loop_task import build_round


def _round_payload(root: Path, source: Path, start: Path) -> dict:
    """The payload keys build_round reads, for round 1 of the ``random`` strategy (it needs no model)."""
    return {"root": str(root), "data": str(root / "round1"), "source": str(source), "prev_data": str(start),
            "init": str(root / "runs" / "start"), "train": {}, "costs": AnnotationCosts().model_dump(), "seed": 0,
            "split": 0, "round": 1, "strategy": "random", "budget_s": 600.0}


def test_a_round_of_a_volume_source_keeps_its_group_every(tmp_path):
    source = tmp_path / "cell"
    write_synthetic_volume(source / "cell.ome.zarr", shape=(16, 32, 32), seed=1)
    image, labels = {"url": "cell.ome.zarr"}, {"url": "cell.ome.zarr", "array": "labels/organelles"}
    records = [{"volume": image, "axis": "z", "index": k, "mask": {"volume": labels}} for k in range(16)]
    (source / "dataset.json").write_text(json.dumps({"format": "dspseg/2", "name": "cell", "classes": SYNTH_CLASSES,
                                                     "ignore_index": 255, "group_every": 2, "images": records}))
    # ACR 1: every training section of the start is masked, so the round asks for nothing (the oracle
    # answers file records only) and writes the start's records again, as a new dataset
    start = tmp_path / "start"
    simulate_dataset(source, start, acr=1, scenario="mixed", split=0, n_splits=2)
    build_round(_round_payload(tmp_path, source, start))
    raw = json.loads((tmp_path / "round1" / "dataset.json").read_text())
    assert raw["format"] == "dspseg/2" and raw.get("group_every") == 2
    # the sections fall in the same blocks of 2 as in the start (not one group for the whole volume)
    groups = [r.group_name for r in load_manifest(tmp_path / "round1").images]
    assert groups == [r.group_name for r in load_manifest(start).images] and len(set(groups)) == 8
