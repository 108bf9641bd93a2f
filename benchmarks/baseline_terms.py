"""What each loss term of a baseline does at its initialisation: value and pull on the features.

    python benchmarks/baseline_terms.py STUDY --cell mixed-acr8-split0 --methods pseudolabel,fixmatch,con2r

For a sweep folder STUDY (``dspseg sweep``), one simulated dataset of it (``--cell``) and that
cell's ``basic`` run (the weights every baseline starts from, paper §5.2), every method's own
training step (:meth:`Method.step`: its views, forward and loss terms) runs on ``--batches``
batches of 8 training images drawn uniformly from the images the method learns from, as the
trainer draws them. For each term the table gives its mean value and the L2 norm of its gradient
with respect to the backbone features (the input of the linear head, every forward of the step):
a term whose gradient dwarfs that of the mask cross-entropy steers the fine-tuning. For ``con2r``
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
    args = parser.parse_args()
    torch.set_num_threads(1)

    import dspseg.losses.con2r as con2r_module
    from dspseg.data.batch import collate
    from dspseg.data.dataset import Normalisation, SegmentationDataset
    from dspseg.data.manifest import load_manifest
    from dspseg.engine.checkpoint import build_model_from_checkpoint, load_run
    from dspseg.losses.plf import confident
    from dspseg.methods import get_method

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
    print(f"{args.cell}: basic initialisation {init}; {args.batches} uniform batches of {args.batch_size}\n")
    print("| method | term | mean value | mean |∂term/∂features| | × CE's |")
    print("|---|---|---:|---:|---:|")
    for name in args.methods.split(","):
        cls = get_method(name)
        method = cls(cls.Options(), n_classes=manifest.n_classes, ignore_index=manifest.ignore_index)
        model = build_model_from_checkpoint(state)
        model.train()
        usable = dataset.indices_of_kinds(method.uses)
        generator = torch.Generator().manual_seed(args.seed)
        values: dict[str, list[float]] = {}
        pulls: dict[str, list[float]] = {}
        floors.clear()
        shares: list[float] = []
        masked: list[int] = []
        for b in range(args.batches):
            picks = torch.randint(len(usable), (args.batch_size,), generator=generator).tolist()
            batch = collate([dataset[(usable[i], args.seed * 1000 + b)] for i in picks], ignore_index=manifest.ignore_index)
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
            if name == "fixmatch":
                with torch.no_grad():
                    logits = model(batch.image)["logits"]
                    shares.append(float(confident(logits, batch.allowed, method.options.threshold)[batch.valid]
                                        .float().mean()))
        ce = statistics.mean(pulls["ce"]) if "ce" in pulls else None
        for key in values:
            pull = statistics.mean(pulls[key])
            ratio = f"{pull / ce:.2f}" if ce else "—"
            print(f"| {name} | {key} | {statistics.mean(values[key]):.3f} | {pull:.5f} | {ratio} |")
        if floors:
            floor = statistics.mean(floors)
            print(f"| {name} | con2r floor H(T) (log M = "
                  f"{math.log(method.options.samples):.3f}) | {floor:.3f} | | |")
            print(f"| {name} | con2r − H(T): what it can still lower | {statistics.mean(values['con2r']) - floor:.3f} | | |")
        if shares:
            print(f"| {name} | pixels confident ≥ {method.options.threshold:g} (un-augmented view) | "
                  f"{statistics.mean(shares):.1%} | | |")
        print(f"| {name} | masked images per batch | {statistics.mean(masked):.2f} | | |")


if __name__ == "__main__":
    main()
