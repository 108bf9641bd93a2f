"""The ``dsp`` training step against the ``basic`` step on the same batch (issue 4: target ≤ 2.5×).

    python benchmarks/dsp_step.py --batch 5 --size 512 --widths 16 --threads 2
    python benchmarks/dsp_step.py --batch 5 --size 256 --widths 64 --threads 2 --repeats 2

A step is what the trainer does per batch, data loading aside: the method's own views (basic: the
weak view; dsp: weak and strong views as one batch of 2B), forward, every loss term, backward and
an AdamW step. The batch is real: synthetic images of ``--size``² at ACR 2 in the ``mixed``
scenario (masks, boxes, points, image labels and unlabeled images), collated by the trainer's
``collate``. Methods are timed in interleaved rounds (median of ``--repeats`` after a warm-up),
so a busy machine slows both alike; the table gives seconds per step and the ratio to ``basic``.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--widths", default="16", help="comma-separated U-Net widths (paper: 64)")
    p.add_argument("--methods", default="basic,dsp", help="first one is the reference")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-size", type=int, default=None,
                   help="side of the synthetic images the crops come from (default: max(--size, 96); smaller "
                        "30-image datasets cannot hold every class in every split)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        batch, n_classes = make_batch(Path(tmp), args.batch, args.size, args.image_size or max(args.size, 96))
    print(f"B={args.batch}, {args.size}x{args.size}, C={n_classes}, {args.threads} threads, kinds {batch.kinds}")
    print(f"| width | method | s / step | × {methods[0]} |")
    print("|---:|---|---:|---:|")
    for width in (int(w) for w in args.widths.split(",")):
        steps = {m: step_fn(m, n_classes, width, batch) for m in methods}
        for m in methods:  # warm-up (dsp: torch.compile of the normaliser)
            steps[m]()
        times: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(args.repeats):
            for m in methods:
                times[m].append(steps[m]())
        ref = statistics.median(times[methods[0]])
        for m in methods:
            t = statistics.median(times[m])
            print(f"| {width} | {m} | {t:.3f} | {t / ref:.2f} |", flush=True)


if __name__ == "__main__":
    main()
