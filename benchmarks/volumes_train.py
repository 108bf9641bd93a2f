"""Issue 17: training on volumes — peak memory flat in the dataset size, and the lazy step against
the in-memory step.

    python benchmarks/volumes_train.py rss --sizes 1,4,32 --steps 30            # peak RSS of dspseg train
    python benchmarks/volumes_train.py step --methods basic,dsp --steps 20      # lazy vs in-memory step

**rss.** For each size (GiB of uint8 voxels) an OME-Zarr volume of ``size·64 × 4096 × 4096`` voxels
is written (:func:`volumes.write_tiled_volume`: chunks 16 × 256 × 256, zstd; the compressible
synthetic texture unless ``--texture raw``) with a label volume on the annotated sections, and a
``dataset.json`` of 3 masked sections, 2 boxed and 2 clicked ones (64 boxes / points each) and one
``sections`` range of every other section (unlabeled; no split, so every section trains). Then
``dspseg train DATA --method dsp --width 16 -b 8 --steps N --threads 1`` (crops 128², no
validation) runs as a subprocess while :class:`volumes.TreeRSS` samples the RSS of its whole process
tree every 50 ms (with ``--workers`` other than ``default``, data-loader worker processes are in the
tree and in the sum). ``dsp`` learns from every annotation kind, so its batches draw crops from the
unlabeled sections of the whole volume, not only the annotated ones. Sizes run in interleaved
rounds (``--rounds``; each keeps its highest peak). The volumes are deleted afterwards (``--keep``
keeps them); the disk must hold the largest with 10 GB to spare.

**step.** The same 64 sections of a ``dspseg synth --volume`` volume (512², its own chunks
16 × 64 × 64, zstd) as two datasets: 2D TIFF records (decoded into memory when the run starts) and
volume records (read per crop through the chunk cache), with the same masks, boxes, points and
unlabeled sections in the same order. Two trainers with the same config and seed are set up in one
process (threads 1) and their training steps — data loading (0 workers, in the step) and the
optimiser step included — are timed alternately (A B, B A, ...); the table gives the median of each
and the median of the pairwise ratios. The crops are checked to be the same windows (targets equal).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import volumes as V

VENV = Path(sys.executable).parent


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _seconds_per_step(run: Path) -> float | None:
    try:
        with open(run / "metrics.csv") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    if len(rows) < 2:
        return None
    t0, t1 = float(rows[0]["elapsed_s"]), float(rows[-1]["elapsed_s"])
    return (t1 - t0) / (int(rows[-1]["step"]) - int(rows[0]["step"]))


def rss(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.sizes.split(",")]
    base = V.read_base(V.base_volume(work), args.texture)
    datasets: dict[float, tuple[Path, V.TiledVolume, int]] = {}
    data_rows = []
    for size in sizes:
        depth = int(round(size * 64))
        shape = (depth, 4096, 4096)
        need = int(np.prod(shape)) * (0.35 if args.texture == "compressible" else 1.05)
        if _free_bytes(work) < need + 10e9:
            sys.exit(f"{work} has {_free_bytes(work) / 1e9:.0f} GB free; the {size:g} GiB volume needs about "
                     f"{need / 1e9:.0f} GB and 10 GB are kept free for others. Free space or pick smaller sizes.")
        root = work / f"train-{size:g}g"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        masks, boxes, points = V.annotated_sections(depth, 3)
        vol = V.write_tiled_volume(root / "cell.ome.zarr", shape, base, masks + boxes + points, seed=int(size * 100))
        V.volume_dataset(root, vol, masks, boxes, points)
        datasets[size] = (root, vol, depth)
        data_rows.append([f"{size:g}", "×".join(map(str, shape)), "×".join(map(str, vol.chunks)),
                          f"{vol.disk_bytes / 1e9:.1f}", f"{vol.disk_bytes / vol.nbytes:.2f}", f"{vol.seconds:.0f}",
                          f"{len(masks)} / {len(boxes)} / {len(points)} / {depth - 7}"])
        print(f"wrote {root} in {vol.seconds:.0f} s; disk free {_free_bytes(work) / 1e9:.0f} GB", flush=True)
    print(f"\nvolumes (texture: {args.texture}; zstd level 3):\n")
    V.print_table(["GiB (uint8 voxels)", "shape z×y×x", "chunks", "on disk GB", "disk / voxels", "write s",
                   "sections masked / boxed / clicked / unlabeled"], data_rows)
    results: dict[tuple[float, str, str], V.TreeRun] = {}
    speeds: dict[tuple[float, str, str], float | None] = {}
    settings = [(m, w) for m in args.methods.split(",") for w in args.workers.split(",")]
    sampler = V.TreeRSS()
    for r in range(args.rounds):
        order = sizes if r % 2 == 0 else sizes[::-1]
        for method, w in settings:
            for size in order:
                root = datasets[size][0]
                name = f"{size:g}g-{method}-{w}-{r}"
                run, log = work / f"run-{name}", work / f"train-{name}.log"
                if run.exists():
                    shutil.rmtree(run)
                cmd = [str(VENV / "dspseg"), "train", str(root), "--out", str(run), "--method", method,
                       "--width", "16", "--batch-size", "8", "--steps", str(args.steps), "--threads", "1",
                       "--val-every", "0", "--set", "crop_size=128", "--set", "log_every=5"]
                if w != "default":
                    cmd += ["--set", f"num_workers={w}"]
                res = sampler.run(cmd, log)
                if res.returncode != 0:
                    sys.exit(f"dspseg train on {size:g} GiB failed ({res.returncode}):\n{V.tail(log)}")
                key = (size, method, w)
                if key not in results or res.hwm_tree > results[key].hwm_tree:
                    results[key] = res
                speeds[key] = _seconds_per_step(run)
                print(f"round {r + 1}: {size:g} GiB, {method}, workers {w}: peak tree {V.gb(res.peak_tree)} GiB, "
                      f"main VmHWM {V.gb(res.hwm_main)} GiB, {res.seconds:.0f} s, load {res.load_text()}", flush=True)
                shutil.rmtree(run)
    print(f"\npeak RSS of dspseg train DATA --method M --width 16 -b 8 --steps {args.steps} --threads 1 "
          f"--val-every 0 --set crop_size=128 (GiB = 2^30 bytes; {args.rounds} round(s), the highest kept):\n")
    rows = []
    for method, w in settings:
        low = min(results[(s, method, w)].hwm_tree for s in sizes)
        for size in sizes:
            res, sps = results[(size, method, w)], speeds[(size, method, w)]
            rows.append([method, f"{size:g}", w if w != "default" else "default (0 on CPU)", res.max_procs,
                         V.gb(res.peak_tree), V.gb(res.hwm_main), V.gb(res.hwm_tree), V.gb(res.ru_maxrss),
                         f"{res.hwm_tree / low:.2f}", "-" if sps is None else f"{sps:.2f}",
                         f"{res.seconds:.0f}", res.load_text()])
    V.print_table(["method", "volume GiB", "loader workers", "processes", "sampled tree peak", "main VmHWM",
                   "tree VmHWM sum", "ru_maxrss", "tree vs smallest", "s / step", "wall s", "load (1 min)"], rows)
    for method, w in settings:
        peaks = [results[(s, method, w)].hwm_tree for s in sizes]
        print(f"{method}, workers {w}: largest / smallest tree peak {max(peaks) / min(peaks):.2f} (target ≤ 1.2); "
              f"largest {max(peaks) / 1e9:.2f} GB (target < 3 GB)")
    if not args.keep:
        for root, _, _ in datasets.values():
            shutil.rmtree(root)
        print(f"deleted the volumes under {work}")


# ------------------------------------------------------------------------------------ step
def step(args: argparse.Namespace) -> None:
    import torch
    from rich.console import Console

    from dspseg.data.volumes import shared_cache
    from dspseg.engine.config import TrainConfig
    from dspseg.engine.trainer import Trainer

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files, volume = V.section_datasets(work)
    rows = []
    for method in args.methods.split(","):
        cfg = TrainConfig(method=method, steps=10**6, batch_size=8, crop_size=128, width=16, threads=1, seed=0,
                          val_every=0)
        trainers = {}
        for name, data in (("in-memory", files), ("lazy", volume)):
            out = work / f"step-run-{method}-{name}"
            if out.exists():
                shutil.rmtree(out)
            t = Trainer(data, out, cfg, console=Console(quiet=True))
            t0 = time.perf_counter()
            t.setup()
            t.model.train()
            trainers[name] = (t, iter(t.loader()), time.perf_counter() - t0)
        a, b = trainers["in-memory"][0], trainers["lazy"][0]
        same = all(np.array_equal(a.train_set[(i, (0, 0, i))]["target"].numpy(), b.train_set[(i, (0, 0, i))]["target"].numpy())
                   for i in range(len(a.train_set)))
        if len(a.train_set) != len(b.train_set):
            sys.exit(f"the two datasets differ: {len(a.train_set)} and {len(b.train_set)} sections")
        times: dict[str, list[float]] = {"in-memory": [], "lazy": []}
        cache = shared_cache()
        for i in range(args.warmup + args.steps):
            order = ["in-memory", "lazy"] if i % 2 == 0 else ["lazy", "in-memory"]
            for name in order:
                t, batches, _ = trainers[name]
                t0 = time.perf_counter()
                t.train_step(batches)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - t0)
            if i == args.warmup - 1:
                hits0, misses0 = cache.hits, cache.misses
        ratios = [lz / mem for lz, mem in zip(times["lazy"], times["in-memory"])]
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append([method, len(a.train_set), f"{trainers['in-memory'][2]:.1f} / {trainers['lazy'][2]:.1f}",
                     f"{med['in-memory']:.3f}", f"{med['lazy']:.3f}", f"{med['lazy'] / med['in-memory']:.3f}",
                     f"{statistics.median(ratios):.3f}", "yes" if same else "NO",
                     f"{cache.hits - hits0} / {cache.misses - misses0}", f"{os.getloadavg()[0]:.1f}"])
        print(f"{method}: in-memory {med['in-memory']:.3f} s, lazy {med['lazy']:.3f} s per step "
              f"({args.steps} pairs), load {os.getloadavg()[0]:.1f}", flush=True)
        for t, _, _ in trainers.values():
            shutil.rmtree(t.out, ignore_errors=True)
    print(f"\ntraining step (width 16, batch 8, crops 128², threads {torch.get_num_threads()}, 0 workers), "
          f"{args.steps} interleaved pairs after {args.warmup} warm-up steps:\n")
    V.print_table(["method", "sections", "setup s (mem / lazy)", "in-memory s/step (median)", "lazy s/step (median)",
                   "ratio of medians", "median of pair ratios", "same crops", "chunk cache hits / misses (lazy)",
                   "load (1 min) at end"], rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/dspseg-volume-bench", help="folder for volumes, datasets and runs")
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("rss", help="peak RSS of dspseg train over volume sizes")
    r.add_argument("--sizes", default="1,4,32", help="GiB of uint8 voxels per volume (multiples of 1/64)")
    r.add_argument("--steps", type=int, default=30)
    r.add_argument("--methods", default="basic,dsp", help="basic samples the masked sections only; dsp every section")
    r.add_argument("--workers", default="default", help="data-loader workers per run, e.g. default,2")
    r.add_argument("--rounds", type=int, default=1)
    r.add_argument("--texture", choices=["compressible", "raw"], default="compressible")
    r.add_argument("--keep", action="store_true", help="keep the volumes")
    s = sub.add_parser("step", help="lazy vs in-memory training step")
    s.add_argument("--methods", default="basic,dsp")
    s.add_argument("--steps", type=int, default=20, help="timed pairs per method")
    s.add_argument("--warmup", type=int, default=3)
    args = p.parse_args(argv)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    rss(args) if args.what == "rss" else step(args)


if __name__ == "__main__":
    main()
