"""Training images/s of ``basic`` and ``dsp`` on one accelerator, and the share of its bf16 peak.

    python benchmarks/gpu.py                                   # CUDA: width 64, 256² and 512², bf16-mixed
    python benchmarks/gpu.py --sizes 256 --batch 16 --steps 20 --peak-tflops 989
    python benchmarks/gpu.py --device cpu --sizes 64 --steps 2 # smoke check without a GPU

Each row is one (method, crop size, memory layout): the method's real training step on one real
mixed batch (:mod:`dsp_step`: synthetic images at ACR 2, every annotation kind, the trainer's
``collate``), i.e. its views (``dsp``: weak and strong views as one batch of 2B images), forward
and every loss term under ``torch.autocast`` (``--precision bf16-mixed``; the prototype scores and
the DSP loss stay float32 as in training), backward and AdamW. Both layouts are measured
(``--layouts``): NCHW, and channels_last for the model and the input images. images/s counts the B
training images of a step (the trainer's images/s), from the median of ``--steps`` synchronised
steps after ``--warmup`` (which includes ``torch.compile`` of the DSP normaliser).

FLOPs per step are counted once per row with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions and matrix products, forward + backward; elementwise work, BatchNorm and the
optimiser are not counted), so ``% peak = FLOP/step ÷ s/step ÷ peak``. The peak is ``--peak-tflops``
or the dense bf16 tensor-core peak of the device from :data:`BF16_PEAK_TFLOPS` (by device name); on
a CPU without ``--peak-tflops`` it is the float32 ``torch.mm`` peak measured by
:func:`throughput.matmul_peak` (labelled so). ``peak GiB`` is the CUDA allocator's peak.

Anchor: NVIDIA's reference U-Net (DeepLearningExamples, UNet_Medical) trains at 119 img/s on 572²
inputs with AMP on one A100 (≈ 39 Mpx/s); ``Mpx/s`` gives this benchmark's pixel rate to compare.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from dsp_step import batch_to, make_batch, step_fn
from throughput import bench, count_flops, matmul_peak, print_table

#: Dense bf16 tensor-core peak in TFLOP/s (no sparsity), matched as a substring of the CUDA device
#: name, first match wins (so the PCIe H100 comes before the SXM default).
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,   # SXM
    "H200": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
}

ANCHOR = "NVIDIA reference U-Net (UNet_Medical): 119 img/s at 572² with AMP on one A100 = 38.9 Mpx/s"


def device_peak(device: torch.device, peak_tflops: float | None) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for ``device``."""
    if peak_tflops is not None:
        return peak_tflops * 1e12, f"--peak-tflops {peak_tflops:g}"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in BF16_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{name}: dense bf16 {tflops:g} TFLOP/s (table)"
        raise SystemExit(f"gpu.py: no bf16 peak known for {name!r}; pass --peak-tflops")
    peak = matmul_peak()
    return peak, f"{device.type}: measured float32 torch.mm peak {peak / 1e12:.3f} TFLOP/s"


def measure(method: str, size: int, channels_last: bool, args: argparse.Namespace, batches: dict,
            n_classes: int, device: torch.device, peak: float) -> dict[str, Any]:
    """One table row: ``method`` at ``size``² in one layout."""
    batch = batch_to(batches[size], device, channels_last)
    autocast = torch.bfloat16 if args.precision == "bf16-mixed" else None
    step = step_fn(method, n_classes, args.width, batch, device, autocast, channels_last)
    timed = lambda _: step()  # noqa: E731
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = bench(timed, batch, args.steps, warmup=args.warmup, images=args.batch)
    flops = count_flops(timed, batch)
    sec = result["seconds_per_step"]
    row = {"method": method, "size": f"{size}²", "layout": "channels_last" if channels_last else "NCHW",
           "img/s": result["images_per_s"], "best img/s": result["best_images_per_s"],
           "Mpx/s": result["images_per_s"] * size * size / 1e6, "GFLOP/step": flops / 1e9,
           "% peak": 100 * flops / sec / peak}
    if device.type == "cuda":
        row["peak GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--sizes", default="256,512", help="comma-separated square crop sides")
    p.add_argument("--width", type=int, default=64, help="U-Net width (paper: 64)")
    p.add_argument("--batch", type=int, default=8, help="training images per step")
    p.add_argument("--methods", default="basic,dsp", help="comma-separated; ratios are to the first")
    p.add_argument("--layouts", default="nchw,channels_last", help="nchw, channels_last or both")
    p.add_argument("--precision", choices=["bf16-mixed", "32"], default=None,
                   help="default: bf16-mixed on CUDA, 32 on CPU")
    p.add_argument("--steps", type=int, default=10, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per row (torch.compile included)")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the device's peak")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.precision is None:
        args.precision = "bf16-mixed" if device.type == "cuda" else "32"
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    methods = args.methods.split(",")
    layouts = [{"nchw": False, "channels_last": True}[x] for x in args.layouts.split(",")]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    peak, peak_note = device_peak(device, args.peak_tflops)
    with tempfile.TemporaryDirectory() as tmp:
        made = {s: make_batch(Path(tmp) / str(s), args.batch, s, image_size=max(s, 96)) for s in sizes}
    batches = {s: b for s, (b, _) in made.items()}
    n_classes = made[sizes[0]][1]
    print(f"torch {torch.__version__}, {device}, {args.precision}, width {args.width}, B = {args.batch}, "
          f"C = {n_classes}; peak: {peak_note}")
    rows = []
    for size in sizes:
        for cl in layouts:
            group = [measure(m, size, cl, args, batches, n_classes, device, peak) for m in methods]
            for r in group:
                r[f"step × {methods[0]}"] = group[0]["img/s"] / r["img/s"]
            rows += group
            print(f"done: {size}², {'channels_last' if cl else 'NCHW'}", flush=True)
    print_table(rows)
    for size in sizes:
        best = {m: max((r for r in rows if r["method"] == m and r["size"] == f"{size}²"), key=lambda r: r["img/s"])
                for m in methods}
        print(f"{size}²: fastest layout " + ", ".join(f"{m} {r['layout']} ({r['img/s']:.1f} img/s, "
                                                      f"{r['Mpx/s']:.3g} Mpx/s)" for m, r in best.items()))
    print(f"anchor: {ANCHOR}")


if __name__ == "__main__":
    main()
