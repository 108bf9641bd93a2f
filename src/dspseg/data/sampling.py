"""Which training images go into which batch: the sampling policy of a run, and its sampler.

**Usable images.** A method learns from some annotation kinds (``Method.uses``); the batches are
drawn from the training images of those kinds only (:func:`plan_batches`).

**mask_share.** When fewer than ``mask_share`` of the usable images have a mask (a high ACR), uniform
batches would hold fewer masks than asked; then ``k = min(B − 1, max(1, round(mask_share · B)))`` of
every batch of ``B`` come from the masked images, in a stream of their own (the *anchors*), and the
other ``B − k`` from the rest (FixMatch's labelled + unlabelled batches). When the share is already
met, or ``mask_share`` is 0, the batches are exactly the uniform ones.

**Order.** :class:`EpochBatchSampler` makes each epoch a permutation seeded by ``(seed, epoch)``
and hands every item a crop key ``(seed, epoch, position)``; both are pure functions of the batch
count, so ``start_batch`` resumes exactly, in any number of worker processes.

    >>> plan = plan_batches(["mask", "none", "none", "none", "none"], {"mask", "none"}, batch_size=4,
    ...                     seed=0, mask_share=0.5)
    >>> plan.anchors, plan.anchors_per_batch, plan.batches_per_epoch
    ((0,), 2, 2)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Sampler

from dspseg.vocabulary import Kind

ANCHOR_EPOCH_OFFSET = 2**31  # crop keys of anchor draws: (seed, offset + anchor epoch, position)

#: one item of a batch: (dataset index, crop key (seed, epoch, position))
Draw = tuple[int, tuple[int, int, int]]


@dataclass(frozen=True)
class BatchPlan:
    """The sampling policy of a run: the arguments of :class:`EpochBatchSampler` but the start.

    ``indices`` are the usable training images (dataset indices, in dataset order); ``anchors`` ⊂
    ``indices`` the masked ones drawn ``anchors_per_batch`` per batch when ``mask_share`` applies
    (else empty and 0).
    """

    indices: tuple[int, ...]
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1
    anchors: tuple[int, ...] = ()
    anchors_per_batch: int = 0

    def sampler(self, start_batch: int = 0) -> EpochBatchSampler:
        """The endless batch sampler of this plan, ``start_batch`` batches in (exact resume)."""
        return EpochBatchSampler(self.indices, self.batch_size, self.seed, start_batch=start_batch, rank=self.rank,
                                 world_size=self.world_size, anchors=self.anchors,
                                 anchors_per_batch=self.anchors_per_batch)

    @property
    def batches_per_epoch(self) -> int:
        """Batches (per process) in one pass over the non-anchor images."""
        return self.sampler().batches_per_epoch

    def describe(self, mask_share: float) -> str | None:
        """A line for the console when the masked images are drawn as anchors, else None."""
        if not self.anchors_per_batch:
            return None
        k, n_masked = self.anchors_per_batch, len(self.anchors)
        return (f"batches: {k} of {self.batch_size} images from the {n_masked} masked ones "
                f"(mask_share {mask_share:g}), the rest from the other {len(self.indices) - n_masked}")


def usable_indices(kinds: Sequence[str], uses: Iterable[str]) -> list[int]:
    """Indices of the images whose kind (``kinds[i]``, see :mod:`dspseg.vocabulary`) is in ``uses``."""
    uses = set(uses)
    return [i for i, kind in enumerate(kinds) if kind in uses]


def plan_batches(kinds: Sequence[str], uses: Iterable[str], batch_size: int, seed: int, mask_share: float,
                 rank: int = 0, world_size: int = 1) -> BatchPlan:
    """The batch policy for training images of annotation ``kinds`` and a method that ``uses`` some.

    ``plan.indices`` is empty when no image is usable (the caller says why). ``rank`` and
    ``world_size`` give each process its slice of every global batch.
    """
    usable = usable_indices(kinds, uses)
    plan = BatchPlan(tuple(usable), batch_size, seed, rank=rank, world_size=world_size)
    masked = tuple(i for i in usable if kinds[i] == Kind.MASK)
    if mask_share > 0 and len(masked) < mask_share * len(usable):
        k = min(batch_size - 1, max(1, round(mask_share * batch_size)))
        plan = BatchPlan(tuple(usable), batch_size, seed, rank, world_size, anchors=masked, anchors_per_batch=k)
    return plan


class EpochBatchSampler(Sampler[list[Draw]]):
    """Endless batches over ``indices``: each epoch is a permutation seeded by ``(seed, epoch)``.

    Yields lists of ``(index, (seed, epoch, position))``; the second element seeds the item's crop.
    With one device the last batch of an epoch may be smaller. With ``world_size`` > 1 the epoch's
    order is padded by wrapping to a multiple of ``batch_size · world_size`` and rank r takes the
    r-th slice of each global batch, so all ranks take the same number of steps. ``start_batch``
    skips the batches already consumed (exact resume).

    With ``anchors`` (e.g. the fully masked images) and ``anchors_per_batch`` = k ≥ 1, every batch
    holds k anchors, drawn from their own stream (one seeded permutation of the anchors after the
    other), and ``batch_size − k`` of the other indices; an epoch is then a pass over the others.
    This keeps the few masks of a high-ACR dataset in every step instead of in a fraction of them
    (FixMatch's labelled + unlabelled batches). Without other indices, or with k ≥ batch_size,
    the anchors are ordinary indices.
    """

    def __init__(self, indices: Sequence[int], batch_size: int, seed: int, start_batch: int = 0,
                 rank: int = 0, world_size: int = 1, anchors: Sequence[int] = (),
                 anchors_per_batch: int = 0) -> None:
        if not indices:
            raise ValueError("EpochBatchSampler: no indices to sample")
        anchor_set = set(anchors) & set(indices)
        rest = [i for i in indices if i not in anchor_set]
        if anchor_set and rest and 1 <= anchors_per_batch < batch_size:
            self.anchors = [i for i in indices if i in anchor_set]
            self.anchors_per_batch = anchors_per_batch
            self.indices = rest
        else:
            self.anchors, self.anchors_per_batch = [], 0
            self.indices = list(indices)
        self.batch_size = batch_size - self.anchors_per_batch  # drawn from ``indices`` per batch
        self.seed = seed
        self.start_batch = start_batch
        self.rank, self.world_size = rank, world_size
        self._anchor_orders: dict[int, list[int]] = {}

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.indices) / (self.batch_size * self.world_size))

    def epoch_order(self, epoch: int) -> list[int]:
        """Positions into ``indices`` for ``epoch`` (wrapped to whole global batches if distributed)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.indices)).tolist()
        if self.world_size > 1:
            total = self.batches_per_epoch * self.batch_size * self.world_size
            order = [order[i % len(order)] for i in range(total)]
        return order

    def _anchor_draws(self, global_batch: int) -> list[Draw]:
        """This rank's anchors of the ``global_batch``-th batch of the run."""
        k, n = self.anchors_per_batch, len(self.anchors)
        first = (global_batch * self.world_size + self.rank) * k  # draws before this rank's in the stream
        out = []
        for g in range(first, first + k):
            a_epoch, pos = divmod(g, n)
            if a_epoch not in self._anchor_orders:
                self._anchor_orders = {a_epoch: np.random.default_rng([self.seed, a_epoch, 1]).permutation(n).tolist()}
            out.append((self.anchors[self._anchor_orders[a_epoch][pos]],
                        (self.seed, ANCHOR_EPOCH_OFFSET + a_epoch, pos)))
        return out

    def __iter__(self) -> Iterator[list[Draw]]:
        per_epoch = self.batches_per_epoch
        epoch, batch = divmod(self.start_batch, per_epoch)
        global_bs = self.batch_size * self.world_size
        while True:
            order = self.epoch_order(epoch)
            for k in range(batch, per_epoch):
                start = k * global_bs + self.rank * self.batch_size
                positions = range(start, min(start + self.batch_size, len(order)))
                items = [(self.indices[order[p]], (self.seed, epoch, p)) for p in positions]
                if self.anchors_per_batch:
                    items = self._anchor_draws(epoch * per_epoch + k) + items
                yield items
            epoch, batch = epoch + 1, 0
