"""What each loss term of a baseline does at its initialisation: value and pull on the features.

    python benchmarks/baseline_terms.py STUDY --cell mixed-acr8-split0 --methods pseudolabel,fixmatch,con2r
    python benchmarks/baseline_terms.py STUDY --cell point-acr8-split1 --methods pointbranch --mask-share 0.25

For a sweep folder STUDY (``dspseg sweep``), one simulated dataset of it (``--cell``) and that
cell's ``basic`` run (the weights every baseline starts from, paper §5.2), every method's own
training step (:meth:`Method.step`: its views, forward and loss terms) runs on ``--batches``
batches of 8 training images drawn uniformly from the images the method learns from (with
``--mask-share`` s > 0, as the trainer draws them when fewer than that share are masked:
round(8 s) masked images and the rest from the others). The model is built as the trainer builds
it (seeded, the method's auxiliary heads included: fresh, as ``--init`` leaves them) with the
``basic`` weights. For each term the table gives its mean value and the L2 norm of its gradient
with respect to the backbone features (the input of the linear head, every forward of the step):
a term whose gradient dwarfs that of the mask cross-entropy steers the fine-tuning; and the L2 norm
of its gradient on the backbone's weights (what the optimiser moves; a pooled term such as a
classification branch's concentrates its feature gradient on few pixels, so the two can differ). For ``con2r``
it also gives the floor of the contrastive term, the entropy H(T) of its target graph (the term
is H(T) + KL(T ‖ softmax E) ≥ H(T)), so "its value is large" and "it pulls hard" can be told apart;
for ``fixmatch`` the share of strong-view pixels confident enough (≥ θ) to be taught.

Diagnostics, not a speed benchmark: nothing is timed, and the numbers do not depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="sweep folder")
    parser.add_argument("--cell", default="mixed-acr8-split0", help="simulated dataset under STUDY/data")
    parser.add_argument("--methods", default="pseudolabel,fixmatch,con2r")
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mask-share", type=float, default=0.0,
                        help="masked images per batch as a share (the trainer's mask_share; 0: uniform batches)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import dspseg.losses.con2r as con2r_module
    from dspseg.data.batch import collate
    from dspseg.data.dataset import Normalisation, SegmentationDataset
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.checkpoint import load_run, load_weights_into
    from dspseg.losses.plf import confident
    from dspseg.methods import get_method
    from dspseg.models import build_model

    _, acr, split = args.cell.rsplit("-", 2)
    init = args.study / "runs" / "shared" / acr / split / "basic"
    manifest = load_manifest(args.study / "data" / args.cell)
    state = load_run(init, "best", device="cpu").state
    dataset = SegmentationDataset(manifest, "train", normalisation=Normalisation.from_dict(state["normalisation"]),
                                  crop_size=None)
    floors: list[float] = []
    graph_cross_entropy = con2r_module.graph_cross_entropy

    def with_floor(emb_q, emb_n, rows, cols, tau=0.1, weight=None):  # records H(T) of the query → neighbour graph
        floors.append(float(-(rows * rows.clamp_min(1e-12).log()).sum(-1).mean()))
        return graph_cross_entropy(emb_q, emb_n, rows, cols, tau, weight)

    con2r_module.graph_cross_entropy = with_floor
    drawn = (f"batches with {args.mask_share:g} of masked images" if args.mask_share > 0 else "uniform batches")
    print(f"{args.cell}: basic initialisation {init}; {args.batches} {drawn} of {args.batch_size}\n")
    print("| method | term | mean value | mean |∂term/∂features| | × CE's | |∂term/∂backbone weights| × CE's |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.methods.split(","):
        cls = get_method(name)
        method = cls(cls.Options(), n_classes=manifest.n_classes, ignore_index=manifest.ignore_index)
        torch.manual_seed(args.seed)  # as the trainer: seeded weights, then the init's where they fit
        args_of = state["model_args"]
        model = build_model(int(state["in_channels"]), manifest.n_classes, width=int(args_of["width"]),
                            head=method.head, levels=int(args_of["levels"]), aux_heads=method.aux_heads,
                            **method.head_kwargs())
        load_weights_into(model, state["model"])
        model.train()
        usable = dataset.indices_of_kinds(method.uses)
        masks = [i for i in usable if dataset.items[i].kind == "mask"]
        others = [i for i in usable if dataset.items[i].kind != "mask"]
        k = min(args.batch_size - 1, max(1, round(args.mask_share * args.batch_size)))
        share = args.mask_share > 0 and len(masks) < args.mask_share * len(usable) and others
        generator = torch.Generator().manual_seed(args.seed)
        values: dict[str, list[float]] = {}
        pulls: dict[str, list[float]] = {}
        weight_pulls: dict[str, list[float]] = {}
        weights = [w for w in model.backbone.parameters() if w.requires_grad]
        floors.clear()
        shares: list[float] = []
        masked: list[int] = []
        for b in range(args.batches):
            if share:
                picks = ([masks[i] for i in torch.randint(len(masks), (k,), generator=generator).tolist()]
                         + [others[i] for i in torch.randint(len(others), (args.batch_size - k,), generator=generator).tolist()])
            else:
                picks = [usable[i] for i in torch.randint(len(usable), (args.batch_size,), generator=generator).tolist()]
            batch = collate([dataset[(i, args.seed * 1000 + b)] for i in picks], ignore_index=manifest.ignore_index)
            masked.append(batch.kinds.count("mask"))
            features: list[torch.Tensor] = []
            hook = model.backbone.register_forward_hook(lambda _m, _i, out: features.append(out) or None)
            try:
                terms = method.step(model, batch)
            finally:
                hook.remove()
            for key, term in terms.items():
                grads = torch.autograd.grad(term, features, retain_graph=True, allow_unused=True)
                values.setdefault(key, []).append(float(term.detach()))
                pulls.setdefault(key, []).append(math.sqrt(sum(float((g ** 2).sum()) for g in grads if g is not None)))
                grads = torch.autograd.grad(term, weights, retain_graph=True, allow_unused=True)
                weight_pulls.setdefault(key, []).append(
                    math.sqrt(sum(float((g ** 2).sum()) for g in grads if g is not None)))
            if name == "fixmatch":
                with torch.no_grad():
                    logits = model(batch.image)["logits"]
                    shares.append(float(confident(logits, batch.allowed, method.options.threshold)[batch.valid]
                                        .float().mean()))
        ce = statistics.mean(pulls["ce"]) if "ce" in pulls else None
        ce_weights = statistics.mean(weight_pulls["ce"]) if "ce" in weight_pulls else None
        for key in values:
            pull = statistics.mean(pulls[key])
            ratio = f"{pull / ce:.2f}" if ce else "—"
            weight_ratio = f"{statistics.mean(weight_pulls[key]) / ce_weights:.2f}" if ce_weights else "—"
            print(f"| {name} | {key} | {statistics.mean(values[key]):.3f} | {pull:.5f} | {ratio} | {weight_ratio} |")
        if floors:
            floor = statistics.mean(floors)
            print(f"| {name} | con2r floor H(T) (log M = "
                  f"{math.log(method.options.samples):.3f}) | {floor:.3f} | | | |")
            print(f"| {name} | con2r − H(T): what it can still lower | {statistics.mean(values['con2r']) - floor:.3f} | | | |")
        if shares:
            print(f"| {name} | pixels confident ≥ {method.options.threshold:g} (un-augmented view) | "
                  f"{statistics.mean(shares):.1%} | | | |")
        print(f"| {name} | masked images per batch | {statistics.mean(masked):.2f} | | | |")


if __name__ == "__main__":
    main()
