"""Issue 17: whole-volume prediction — peak memory flat in the volume size, throughput against the
bare model, and Ray against one process.

    python benchmarks/volumes_predict.py --sizes 16,64,256 --widths 4,8 --rounds 3 --ray
    python benchmarks/volumes_predict.py --sizes 64,256,1024 --skip-throughput      # memory past the chunk cache

Cheap models (``dspseg train`` on the base volume's sections: ``--method basic --width W --steps 20``)
predict OME-Zarr volumes of ``size × 1024 × 1024`` uint8 voxels (``size`` MiB; chunks 16 × 256 × 256,
:func:`volumes.write_tiled_volume`) with the tool's defaults (``--block 16,256,256``, tile 256,
overlap 0.25, batch 4, pyramid down to 16 voxels):

* **memory** — ``dspseg predict RUN VOL --out OUT.ome.zarr`` (``--width``'s model) as a subprocess with one torch
  thread (``OMP_NUM_THREADS=1``), its process tree sampled by :class:`volumes.TreeRSS`. The chunk
  cache (256 MiB of decoded chunks by default) fills until the volume has that much: past that
  size the memory cannot grow with the volume, below it the cache's share does (column "chunk cache
  can fill").
* **throughput** — in this process, one torch thread, on the ``--throughput`` volume, for each of
  ``--widths``: the tool's whole pipeline (:func:`dspseg.engine.predict_volume.predict_volume`: read,
  normalise, tile, blend, argmax, write, pyramid, markers) against ``model(x)`` alone in one loop over
  the tiles a section-by-section prediction needs (:func:`dspseg.engine.tiling.tile_starts` on every
  section, read and normalised beforehand, batches of 4, eval mode, no_grad), interleaved over
  ``--rounds`` after an untimed warm-up of both (imports, first calls); medians of wall and of CPU
  seconds (``time.process_time``: every thread of the process, zarr's too — on a machine shared by
  many processes the CPU time is the steadier measure). The pipeline's model calls are counted: the
  tiles it ran, against the section-by-section tiles.
* **Ray** — with ``--ray`` (when ``dspseg predict`` has ``--backend``): the same volume with
  ``--backend ray --workers 2`` (a local Ray instance) compared voxel for voxel, every pyramid level,
  with the one-process output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

import volumes as V
from volumes import MiB

VENV = Path(sys.executable).parent
SIDE = 1024
BLOCK = (16, 256, 256)
TILE, OVERLAP, BATCH = 256, 0.25, 4


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run(work: Path, width: int) -> Path:
    """A run folder of a ``width`` model trained briefly on the base volume's sections (written once)."""
    run = work / f"predict-run-w{width}"
    if (run / "checkpoints" / "best.pt").exists():
        return run
    if run.exists():
        shutil.rmtree(run)
    _, data = V.section_datasets(work)
    cmd = [str(VENV / "dspseg"), "train", str(data), "--out", str(run), "--method", "basic", "--width", str(width),
           "--steps", "20", "--batch-size", "4", "--threads", "1", "--val-every", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"training the model failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return run


def _bare_tiles(volume: Path, run: Path) -> list:
    """Every tile a section-by-section prediction of ``volume`` runs, read and normalised (tensors)."""
    import torch

    from dspseg.data.intensity import to_unit
    from dspseg.data.volumes import open_volume
    from dspseg.engine.checkpoint import load_run
    from dspseg.engine.tiling import tile_starts

    vol = open_volume({"url": str(volume)})
    norm = load_run(run, "best").normalisation
    tiles = []
    for z in range(vol.size("z")):
        x = torch.from_numpy(norm.apply(to_unit(vol.section("z", z))[None]))
        for y0 in tile_starts(x.shape[1], TILE, OVERLAP):
            for x0 in tile_starts(x.shape[2], TILE, OVERLAP):
                tiles.append(x[:, y0:y0 + TILE, x0:x0 + TILE].clone())
    return tiles


def _time_bare(model, tiles: list) -> tuple[float, float]:
    """Wall and CPU seconds of ``model`` on ``tiles`` in batches of 4 (eval, no_grad)."""
    import torch

    model.eval()
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i in range(0, len(tiles), BATCH):
            model(torch.stack(tiles[i:i + BATCH]))
    return time.perf_counter() - t0, time.process_time() - c0


def _time_pipeline(run: Path, volume: Path, out: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds (every thread of this process: zarr's included) of :func:`predict_volume`
    into a new ``out``, and the tiles its model ran."""
    from rich.console import Console

    import dspseg.engine.checkpoint as ckpt
    from dspseg.engine.predict_volume import predict_volume

    if out.exists():
        shutil.rmtree(out)
    counted = {"tiles": 0}
    original = ckpt.load_run

    def counting(*a, **k):
        loaded = original(*a, **k)
        loaded.model.register_forward_hook(lambda m, inp, o: counted.__setitem__("tiles", counted["tiles"] + len(inp[0])))
        return loaded

    ckpt.load_run = counting
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        predict_volume(run, str(volume), out, console=Console(quiet=True))
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        ckpt.load_run = original
    return seconds, cpu, counted["tiles"]


def _same_voxels(a: Path, b: Path) -> tuple[bool, int, int]:
    """Whether every label level of the two outputs is equal; (equal, levels, voxels of level 0)."""
    import zarr

    la, lb = (zarr.open_group(str(p), mode="r")["labels/segmentation"] for p in (a, b))
    keys = sorted(k for k in la.array_keys())
    equal = keys == sorted(lb.array_keys()) and all(np.array_equal(la[k][:], lb[k][:]) for k in keys)
    return equal, len(keys), int(np.prod(la["s0"].shape))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/dspseg-volume-bench", help="folder for volumes, runs and outputs")
    p.add_argument("--sizes", default="16,64,256", help="MiB of uint8 voxels per volume (multiples of 16)")
    p.add_argument("--width", type=int, default=4, help="U-Net width of the model predicting the memory volumes")
    p.add_argument("--widths", default="4,8", help="U-Net widths of the throughput comparison")
    p.add_argument("--throughput", type=int, default=16, help="MiB of the volume timed in this process (one of --sizes)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput comparison")
    p.add_argument("--ray", action="store_true", help="also compare --backend ray --workers 2 with one process")
    p.add_argument("--skip-memory", action="store_true", help="only the throughput (and Ray) parts")
    p.add_argument("--skip-throughput", action="store_true", help="only the memory part")
    p.add_argument("--keep", action="store_true", help="keep the volumes and outputs")
    p.add_argument("--resume", action="store_true",
                   help="memory part only: go on with an earlier --keep run in --work (its model, volumes and "
                   "part-written outputs are kept); dspseg predict keeps the blocks it finished, so the peak "
                   "is that of the rest of the job")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if (args.throughput not in sizes and not args.skip_throughput) or any(s % 16 for s in sizes):
        p.error("--sizes must be multiples of 16 and include --throughput")
    if args.resume and not (args.skip_throughput and not args.skip_memory):
        p.error("--resume goes on with the memory part: give it with --skip-throughput")
    import torch

    from dspseg.data.volumes import shared_cache

    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; torch threads 1", flush=True)
    run = _run(work, args.width)
    base = V.read_base(V.base_volume(work))
    vols = {}
    for size in sizes:
        path = work / f"predict-{size}m.ome.zarr"
        if args.resume and (path / "zarr.json").is_file():  # the earlier run's volume (only its path is used)
            vols[size] = types.SimpleNamespace(path=path)
        else:
            vols[size] = V.write_tiled_volume(path, (size, SIDE, SIDE), base, [], seed=size)
    outs = []
    if not args.skip_memory:
        rows = []
        sampler = V.TreeRSS()
        for size in sizes:
            out = work / f"pred-{size}m.ome.zarr"
            if out.exists() and not args.resume:
                shutil.rmtree(out)
            outs.append(out)
            log = work / f"predict-{size}m{'-resume' if args.resume else ''}.log"
            res = sampler.run([str(VENV / "dspseg"), "predict", str(run), str(vols[size].path), "--out", str(out)],
                              log, env=_env())
            if res.returncode != 0:
                sys.exit(f"dspseg predict on {size} MiB failed ({res.returncode}):\n{V.tail(log)}")
            blocks = V.tail(log, 1)
            cached = min(size * MiB, shared_cache().max_bytes) / MiB
            rows.append([size, f"{size}×{SIDE}×{SIDE}", f"{cached:.0f}", V.gb(res.peak_tree), V.gb(res.hwm_main), V.gb(res.hwm_tree),
                         V.gb(res.ru_maxrss), f"{res.seconds:.0f}", f"{res.seconds / size:.2f}", res.load_text(), blocks])
            print(f"{size} MiB: peak tree {V.gb(res.peak_tree)} GiB, main VmHWM {V.gb(res.hwm_main)} GiB, "
                  f"{res.seconds:.0f} s, load {res.load_text()}", flush=True)
        low = min(float(r[5]) for r in rows)
        for r in rows:
            r.insert(7, f"{float(r[5]) / low:.2f}")
        print(f"\npeak RSS of OMP_NUM_THREADS=1 dspseg predict RUN VOL --out OUT.ome.zarr (width {args.width}; GiB = 2^30 bytes):\n")
        V.print_table(["MiB", "z×y×x", "chunk cache can fill MiB", "sampled tree peak", "main VmHWM", "tree VmHWM sum", "ru_maxrss", "tree vs smallest",
                       "wall s", "s / MiB", "load (1 min)", "last line"], rows)
    if args.skip_throughput:
        _cleanup(args, work, vols, outs)
        return
    # throughput
    from dspseg.engine.checkpoint import load_run

    vol = vols[args.throughput].path
    warm = V.write_tiled_volume(work / "warm.ome.zarr", (16, 256, 256), base, [], seed=1).path
    tiles = _bare_tiles(vol, run)
    rows = []
    for width in [int(w) for w in args.widths.split(",")]:
        wrun = _run(work, width)
        model = load_run(wrun, "best").model
        _time_pipeline(wrun, warm, work / "warm-out.ome.zarr")  # imports and first calls, not timed
        _time_bare(model, tiles[:8])
        bare, pipe, ran = [], [], 0
        for r in range(args.rounds):
            bare.append(_time_bare(model, tiles))
            seconds, cpu, ran = _time_pipeline(wrun, vol, work / f"pipe-w{width}-{r}.ome.zarr")
            pipe.append((seconds, cpu))
            print(f"width {width}, round {r + 1}: bare {bare[-1][0]:.1f} s ({bare[-1][1]:.1f} s CPU), pipeline "
                  f"{seconds:.1f} s ({cpu:.1f} s CPU; {ran} tiles), load {os.getloadavg()[0]:.1f}", flush=True)
        tb, cb = (statistics.median(b[k] for b in bare) for k in (0, 1))
        tp, cp = (statistics.median(q[k] for q in pipe) for k in (0, 1))
        ratios = [b[1] / q[1] for b, q in zip(bare, pipe)]
        rows.append([width, len(tiles), ran, f"{tb:.1f} / {cb:.1f}", f"{tp:.1f} / {cp:.1f}", f"{tb / tp:.2f}",
                     f"{cb / cp:.2f}", " ".join(f"{v:.2f}" for v in ratios), f"{args.throughput / cp:.2f}"])
    print(f"\nthroughput on {args.throughput}×{SIDE}×{SIDE} voxels, one torch thread, medians of {args.rounds} interleaved "
          f"rounds after an untimed warm-up (load {os.getloadavg()[0]:.1f} at the end):\n")
    V.print_table(["width", "section-by-section tiles", "tiles the pipeline ran", "bare model s (wall / CPU)",
                   "predict_volume s (wall / CPU)", "pipeline / bare (wall)", "pipeline / bare (CPU)",
                   "per round (CPU)", "pipeline MiB per CPU s"], rows)
    print("target: pipeline / bare ≥ 0.8 (the same tiles, the whole pipeline against model(x) alone)")
    if args.ray:
        help_text = subprocess.run([str(VENV / "dspseg"), "predict", "--help"], capture_output=True, text=True).stdout
        if "--backend" not in help_text:
            print("\nRay: dspseg predict has no --backend here; not compared")
        else:
            ray_out, one = work / "pred-ray.ome.zarr", work / f"pipe-w{args.widths.split(',')[-1]}-0.ome.zarr"
            if ray_out.exists():
                shutil.rmtree(ray_out)
            t0 = time.perf_counter()
            log = work / "predict-ray.log"
            with open(log, "w") as f:
                rc = subprocess.run([str(VENV / "dspseg"), "predict", str(wrun), str(vol), "--out", str(ray_out),
                                     "--backend", "ray", "--workers", "2"], stdout=f, stderr=subprocess.STDOUT,
                                    env=_env()).returncode
            seconds = time.perf_counter() - t0
            if rc != 0:
                print(f"\nRay: dspseg predict --backend ray failed ({rc}):\n{V.tail(log)}")
            else:
                equal, levels, voxels = _same_voxels(ray_out, one)
                print(f"\nRay (--backend ray --workers 2, local instance) against one process on the {args.throughput} MiB "
                      f"volume: {levels} levels, {voxels} voxels at s0: {'identical' if equal else 'DIFFERENT'} "
                      f"({seconds:.0f} s wall, Ray start included)")
    _cleanup(args, work, vols, outs)


def _cleanup(args: argparse.Namespace, work: Path, vols: dict, outs: list[Path]) -> None:
    """Delete the volumes and outputs (unless ``--keep``)."""
    if args.keep:
        return
    for v in vols.values():
        shutil.rmtree(v.path)
    for d in [*outs, *work.glob("pipe-w*.ome.zarr"), work / "pred-ray.ome.zarr", work / "warm.ome.zarr",
              work / "warm-out.ome.zarr"]:
        shutil.rmtree(d, ignore_errors=True)

if __name__ == "__main__":
    main()
