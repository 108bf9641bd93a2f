"""Shared pieces of the issue-17 volume benchmarks (``volumes_train.py``, ``volumes_predict.py``).

* :func:`base_volume` — a small synthetic FIB-SEM volume written by ``dspseg synth --volume``'s
  function (:func:`dspseg.data.synthetic.write_synthetic_volume`), the texture everything else is cut from.
* :func:`write_tiled_volume` — a large OME-Zarr image (NGFF 0.5, zarr v3, uint8, one level) and its
  label image ``labels/organelles``, written fast: every chunk is a box of the base volume at a
  random offset, its grey values shifted by a random multiple of 16 (so no two chunks are alike
  and compression cannot fold them). ``texture="compressible"`` (the default) smooths the base
  3 × 3 in-plane and quantises it to 16 grey levels, so zstd stores it at about a third of its size
  (EM-like organelles, a smoother detector); ``texture="raw"`` keeps the synthetic detector noise,
  which zstd hardly compresses. The label volume is written only on the annotated sections (its
  fill value 255 is the ignore value; unwritten chunks cost no disk), as a lab's sparse annotation.
* :func:`volume_dataset` — its ``dataset.json`` (``dspseg/2``): masked, boxed and clicked sections
  as records and one ``sections`` range for every other section.
* :func:`section_datasets` — the base volume's sections twice: as 2D TIFF records and as volume
  records, the same annotations in the same order (the lazy against the in-memory step).
* :class:`TreeRSS` — runs a command and samples the RSS of its whole process tree (the command and
  every descendant, e.g. data-loader workers or torch.compile's workers) every ``interval``
  seconds: the peak of the sum; each process's ``VmHWM`` (its exact peak, from ``/proc``), so the
  command's own peak and the largest sum of the live processes' peaks at one sample (an upper
  bound of the tree's peak between samples); the largest process
  count, the 1-minute load average while it ran, and ``ru_maxrss`` from ``wait4`` (the largest
  single process of the tree, reaped descendants included; Linux carries a parent's high-water mark
  into a child it forks, so this can exceed every process's own peak).

Run the benchmarks themselves; this module only prints nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GiB = 1 << 30
MiB = 1 << 20
IGNORE = 255


def base_volume(work: Path, shape: tuple[int, int, int] = (64, 512, 512), seed: int = 0) -> Path:
    """``work/base.ome.zarr`` (``dspseg synth --volume``'s writer), written once and reused."""
    from dspseg.data.synthetic import write_synthetic_volume

    path = work / "base.ome.zarr"
    if not (path / "zarr.json").exists():
        if path.exists():
            shutil.rmtree(path)
        t = time.perf_counter()
        write_synthetic_volume(path, shape=shape, seed=seed)
        print(f"wrote the base volume {path} {shape} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def read_base(path: Path, texture: str = "compressible") -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) of the base volume as (Z, Y, X) uint8 arrays; ``texture`` as in the module docstring."""
    import zarr
    from scipy import ndimage

    root = zarr.open_group(str(path), mode="r")
    image, labels = np.asarray(root["s0"][:]), np.asarray(root["labels/organelles/s0"][:])
    if texture == "compressible":
        smooth = ndimage.uniform_filter(image.astype(np.float32), size=(1, 3, 3))
        image = (np.clip(smooth, 0, 255) // 16 * 16).astype(np.uint8)
    elif texture != "raw":
        raise ValueError(f"texture must be compressible or raw, got {texture!r}")
    return image, labels


def _ngff_group(path: Path, name: str, voxel: tuple[float, float, float]) -> Any:
    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_multiscales_metadata
    from dspseg.data.volumes.pyramid import level_datasets

    group = zarr.open_group(str(path), mode="a", zarr_format=3)
    axes = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    write_multiscales_metadata(group, level_datasets(1, voxel), fmt=FormatV05(), axes=axes, name=name)
    return group


@dataclass
class TiledVolume:
    """What :func:`write_tiled_volume` wrote."""

    path: Path
    shape: tuple[int, int, int]
    chunks: tuple[int, int, int]
    annotated: dict[int, np.ndarray]  # section index -> its (Y, X) labels (the label volume's section)
    seconds: float
    disk_bytes: int
    codec: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))


def disk_usage(path: Path) -> int:
    """Bytes the files under ``path`` take on disk."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def write_tiled_volume(path: Path, shape: tuple[int, int, int], base: tuple[np.ndarray, np.ndarray],
                       annotated: list[int], chunks: tuple[int, int, int] = (16, 256, 256), seed: int = 0,
                       codec: str = "zstd", pool: int = 512,
                       voxel: tuple[float, float, float] = (8.0, 8.0, 8.0)) -> TiledVolume:
    """Write the OME-Zarr image ``path`` of ``shape`` (uint8, a multiple of ``chunks``) from the
    ``base`` (image, labels) texture; the label image holds the base's classes on the ``annotated``
    sections only.

    Fast: ``pool`` distinct chunks are cut from the texture (random offset, grey values shifted by a
    random multiple of 16) and encoded once (zstd level 3, or raw with ``codec="none"``), then every
    chunk file of the image is one of them drawn at random, written as bytes into zarr v3's chunk
    layout (``s0/c/z/y/x``). The array's metadata names the same codec, so zarr (and dspseg) decode
    every chunk as they would any other; three chunks are read back through zarr and compared.
    """
    import numcodecs
    import zarr
    from zarr.codecs import ZstdCodec

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from ome_zarr.format import FormatV05
        from ome_zarr.writer import write_label_metadata
    from dspseg.colours import image_label_colors
    from dspseg.data.synthetic import SYNTH_CLASSES

    tex, lab = base
    if any(c > t for c, t in zip(chunks, tex.shape)) or any(s % c for s, c in zip(shape, chunks)):
        raise ValueError(f"chunks {chunks} must fit in the base texture {tex.shape} and divide the shape {shape}")
    if codec not in ("zstd", "none"):
        raise ValueError(f"codec must be zstd or none, got {codec!r}")
    if path.exists():
        shutil.rmtree(path)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    offsets = [tuple(int(rng.integers(0, t - c + 1)) for t, c in zip(tex.shape, chunks)) for _ in range(pool)]
    shifts = [int(rng.integers(-2, 3)) * 16 for _ in range(pool)]

    def cut(p: int, which: np.ndarray) -> np.ndarray:
        box = tuple(slice(o, o + c) for o, c in zip(offsets[p], chunks))
        return which[box]

    def chunk(p: int) -> np.ndarray:
        return np.clip(cut(p, tex).astype(np.int16) + shifts[p], 0, 255).astype(np.uint8)

    zstd = numcodecs.Zstd(level=3)
    encoded = [zstd.encode(chunk(p).tobytes()) if codec == "zstd" else chunk(p).tobytes() for p in range(pool)]
    root = _ngff_group(path, "image", voxel)
    root.create_array("s0", shape=shape, chunks=chunks, dtype="uint8", dimension_names=list("zyx"), fill_value=0,
                      compressors=[ZstdCodec(level=3)] if codec == "zstd" else None)
    grid = tuple(s // c for s, c in zip(shape, chunks))
    choice = rng.integers(0, pool, size=grid)
    for iz in range(grid[0]):
        for iy in range(grid[1]):
            folder = path / "s0" / "c" / str(iz) / str(iy)
            folder.mkdir(parents=True, exist_ok=True)
            for ix in range(grid[2]):
                (folder / str(ix)).write_bytes(encoded[choice[iz, iy, ix]])
    labels_root = root.create_group("labels")
    label_group = _ngff_group(path / "labels" / "organelles", "organelles", voxel)
    labels = label_group.create_array("s0", shape=shape, chunks=chunks, dtype="uint8", fill_value=IGNORE,
                                      dimension_names=list("zyx"))
    write_label_metadata(labels_root, "organelles", fmt=FormatV05(), colors=image_label_colors(len(SYNTH_CLASSES)),
                         properties=[{"label-value": k, "class": n} for k, n in enumerate(SYNTH_CLASSES)])
    kept: dict[int, np.ndarray] = {}
    cz, cy, cx = chunks
    for iz in sorted({k // cz for k in annotated}):
        slab = np.full((cz, *shape[1:]), IGNORE, np.uint8)
        for k in sorted({k for k in annotated if k // cz == iz}):
            for iy in range(grid[1]):
                for ix in range(grid[2]):
                    slab[k % cz, iy * cy:(iy + 1) * cy, ix * cx:(ix + 1) * cx] = cut(choice[iz, iy, ix], lab)[k % cz]
            kept[k] = slab[k % cz].copy()
        labels[iz * cz:(iz + 1) * cz] = slab
    image = zarr.open_group(str(path), mode="r")["s0"]
    for _ in range(3):
        idx = tuple(int(rng.integers(0, g)) for g in grid)
        got = image[tuple(slice(i * c, (i + 1) * c) for i, c in zip(idx, chunks))]
        if not np.array_equal(got, chunk(choice[idx])):
            raise RuntimeError(f"{path}: chunk {idx} does not read back as written")
    seconds = time.perf_counter() - t0
    return TiledVolume(path, tuple(shape), tuple(chunks), kept, seconds, disk_usage(path / "s0"), codec)


def volume_dataset(root: Path, vol: TiledVolume, masks: list[int], boxes: list[int], points: list[int],
                   per_section: int = 64, seed: int = 0, name: str = "dataset.json") -> Path:
    """``root/name``: sections ``masks`` with the label volume as mask, ``boxes``/``points`` with up to
    ``per_section`` boxes/points of their label section's objects (:func:`dspseg.data.weak.derive_weak_labels`),
    and a ``sections`` range of every other z section (unlabeled). No ``split``: everything trains."""
    from dspseg.data.synthetic import SYNTH_CLASSES
    from dspseg.data.weak import derive_weak_labels

    rng = np.random.default_rng(seed)
    url = os.path.relpath(vol.path, root)
    image = {"url": url}
    records: list[dict[str, Any]] = []
    for k in masks:
        records.append({"volume": image, "axis": "z", "index": k,
                        "mask": {"volume": {"url": url, "array": "labels/organelles"}, "ignore": IGNORE}})
    for kinds, field_ in ((boxes, "boxes"), (points, "points")):
        for k in kinds:
            weak = derive_weak_labels(vol.annotated[k], SYNTH_CLASSES, IGNORE)
            items = weak.boxes if field_ == "boxes" else weak.points
            pick = sorted(rng.choice(len(items), size=min(per_section, len(items)), replace=False).tolist())
            records.append({"volume": image, "axis": "z", "index": k,
                            field_: [items[i].to_json() for i in pick]})
    records.append({"volume": image, "sections": {"axis": "z"}})
    out = root / name
    out.write_text(json.dumps({"format": "dspseg/2", "classes": list(SYNTH_CLASSES), "ignore_index": IGNORE,
                               "images": records}, indent=1))
    return out


def annotated_sections(depth: int, masks: int, boxes: int = 2, points: int = 2) -> tuple[list[int], list[int], list[int]]:
    """Distinct section indices for ``masks`` masked, ``boxes`` boxed and ``points`` clicked sections,
    spread evenly over ``[0, depth)`` and interleaved (mask, box, point, mask, ...)."""
    n = masks + boxes + points
    if depth < n:
        raise ValueError(f"a volume of {depth} sections cannot hold {n} annotated ones")
    picks = [int((i + 0.5) * depth / n) for i in range(n)]
    kinds = (["mask"] * masks + ["box"] * boxes + ["point"] * points)
    order = sorted(range(n), key=lambda i: (i % max(masks, boxes, points), kinds[i]))
    out: dict[str, list[int]] = {"mask": [], "box": [], "point": []}
    for k, i in zip(picks, order):
        out[kinds[i]].append(k)
    return sorted(out["mask"]), sorted(out["box"]), sorted(out["point"])


def section_datasets(work: Path, n_masks: int = 4) -> tuple[Path, Path]:
    """``work/step-files`` (2D TIFF records) and ``work/step-volume`` (volume records) of the same sections of
    :func:`base_volume`: ``n_masks`` masked, 2 boxed and 2 clicked sections (16 boxes / points each, from the
    section's labels) first, then every other section unlabeled, in the same order in both. Written once."""
    import zarr

    from dspseg.data.io import write_image, write_mask
    from dspseg.data.synthetic import SYNTH_CLASSES
    from dspseg.data.weak import derive_weak_labels

    base = base_volume(work)
    files, volume = work / "step-files", work / "step-volume"
    if (files / "dataset.json").exists() and (volume / "dataset.json").exists():
        return files, volume
    for d in (files, volume):
        if d.exists():
            shutil.rmtree(d)
    root = zarr.open_group(str(base), mode="r")
    image, labels = np.asarray(root["s0"][:]), np.asarray(root["labels/organelles/s0"][:])
    depth = image.shape[0]
    masks, boxes, points = annotated_sections(depth, n_masks)
    rng = np.random.default_rng(0)

    def weak(k: int, field: str) -> list[dict]:
        w = derive_weak_labels(labels[k], SYNTH_CLASSES, IGNORE)
        items = w.boxes if field == "boxes" else w.points
        pick = sorted(rng.choice(len(items), size=min(16, len(items)), replace=False).tolist())
        return [items[i].to_json() for i in pick]

    annotated = [(k, "mask", None) for k in masks] + [(k, "boxes", weak(k, "boxes")) for k in boxes] \
        + [(k, "points", weak(k, "points")) for k in points]
    named = {k for k, _, _ in annotated}
    file_records, volume_records = [], []
    (files / "images").mkdir(parents=True)
    (files / "masks").mkdir()
    shutil.copytree(base, volume / "cell.ome.zarr")
    ref = {"url": "cell.ome.zarr"}
    for k, kind, items in annotated:
        write_image(files / "images" / f"z{k:03d}.tif", image[k])
        rec: dict = {"file": f"images/z{k:03d}.tif"}
        vrec: dict = {"volume": ref, "axis": "z", "index": k}
        if kind == "mask":
            write_mask(files / "masks" / f"z{k:03d}.tif", labels[k])
            rec["mask"] = f"masks/z{k:03d}.tif"
            vrec["mask"] = {"volume": {"url": "cell.ome.zarr", "array": "labels/organelles"}}
        else:
            rec[kind] = vrec[kind] = items
        file_records.append(rec)
        volume_records.append(vrec)
    for k in range(depth):
        if k not in named:
            write_image(files / "images" / f"z{k:03d}.tif", image[k])
            file_records.append({"file": f"images/z{k:03d}.tif"})
    volume_records.append({"volume": ref, "sections": {"axis": "z"}})
    head = {"classes": list(SYNTH_CLASSES), "ignore_index": IGNORE}
    (files / "dataset.json").write_text(json.dumps({"format": "dspseg/1", **head, "images": file_records}, indent=1))
    (volume / "dataset.json").write_text(json.dumps({"format": "dspseg/2", **head, "images": volume_records}, indent=1))
    return files, volume


# ------------------------------------------------------------------------------------ measuring
@dataclass
class TreeRun:
    """What :class:`TreeRSS` measured for one command."""

    returncode: int
    seconds: float
    peak_tree: int  # bytes: the largest sum of RSS over the process tree at one sample
    peak_main: int  # bytes: the command's own largest sampled RSS
    hwm_main: int  # bytes: the command's own VmHWM (/proc: its exact peak RSS, between samples too)
    hwm_tree: int  # bytes: the largest sum, at one sample, of the live processes' VmHWM (an upper bound)
    max_procs: int
    ru_maxrss: int  # bytes: wait4's ru_maxrss (largest single process, reaped descendants included)
    load: list[float] = field(default_factory=list)  # 1-minute load averages sampled while it ran
    samples: int = 0

    def load_text(self) -> str:
        return f"{min(self.load):.1f}-{max(self.load):.1f}" if self.load else "-"


class TreeRSS:
    """Run ``cmd`` (a list), writing its output to ``log``, and sample the tree's RSS (module docstring)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval

    def run(self, cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: float | None = None) -> TreeRun:
        import psutil

        with open(log, "w") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
            state = {"peak_tree": 0, "peak_main": 0, "hwm_tree": 0, "procs": 0, "n": 0}
            hwm: dict[int, int] = {}
            load: list[float] = []
            stop = threading.Event()

            def sample() -> None:
                top = psutil.Process(proc.pid)
                last_load = 0.0
                while not stop.is_set():
                    try:
                        procs = [top, *top.children(recursive=True)]
                    except psutil.Error:
                        break
                    total = 0
                    for p in procs:
                        try:
                            rss = p.memory_info().rss
                        except psutil.Error:
                            continue
                        total += rss
                        hwm[p.pid] = max(hwm.get(p.pid, 0), _vm_hwm(p.pid))
                        if p.pid == proc.pid:
                            state["peak_main"] = max(state["peak_main"], rss)
                    state["peak_tree"] = max(state["peak_tree"], total)
                    state["hwm_tree"] = max(state["hwm_tree"], sum(hwm.get(p.pid, 0) for p in procs))
                    state["procs"] = max(state["procs"], len(procs))
                    state["n"] += 1
                    if time.monotonic() - last_load >= 5.0:
                        load.append(os.getloadavg()[0])
                        last_load = time.monotonic()
                    stop.wait(self.interval)

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    proc.kill()
                time.sleep(0.05)
            proc.returncode = os.waitstatus_to_exitcode(status)
            seconds = time.perf_counter() - t0
            stop.set()
            thread.join()
        return TreeRun(proc.returncode, seconds, state["peak_tree"], state["peak_main"], hwm.get(proc.pid, 0),
                       state["hwm_tree"], state["procs"], usage.ru_maxrss * 1024, load, state["n"])


def _vm_hwm(pid: int) -> int:
    """A process's peak resident set size (``VmHWM`` of ``/proc/PID/status``) in bytes; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tail(log: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log (for a failed command's message)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


def print_table(header: list[str], rows: list[list[Any]]) -> None:
    """A markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")
    print(flush=True)


def gb(n: float) -> str:
    return f"{n / GiB:.2f}"
