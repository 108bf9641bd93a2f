"""Sampling policy: epochs as seeded permutations, exact resume, DDP slices, mask_share anchors."""

from __future__ import annotations

from dspseg.data.sampling import BatchPlan, EpochBatchSampler, plan_batches, usable_indices


def test_epoch_sampler_visits_every_image_once_per_epoch() -> None:
    s = EpochBatchSampler(indices=[10, 11, 12, 13, 14], batch_size=2, seed=3)
    assert s.batches_per_epoch == 3
    it = iter(s)
    batches = [next(it) for _ in range(6)]
    assert [len(b) for b in batches] == [2, 2, 1, 2, 2, 1]
    for epoch in (batches[:3], batches[3:]):
        assert sorted(i for b in epoch for i, _ in b) == [10, 11, 12, 13, 14]
    assert [i for b in batches[:3] for i, _ in b] != [i for b in batches[3:] for i, _ in b]
    resumed = iter(EpochBatchSampler(indices=[10, 11, 12, 13, 14], batch_size=2, seed=3, start_batch=4))
    assert [next(resumed) for _ in range(2)] == batches[4:6]
    ranks = [iter(EpochBatchSampler([0, 1, 2, 3, 4], 2, seed=1, rank=r, world_size=2)) for r in (0, 1)]
    first = [next(r) for r in ranks]
    assert len(first[0]) == len(first[1]) == 2
    assert not {i for i, _ in first[0]} & {i for i, _ in first[1]}


def test_epoch_sampler_puts_anchors_in_every_batch() -> None:
    indices = list(range(10, 20))
    s = EpochBatchSampler(indices=indices, batch_size=4, seed=5, anchors=[10, 11, 99], anchors_per_batch=1)
    assert s.batches_per_epoch == 3  # 8 others, 3 per batch
    it = iter(s)
    batches = [next(it) for _ in range(12)]
    assert [len(b) for b in batches] == [4, 4, 3] * 4
    assert all(b[0][0] in (10, 11) and all(i not in (10, 11) for i, _ in b[1:]) for b in batches)
    for e in range(4):  # every other image once per epoch
        assert sorted(i for b in batches[3 * e:3 * e + 3] for i, _ in b[1:]) == list(range(12, 20))
    anchor_draws = [b[0][0] for b in batches]
    for a in range(6):  # the anchors cycle: each once per pair of draws
        assert sorted(anchor_draws[2 * a:2 * a + 2]) == [10, 11]
    keys = [key for b in batches for _, key in b]
    assert len(set(keys)) == len(keys)  # every crop seeded differently
    resumed = iter(EpochBatchSampler(indices=indices, batch_size=4, seed=5, anchors=[10, 11], anchors_per_batch=1,
                                     start_batch=5))
    assert [next(resumed) for _ in range(7)] == batches[5:12]
    ranks = [iter(EpochBatchSampler(indices, 3, seed=2, rank=r, world_size=2, anchors=[10, 11, 12, 13],
                                    anchors_per_batch=2)) for r in (0, 1)]
    first = [next(r) for r in ranks]
    assert [len(b) for b in first] == [3, 3]
    assert not {i for i, _ in first[0][:2]} & {i for i, _ in first[1][:2]}  # the 4 anchors split over ranks
    for k, anchors in ((4, [10]), (1, []), (1, indices)):  # k ≥ batch, no anchors, nothing else: plain epochs
        plain = EpochBatchSampler(indices=indices, batch_size=4, seed=5, anchors=anchors, anchors_per_batch=k)
        assert plain.anchors_per_batch == 0 and plain.batches_per_epoch == 3 and len(next(iter(plain))) == 4



def test_plan_draws_masks_as_anchors_only_when_the_share_is_not_met() -> None:
    kinds = ["mask", "mask", "none", "box", "none", "none", "none", "none", "none", "none", "none"]
    assert usable_indices(kinds, {"mask", "none"}) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    plan = plan_batches(kinds, {"mask", "none"}, batch_size=4, seed=0, mask_share=0.25)
    assert plan.anchors == (0, 1) and plan.anchors_per_batch == 1 and 3 not in plan.indices
    assert plan.batches_per_epoch == 3  # 8 others, 3 per batch
    assert plan.describe(0.25) == "batches: 1 of 4 images from the 2 masked ones (mask_share 0.25), the rest from the other 8"
    for share in (0.2, 0.0):  # met by uniform batches, or off: the plain plan
        plain = plan_batches(kinds, {"mask", "none"}, batch_size=4, seed=0, mask_share=share)
        assert plain == BatchPlan((0, 1, 2, 4, 5, 6, 7, 8, 9, 10), 4, 0) and plain.describe(share) is None
    assert plan_batches(kinds, {"point"}, batch_size=4, seed=0, mask_share=0.25).indices == ()
    resumed = plan.sampler(start_batch=2)
    assert next(iter(resumed)) == [b for _, b in zip(range(3), iter(plan.sampler()))][2]
