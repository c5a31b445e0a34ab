"""Hungarian matcher: optimality against brute force, cost terms, agreement with transformers."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from mask2former.matcher import HungarianMatcher
from mask2former.point_sampling import point_sample


def _image(q: int, n: int, c: int, seed: int, size: int = 8, target_size: int = 16):
    g = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(q, c + 1, generator=g) * 2
    mask_logits = torch.randn(q, size, size, generator=g) * 3
    labels = torch.randint(0, c, (n,), generator=g)
    masks = (torch.rand(n, target_size, target_size, generator=g) > 0.5).float()
    return class_logits, mask_logits, labels, masks


def _brute_force_min(cost: torch.Tensor) -> float:
    q, n = cost.shape
    if q >= n:  # each target gets a distinct query
        return min(sum(cost[p[j], j].item() for j in range(n)) for p in itertools.permutations(range(q), n))
    return min(sum(cost[i, p[i]].item() for i in range(q)) for p in itertools.permutations(range(n), q))


@pytest.mark.parametrize("q,n", [(4, 3), (5, 5), (5, 2), (3, 4), (4, 1)])
def test_matches_brute_force(q: int, n: int) -> None:
    matcher = HungarianMatcher(num_points=64)
    for seed in range(4):
        cls, masks_logits, labels, masks = _image(q, n, c=3, seed=seed)
        # forward draws one (1, P, 2) set of points per image from the generator; redraw them
        # identically to rebuild the very cost matrix it solved.
        (rows, cols), = matcher(cls[None], masks_logits[None], [{"labels": labels, "masks": masks}],
                                generator=torch.Generator().manual_seed(seed))
        coords = torch.rand(1, 64, 2, generator=torch.Generator().manual_seed(seed))
        cost = matcher.cost_matrix(cls, masks_logits, labels, masks, coords).double()

        assert len(rows) == len(cols) == min(q, n)
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert rows.tolist() == sorted(rows.tolist())
        assert cost[rows, cols].sum().item() == pytest.approx(_brute_force_min(cost), abs=1e-9)


def test_cost_terms_match_elementwise_definition() -> None:
    cls, mask_logits, labels, masks = _image(4, 3, c=5, seed=0)
    coords = torch.rand(1, 32, 2, generator=torch.Generator().manual_seed(1))
    matcher = HungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=32)
    cost = matcher.cost_matrix(cls, mask_logits, labels, masks, coords)

    pred = point_sample(mask_logits[:, None], coords.expand(4, -1, -1))[:, 0]
    tgt = point_sample(masks[:, None], coords.expand(3, -1, -1))[:, 0]
    expected = torch.empty(4, 3)
    for i in range(4):
        for j in range(3):
            bce = F.binary_cross_entropy_with_logits(pred[i], tgt[j])
            p = pred[i].sigmoid()
            dice = 1 - (2 * (p * tgt[j]).sum() + 1) / (p.sum() + tgt[j].sum() + 1)
            prob = cls[i].softmax(-1)[labels[j]]
            expected[i, j] = -2.0 * prob + 5.0 * bce + 5.0 * dice
    torch.testing.assert_close(cost, expected, atol=1e-5, rtol=1e-5)


def test_empty_targets_and_nan_costs() -> None:
    matcher = HungarianMatcher(num_points=16)
    cls, mask_logits, labels, masks = _image(4, 2, c=3, seed=3)
    mask_logits[1] = float("nan")  # a diverged query is matched last, not a crash
    targets = [{"labels": labels[:0], "masks": masks[:0]}, {"labels": labels, "masks": masks}]
    out = matcher(torch.stack([cls, cls]), torch.stack([mask_logits, mask_logits]), targets)
    assert out[0][0].numel() == 0 and out[0][1].numel() == 0
    assert len(out[1][0]) == 2 and 1 not in out[1][0].tolist()


def test_targets_of_different_sizes_are_padded_like_the_loss() -> None:
    matcher = HungarianMatcher(num_points=64)
    cls, mask_logits, labels, masks = _image(5, 3, c=3, seed=5)
    small = masks[:, :10, :12]
    padded = F.pad(small, (0, 4, 0, 6))
    big = {"labels": labels, "masks": masks}
    cls2, logits2 = torch.stack([cls, cls]), torch.stack([mask_logits, mask_logits])
    a = matcher(cls2, logits2, [big, {"labels": labels, "masks": small}], generator=torch.Generator().manual_seed(0))
    b = matcher(cls2, logits2, [big, {"labels": labels, "masks": padded}], generator=torch.Generator().manual_seed(0))
    assert [(r.tolist(), c.tolist()) for r, c in a] == [(r.tolist(), c.tolist()) for r, c in b]


def test_agrees_with_transformers_matcher(monkeypatch: pytest.MonkeyPatch) -> None:
    hf = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")
    original_rand = torch.rand

    def rand_keyed_by_shape(*size, generator=None, **kwargs):
        # Same shape -> same numbers, whichever implementation asks and in whatever order.
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        seed = hash(shape) % (2**31)
        return original_rand(*shape, generator=torch.Generator().manual_seed(seed), **kwargs)

    monkeypatch.setattr(torch, "rand", rand_keyed_by_shape)
    images = [_image(6, n, c=4, seed=10 + n) for n in (3, 0, 5)]
    cls = torch.stack([im[0] for im in images])
    mask_logits = torch.stack([im[1] for im in images])
    targets = [{"labels": im[2], "masks": im[3]} for im in images]

    ours = HungarianMatcher(2.0, 5.0, 5.0, num_points=50)(cls, mask_logits, targets)
    ref = hf.Mask2FormerHungarianMatcher(cost_class=2.0, cost_mask=5.0, cost_dice=5.0, num_points=50)(
        mask_logits, cls, [t["masks"] for t in targets], [t["labels"] for t in targets]
    )
    for (r0, c0), (r1, c1) in zip(ours, ref):
        assert r0.tolist() == r1.tolist() and c0.tolist() == c1.tolist()
