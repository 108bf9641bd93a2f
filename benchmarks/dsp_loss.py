"""DSP loss forward+backward time against cross-entropy forward+backward on the same logits.

    python benchmarks/dsp_loss.py [--batch 5 --size 512 --classes 11 --threads 2 --repeats 5]

The batch mixes every annotation type like a real ``mixed`` batch: image 0 has a full mask with
many instances, image 1 boxes (the background boxed too), image 2 points, image 3 image labels,
image 4 nothing. Prints one table: every row runs once per round, rows interleaved, ``--repeats``
rounds after a warm-up; ms is the median time, × CE the median over rounds of the row's time over
the cross-entropy time of the same round (robust to a machine whose load drifts).
Target (issues 4 and 13): DSP ≤ 1.0× CE for both variants.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from dspseg.losses.dsp import Bags, dsp_loss
from dspseg.losses.normalizer import log_normalizer


def make_batch(b: int, size: int, c: int, seed: int = 0):
    """Random scores in [-1, 1] and a realistic set of bags and admissible maps."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    scores = torch.rand(b, c, size, size, generator=g) * 2 - 1
    target = torch.full((b, size, size), 255, dtype=torch.long)
    instances = torch.zeros(b, size, size, dtype=torch.long)
    classes, boxes, points, labels = [], [], [], []
    allowed = torch.ones(b, c, size, size, dtype=torch.bool)
    # image 0: a mask of 40 rectangles on background 0
    target[0] = 0
    instances[0] = 1
    classes.append(0)
    for k in range(40):
        y, x = rng.integers(0, size - 40, 2)
        h, w = rng.integers(8, 40, 2)
        cls = int(rng.integers(1, c))
        target[0, y:y + h, x:x + w] = cls
        instances[0, y:y + h, x:x + w] = k + 2
        classes.append(cls)
    allowed[0] = F.one_hot(target[0], c).permute(2, 0, 1).bool()
    # image 1: 30 boxes plus a whole-image background box
    if b > 1:
        allowed[1] = False
        allowed[1, 0] = True
        boxes.append([1, 0, 0, 0, size, size])
        for _ in range(30):
            y, x = rng.integers(0, size - 60, 2)
            h, w = rng.integers(10, 60, 2)
            cls = int(rng.integers(1, c))
            boxes.append([1, cls, x, y, x + w, y + h])
            allowed[1, cls, y:y + h, x:x + w] = True
    # image 2: 50 points
    if b > 2:
        for _ in range(50):
            y, x = rng.integers(0, size, 2)
            cls = int(rng.integers(0, c))
            points.append([2, cls, y, x])
            allowed[2, :, y, x] = False
            allowed[2, cls, y, x] = True
    # image 3: image labels {0, 1, 2}
    if b > 3:
        allowed[3, 3:] = False
        labels += [[3, 0], [3, 1], [3, 2]]
    bags = Bags(instances, torch.tensor(classes), torch.tensor(points, dtype=torch.long).view(-1, 4),
                torch.tensor(boxes, dtype=torch.long).view(-1, 6), torch.tensor(labels, dtype=torch.long).view(-1, 2))
    return scores, target, allowed, torch.ones(b, size, size, dtype=torch.bool), bags


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """Per row: (median seconds, median over rounds of its time / the first row's time in the same
    round). Every row runs once per round, rows interleaved, after one warm-up call each: on a
    shared machine the load drifts between rounds, and a ratio taken within a round cancels most of it."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    base = next(iter(times.values()))
    return {name: (statistics.median(t), statistics.median([a / b for a, b in zip(t, base)]))
            for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--classes", type=int, default=11)
    p.add_argument("--tau", type=float, default=0.05)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compiled-only", action="store_true", help="skip the eager rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    scores, target, allowed, valid, bags = make_batch(args.batch, args.size, args.classes)
    s = scores.clone().requires_grad_(True)

    def ce():
        F.cross_entropy(s / args.tau, target.clamp(max=args.classes - 1)).backward()
        s.grad = None

    def norm(fused):
        log_normalizer(s, allowed, valid, args.tau, fused=fused).sum().backward()
        s.grad = None

    def dsp(fused, variant="paper"):
        sum(dsp_loss(s, allowed, valid, bags, args.tau, variant=variant, fused=fused).values()).backward()
        s.grad = None

    rows = [("cross-entropy (all pixels)", ce)]
    rows += [("eq. 8 normaliser, eager", lambda: norm(False)), ("eq. 8 normaliser, compiled", lambda: norm(True))]
    rows += [("DSP loss (paper), eager", lambda: dsp(False)), ("DSP loss (paper), compiled", lambda: dsp(True))]
    rows += [("DSP loss (reference), eager", lambda: dsp(False, "reference")),
             ("DSP loss (reference), compiled", lambda: dsp(True, "reference"))]
    if args.compiled_only:
        rows = [r for r in rows if "eager" not in r[0]]
    results = interleaved(dict(rows), args.repeats)
    print(f"B={args.batch} {args.size}x{args.size} C={args.classes} tau={args.tau} threads={args.threads} "
          f"torch {torch.__version__}; {args.repeats} interleaved rounds, medians")
    print(f"| {'forward+backward':<30} | {'ms':>8} | {'x CE':>6} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 8}|")
    for name, (t, ratio) in results.items():
        print(f"| {name:<30} | {t * 1e3:8.1f} | {ratio:6.2f} |")


if __name__ == "__main__":
    main()
