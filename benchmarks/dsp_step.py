"""The ``dsp`` training step against the ``basic`` step on the same batch (issue 4: target ≤ 2.5×).

    python benchmarks/dsp_step.py --batch 5 --size 512 --widths 16 --threads 2
    python benchmarks/dsp_step.py --batch 5 --size 256 --widths 64 --threads 2 --repeats 2
    python benchmarks/dsp_step.py --cases 8x96:16,5x128:64 --methods fixmatch,dsp --threads 1 --repeats 5

A step is what the trainer does per batch, data loading aside: the method's own views (basic: the
weak view; dsp: weak and strong views as one batch of 2B), forward, every loss term, backward and
an AdamW step. The batch is real: synthetic images of ``--size``² at ACR 2 in the ``mixed``
scenario (masks, boxes, points, image labels and unlabeled images), collated by the trainer's
``collate``. Every case (batch, size, width) and method runs once per round, after a warm-up, in
``--repeats`` interleaved rounds, so a busy machine slows all alike; the tables give each round's
seconds per step and ratios to the first method (with the 1-minute load average), then per case the
median seconds, the ratio of medians and the median (range) of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from dspseg.data.acr import reduce_manifest
from dspseg.data.batch import Batch, collate
from dspseg.data.dataset import SegmentationDataset
from dspseg.data.synthetic import write_synthetic_dataset
from dspseg.methods import get_method
from dspseg.models import build_model


def make_batch(folder: Path, batch: int, size: int, image_size: int | None = None) -> tuple[Batch, int]:
    """A collated mixed batch of ``batch`` crops of ``size``² (one of every annotation kind first) from
    synthetic images of ``image_size``² (default ``size``; below ~96² a 30-image dataset cannot hold
    every class in every split), and C."""
    manifest = write_synthetic_dataset(folder / "syn", n_images=max(30, 4 * batch), size=image_size or size, seed=0,
                                       groups=6)
    reduced = reduce_manifest(manifest, acr=2, scenario="mixed", split=0, n_splits=3, seed=0)
    reduced.root = manifest.root
    ds = SegmentationDataset(reduced, "train", crop_size=size)
    order = []
    for kind in ("mask", "box", "point", "image", "none"):
        order += ds.indices_of_kinds({kind})[:1]
    order += [i for i in range(len(ds)) if i not in order]
    items = [ds[(i, 0)] for i in order[:batch]]
    return collate(items, ignore_index=reduced.ignore_index), reduced.n_classes


def batch_to(batch: Batch, device: str | torch.device, channels_last: bool = False) -> Batch:
    """The collated batch with every tensor on ``device`` (images channels_last if asked)."""
    out = batch.to(device)
    if channels_last:
        out.image = out.image.contiguous(memory_format=torch.channels_last)
    return out


def step_fn(name: str, n_classes: int, width: int, batch: Batch, device: str | torch.device = "cpu",
            autocast: torch.dtype | None = None, channels_last: bool = False):
    """One training step of method ``name`` on ``batch`` (already on ``device``) as a function
    returning its seconds (not synchronised): views, forward and loss terms (under ``autocast``
    of that dtype if given), backward, AdamW step. The model is seeded, so every call builds the same."""
    cls = get_method(name)
    method = cls(cls.Options(), n_classes=n_classes, ignore_index=255)
    torch.manual_seed(0)
    model = build_model(1, n_classes, width=width, head=method.head, aux_heads=method.aux_heads,
                        **method.head_kwargs()).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.01)
    device_type = torch.device(device).type

    def step() -> float:
        t0 = time.perf_counter()
        with torch.autocast(device_type, dtype=autocast, enabled=autocast is not None):
            terms = method.step(model, batch)
        opt.zero_grad(set_to_none=True)
        sum(terms.values()).backward()
        opt.step()
        return time.perf_counter() - t0

    return step


def parse_cases(args: argparse.Namespace) -> list[tuple[int, int, int]]:
    """(batch, size, width) of every case: ``--cases 8x96:16,5x128:64``, else ``--batch``/``--size`` at
    each of ``--widths``."""
    if not args.cases:
        return [(args.batch, args.size, int(w)) for w in args.widths.split(",")]
    cases = []
    for text in args.cases.split(","):
        try:
            shape, width = text.split(":")
            batch, size = shape.lower().split("x")
            cases.append((int(batch), int(size), int(width)))
        except ValueError:
            raise SystemExit(f"--cases: '{text}' is not BATCHxSIZE:WIDTH (e.g. 8x96:16); fix the list") from None
    return cases


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages as text ('n/a' where the OS has none)."""
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--widths", default="16", help="comma-separated U-Net widths (paper: 64)")
    p.add_argument("--cases", default=None,
                   help="comma-separated BATCHxSIZE:WIDTH cases timed in the same rounds, e.g. 8x96:16,5x128:64 "
                        "(overrides --batch, --size and --widths)")
    p.add_argument("--methods", default="basic,dsp", help="first one is the reference")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3, help="rounds; every case and method runs once per round")
    p.add_argument("--image-size", type=int, default=None,
                   help="side of the synthetic images the crops come from (default: max(--size, 96); smaller "
                        "30-image datasets cannot hold every class in every split)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    cases = parse_cases(args)
    steps: dict[tuple[int, int, int], dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        batches = {}
        for batch_size, size in dict.fromkeys((b, s) for b, s, _ in cases):
            batches[batch_size, size] = make_batch(Path(tmp) / f"{batch_size}x{size}", batch_size, size,
                                                   args.image_size or max(size, 96))
    for case in cases:
        batch, n_classes = batches[case[:2]]
        steps[case] = {m: step_fn(m, n_classes, case[2], batch) for m in methods}
        print(f"B={case[0]}, {case[1]}x{case[1]}, width {case[2]}, C={n_classes}, kinds {batch.kinds}")
    print(f"{args.threads} threads; load average at start {loadavg()}\n")
    for case in cases:  # warm-up (dsp: torch.compile of the normaliser)
        for m in methods:
            steps[case][m]()
    times: dict[tuple[int, int, int], dict[str, list[float]]] = {c: {m: [] for m in methods} for c in cases}
    print(f"| round | case | {' | '.join(f'{m} s' for m in methods)} | "
          f"{' | '.join(f'{m} × {methods[0]}' for m in methods[1:])} | load (1 min) |")
    print(f"|---:|---|{'---:|' * (2 * len(methods) - 1)}---:|")
    for r in range(args.repeats):  # rounds interleave every case and method, so a busy machine slows all alike
        for case in cases:
            for m in methods:
                times[case][m].append(steps[case][m]())
            row = [times[case][m][-1] for m in methods]
            print(f"| {r + 1} | {case[0]}×{case[1]}², w{case[2]} | {' | '.join(f'{t:.3f}' for t in row)} | "
                  f"{' | '.join(f'{t / row[0]:.2f}' for t in row[1:])} | {os.getloadavg()[0]:.2f} |", flush=True)
    print(f"\nload average at end {loadavg()}\n")
    print(f"| case | method | median s / step | × {methods[0]} (medians) | × {methods[0]} per round: median (range) |")
    print("|---|---|---:|---:|---:|")
    for case in cases:
        ref = times[case][methods[0]]
        for m in methods:
            t = times[case][m]
            ratios = [a / b for a, b in zip(t, ref)]
            print(f"| {case[0]}×{case[1]}², w{case[2]} | {m} | {statistics.median(t):.3f} | "
                  f"{statistics.median(t) / statistics.median(ref):.2f} | "
                  f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
