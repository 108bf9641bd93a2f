"""Two processes (gloo, CPU) on halves of a batch give the one-process loss and gradients (issue 8)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dspseg.losses.dsp import Bags, dsp_loss

B, C, H, W = 4, 4, 6, 7
TAU = 0.05


def make_batch():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(B, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    allowed = torch.rand(B, C, H, W, generator=g) > 0.4
    valid = torch.ones(B, H, W, dtype=torch.bool)
    valid[3, :, 5:] = False
    instances = torch.zeros(B, H, W, dtype=torch.long)
    instances[0, :2, :3] = 1
    instances[2, 3:, 2:] = 2
    instances[3, 1:4, :2] = 3
    return scores, allowed, valid, {
        "instances": instances, "instance_classes": torch.tensor([0, 2, 1]),
        "points": torch.tensor([[0, 1, 2, 4], [1, 3, 0, 3], [3, 1, 4, 1]]),
        "boxes": torch.tensor([[1, 2, 1, 0, 4, 3], [2, 0, 0, 1, 3, 5], [3, 2, 2, 2, 3, 3]]),
        "image_labels": torch.tensor([[0, 1], [1, 3], [2, 0], [3, 2]]),
    }


def slice_batch(scores, allowed, valid, bags, lo, hi):
    """Images lo..hi-1 with bags renumbered to the slice (instances keep batch-unique ids)."""
    def rows(t):
        keep = (t[:, 0] >= lo) & (t[:, 0] < hi)
        out = t[keep].clone()
        out[:, 0] -= lo
        return out
    inst = bags["instances"][lo:hi]
    ids = torch.unique(inst[inst > 0])
    remap = torch.zeros(int(bags["instances"].max()) + 1, dtype=torch.long)
    remap[ids] = torch.arange(1, ids.numel() + 1)
    local = Bags(remap[inst], bags["instance_classes"][ids - 1], rows(bags["points"]), rows(bags["boxes"]),
                 rows(bags["image_labels"]))
    return scores[lo:hi], allowed[lo:hi], valid[lo:hi], local


def worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        scores, allowed, valid, bags = make_batch()
        per = B // world
        s, a, v, local = slice_batch(scores, allowed, valid, bags, rank * per, (rank + 1) * per)
        s = s.clone().requires_grad_(True)
        terms = dsp_loss(s, a, v, local, tau=TAU, variant="paper")
        loss = sum(terms.values())
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": s.grad / world}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_equal_one_process_on_the_global_batch(tmp_path):
    world = 2
    mp.spawn(worker, args=(world, free_port(), str(tmp_path)), nprocs=world, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    scores, allowed, valid, bags = make_batch()
    s = scores.clone().requires_grad_(True)
    loss = sum(dsp_loss(s, allowed, valid, Bags(**bags), tau=TAU, variant="paper").values())
    loss.backward()

    mean_loss = sum(r["loss"] for r in results) / world  # what DDP's averaged objective is
    grad = torch.cat([r["grad"] for r in results])  # each process's share of the averaged gradient
    diff = (grad - s.grad).abs().max().item()
    print(f"loss 1 process {loss.item():.12f}, 2 processes {mean_loss.item():.12f}; max |grad diff| {diff:.2e}")
    assert torch.allclose(mean_loss, loss.detach(), rtol=1e-12)
    assert torch.allclose(grad, s.grad, rtol=1e-10, atol=1e-14)
