"""Throughput of the U-Net: training-step and inference images/s, and the fraction of the machine's
float32 matmul peak that they reach.

    python benchmarks/throughput.py --width 16 --size 128 --batch 8 --steps 5 --threads 2
    python benchmarks/throughput.py --width 32 --compare --rounds 3   # channels_last × threads grid

What is measured (random data pre-generated in memory, so nothing but compute is timed):

* ``bare train step`` — a plain PyTorch loop: U-Net + linear head, AdamW (lr 6e-5, wd 0.01),
  cross-entropy with ``ignore_index`` (10 % of the pixels ignored), backward, optimiser step.
* ``inference`` — forward in eval mode under ``torch.inference_mode``.
* ``peak`` — float32 ``torch.mm`` of n × n matrices on the same thread count; FLOP/s = 2 n³ / t for
  the fastest product of a 2 s loop.

FLOPs per step are counted once with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and
convolutions, forward + backward; elementwise ops, BatchNorm and the optimiser are not counted), so
``% peak = FLOPs per step / seconds per step / peak FLOP/s``, given for the median step and for the
fastest one (other processes on a shared machine only slow steps down, so "best" estimates what
the code can do and the median what it did; compare rows by the same column). On a busy machine use
``--rounds N``: the settings are measured N times interleaved and each row keeps its fastest round,
the peak its highest.

* ``engine <method>`` (``--engine basic,dsp``) — the real trainer (``dspseg train``) on a synthetic
  dataset of the same crop size: data loading, loss checks and logging included. Its FLOPs are
  the bare step's, so its % peak compares directly with the bare loop (issue 3: the ``basic`` step
  must stay within 10 % of it; issue 4: ``dsp`` ≤ 2.5× ``basic``).

Other steps plug in through :func:`bench`: pass any ``step_fn(batch)`` (e.g. the engine's training
step on an equal batch), count its FLOPs with :func:`count_flops` and add a :func:`row` — see
:func:`run_config` for the pattern.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from dspseg.models import build_model

IGNORE = 255


def _images_in(batch: Any) -> int:
    """Number of images in a batch given as a tensor, a tuple/list (first item), a dict or a
    :class:`dspseg.data.batch.Batch` (its ``image``)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0])
    if isinstance(getattr(batch, "image", None), Tensor):
        return int(batch.image.shape[0])
    if isinstance(batch, (tuple, list)):
        return _images_in(batch[0])
    if isinstance(batch, dict):
        return _images_in(next(v for v in batch.values() if isinstance(v, Tensor)))
    raise TypeError(f"bench: cannot tell the number of images in a {type(batch).__name__}; pass images=")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench(
    step_fn: Callable[[Any], Any], batch: Any, steps: int, warmup: int = 2, images: int | None = None
) -> dict[str, float]:
    """Time ``steps`` calls of ``step_fn(batch)`` one by one, after ``warmup`` untimed ones.

    Returns ``{"seconds_per_step", "images_per_s"}`` from the median step and
    ``{"best_seconds_per_step", "best_images_per_s"}`` from the fastest one (on a shared machine
    other processes only ever slow a step down, so the fastest is the best estimate of capacity),
    plus ``"steps"`` and ``"images"``.
    """
    n_images = _images_in(batch) if images is None else images
    for _ in range(warmup):
        step_fn(batch)
    _sync()
    times = []
    for _ in range(max(steps, 1)):
        start = time.perf_counter()
        step_fn(batch)
        _sync()
        times.append(time.perf_counter() - start)
    median, best = statistics.median(times), min(times)
    return {
        "seconds_per_step": median,
        "images_per_s": n_images / median,
        "best_seconds_per_step": best,
        "best_images_per_s": n_images / best,
        "steps": len(times),
        "images": n_images,
    }


def count_flops(step_fn: Callable[[Any], Any], batch: Any) -> int:
    """FLOPs of one call of ``step_fn(batch)`` (matmul/conv, forward + backward)."""
    with FlopCounterMode(display=False) as counter:
        step_fn(batch)
    return int(counter.get_total_flops())


def matmul_peak(n: int = 2048, seconds: float = 2.0) -> float:
    """float32 FLOP/s of ``torch.mm`` on n × n matrices at the current thread count: 2 n³ divided by
    the fastest of the products run during ``seconds`` (at least 3)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(times)


def make_batch(
    batch: int, channels: int, size: int, n_classes: int, channels_last: bool, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Random images (B, Cin, S, S) and targets (B, S, S) with 10 % ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    y = torch.randint(0, n_classes, (batch, size, size), generator=g)
    y[torch.rand(batch, size, size, generator=g) < 0.1] = IGNORE
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def bare_train_step(model: torch.nn.Module) -> Callable[[tuple[Tensor, Tensor]], float]:
    """A bare training step: forward, cross-entropy (ignore_index), backward, AdamW step."""
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01)
    model.train()

    def step(batch: tuple[Tensor, Tensor]) -> float:
        x, y = batch
        loss = F.cross_entropy(model(x)["logits"], y, ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def inference_step(model: torch.nn.Module) -> Callable[[tuple[Tensor, Tensor]], Tensor]:
    """Forward only, eval mode, inference_mode; returns the hard prediction."""

    def step(batch: tuple[Tensor, Tensor]) -> Tensor:
        model.eval()
        with torch.inference_mode():
            return model(batch[0])["logits"].argmax(1)

    return step


def row(name: str, result: dict[str, float], flops: int, peak: float) -> dict[str, Any]:
    """One table row: median and best images/s, GFLOP/step, and % of the matmul peak reached by the
    median and by the best step."""
    return {
        "name": name,
        "img/s": result["images_per_s"],
        "best img/s": result["best_images_per_s"],
        "GFLOP/step": flops / 1e9,
        "% peak": 100 * flops / result["seconds_per_step"] / peak,
        "best % peak": 100 * flops / result["best_seconds_per_step"] / peak,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = list(rows[0])
    widths = [max(len(c), *(len(_fmt(r[c])) for r in rows)) for c in cols]
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cols, widths))))
    for r in rows:
        cells = [_fmt(r[c]) for c in cols]
        print("  ".join(s.ljust(w) if i == 0 else s.rjust(w) for i, (s, w) in enumerate(zip(cells, widths))))


def _fmt(v: Any) -> str:
    if not isinstance(v, float):
        return str(v)
    return f"{v:.1f}" if abs(v) >= 10 else f"{v:.3g}"


def run_config(
    args: argparse.Namespace, threads: int, channels_last: bool
) -> list[tuple[str, dict[str, float], int]]:
    """(name, bench result, FLOPs per step) of the train step and of inference for one
    (threads, channels_last) setting."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(args.channels, args.classes, width=args.width, head="linear")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batch = make_batch(args.batch, args.channels, args.size, args.classes, channels_last)
    tag = f"[{threads}t{' cl' if channels_last else ''}]"
    out = []
    for name, step in (("bare train step", bare_train_step(model)), ("inference", inference_step(model))):
        flops = count_flops(step, batch)
        out.append((f"{name} {tag}", bench(step, batch, args.steps), flops))
    return out


def engine_train_step(args: argparse.Namespace, threads: int, method: str, workdir: Path) -> dict[str, float]:
    """Seconds per step of the real trainer (``dspseg.engine.trainer.train``), data loading,
    loss checks and logging included, on a synthetic dataset of ``--size``² images (no val split,
    so no validation runs). Measured between the first and the last ``metrics.csv`` row."""
    import csv

    from dspseg.data.synthetic import write_synthetic_dataset
    from dspseg.engine.config import TrainConfig
    from dspseg.engine.trainer import train

    data = workdir / f"data{args.size}"
    if not data.exists():
        write_synthetic_dataset(data, n_images=4 * args.batch, size=args.size, seed=0, groups=1)
    run = workdir / f"run-{method}-{threads}t-{len(list(workdir.iterdir()))}"
    log_every = 2
    steps = 2 * (args.steps // 2 + 3)  # the first row (step 6) ends the warm-up (and dsp's compile)
    cfg = TrainConfig(method=method, steps=steps, batch_size=args.batch, crop_size=args.size, width=args.width,
                      threads=threads, val_every=0, log_every=log_every)
    from rich.console import Console

    train(data, run, cfg, console=Console(quiet=True))
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    rows = rows[2:]
    t0, t1 = float(rows[0]["elapsed_s"]), float(rows[-1]["elapsed_s"])
    n = int(rows[-1]["step"]) - int(rows[0]["step"])
    sec = (t1 - t0) / n
    return {"seconds_per_step": sec, "images_per_s": args.batch / sec, "best_seconds_per_step": sec,
            "best_images_per_s": args.batch / sec, "steps": n, "images": args.batch}


def _faster(a: dict[str, float] | None, b: dict[str, float]) -> dict[str, float]:
    return b if a is None or b["best_seconds_per_step"] < a["best_seconds_per_step"] else a


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=16, help="U-Net width (paper: 64)")
    p.add_argument("--size", type=int, default=128, help="square crop side in pixels")
    p.add_argument("--batch", type=int, default=8, help="images per step")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads")
    p.add_argument("--channels-last", action="store_true", help="model and input in channels_last")
    p.add_argument("--compare", action="store_true", help="run channels_last off/on × threads 1 and --threads")
    p.add_argument("--channels", type=int, default=1, help="input channels")
    p.add_argument("--classes", type=int, default=8, help="number of classes")
    p.add_argument("--rounds", type=int, default=1, help="interleaved repeats; each row keeps its fastest")
    p.add_argument("--peak-n", type=int, default=2048, help="matrix side for the matmul peak")
    p.add_argument("--peak-seconds", type=float, default=2.0, help="duration of the matmul peak loop")
    p.add_argument("--engine", default="", help="also time the real trainer for these methods, e.g. basic,dsp "
                   "(rows 'engine <method>'; FLOPs of the bare step, so %% peak compares with it)")
    args = p.parse_args(argv)
    for name in ("width", "size", "batch", "steps", "threads", "channels", "classes", "rounds", "peak_n"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.peak_seconds <= 0:
        p.error(f"--peak-seconds must be positive, got {args.peak_seconds}")

    print(f"torch {torch.__version__}; width {args.width}, {args.batch}×{args.channels}×{args.size}², "
          f"{args.classes} classes; load average before: {os.getloadavg()[0]:.2f}")
    thread_options = sorted({1, args.threads}) if args.compare else [args.threads]
    layouts = [False, True] if args.compare else [args.channels_last]
    peaks: dict[int, float] = {}
    results: dict[str, tuple[int, dict[str, float] | None, int]] = {}  # name -> (threads, result, flops)
    for r in range(args.rounds):  # interleaved rounds: keep each setting's fastest round
        for threads in sorted({1, args.threads}):
            torch.set_num_threads(threads)
            peaks[threads] = max(peaks.get(threads, 0.0), matmul_peak(args.peak_n, args.peak_seconds))
        for threads in thread_options:
            for cl in layouts:
                for name, result, flops in run_config(args, threads, cl):
                    previous = results.get(name, (threads, None, flops))[1]
                    results[name] = (threads, _faster(previous, result), flops)
            for method in [m for m in args.engine.split(",") if m]:
                name = f"engine {method} [{threads}t]"
                flops = results[f"bare train step [{threads}t]"][2]
                with tempfile.TemporaryDirectory() as tmp:
                    result = engine_train_step(args, threads, method, Path(tmp))
                previous = results.get(name, (threads, None, flops))[1]
                results[name] = (threads, _faster(previous, result), flops)
        print(f"round {r + 1}/{args.rounds} done, load average {os.getloadavg()[0]:.2f}")
    for threads, peak in peaks.items():
        print(f"float32 matmul peak, {threads} thread(s): {peak / 1e9:.1f} GFLOP/s")
    if args.threads > 1 and peaks[args.threads] < 1.2 * peaks[1]:
        print(f"warning: the {args.threads}-thread peak is barely above the 1-thread peak: other processes "
              f"held cores, so the {args.threads}-thread % peak is unreliable")
    rows = [row(name, result, flops, peaks[threads]) for name, (threads, result, flops) in results.items()
            if result is not None]
    print_table(rows)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
