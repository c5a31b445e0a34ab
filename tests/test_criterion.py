"""SetCriterion: equality with transformers' Mask2FormerLoss, gradients, empty targets."""
from __future__ import annotations

import os
import tempfile
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F

from mask2former.config import Mask2FormerConfig
from mask2former.criterion import SetCriterion, build_criterion
from mask2former.point_sampling import point_sample, uncertain_point_coords

NUM_CLASSES = 4


def _config(**overrides) -> SimpleNamespace:
    # Only the attributes both criteria read; small point counts keep the test fast.
    fields = dict(num_labels=NUM_CLASSES, no_object_weight=0.1, class_weight=2.0, mask_weight=5.0,
                  dice_weight=5.0, train_num_points=96, oversample_ratio=3.0, importance_sample_ratio=0.75)
    fields.update(overrides)
    return SimpleNamespace(**fields)


def _predictions(batch: int, queries: int, size: int, num_aux: int, seed: int):
    g = torch.Generator().manual_seed(seed)

    def layer():
        cls = (torch.randn(batch, queries, NUM_CLASSES + 1, generator=g) * 2).requires_grad_()
        masks = (torch.randn(batch, queries, size, size, generator=g) * 3).requires_grad_()
        return cls, masks

    cls, masks = layer()
    aux = [dict(zip(("class_queries_logits", "masks_queries_logits"), layer())) for _ in range(num_aux)]
    return cls, masks, aux


def _targets(counts: list[int], size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"labels": torch.randint(0, NUM_CLASSES, (n,), generator=g),
             "masks": (torch.rand(n, size, size, generator=g) > 0.6).float()} for n in counts]


@pytest.fixture
def shape_keyed_rand(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``torch.rand`` a function of the requested shape only.

    Both implementations then read the same points whenever they ask for the same shape (the
    same number of masks and points), independent of call order, while each still runs its
    own sampling code (candidate draw, uncertainty top-k, random fill-in) unchanged.
    """
    original_rand = torch.rand

    def rand(*size, generator=None, **kwargs):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        return original_rand(*shape, generator=torch.Generator().manual_seed(hash(shape) % (2**31)), **kwargs)

    monkeypatch.setattr(torch, "rand", rand)


@pytest.mark.parametrize("counts", [[3, 2], [2, 0, 4]])
def test_equals_transformers_loss(shape_keyed_rand: None, counts: list[int]) -> None:
    hf = pytest.importorskip("transformers.models.mask2former.modeling_mask2former")
    cfg = _config()
    cls, masks, aux = _predictions(len(counts), queries=6, size=12, num_aux=2, seed=0)
    targets = _targets(counts, size=24, seed=1)  # targets at 2x the prediction resolution

    ours = build_criterion(cfg)(cls, masks, aux, targets)
    ref = hf.Mask2FormerLoss(config=cfg, weight_dict={})(
        masks, cls, [t["masks"] for t in targets], [t["labels"] for t in targets], auxiliary_predictions=aux
    )
    expected_total = 0.0
    for suffix in ["", "_0", "_1"]:
        for our_name, ref_name, weight in [("loss_ce", "loss_cross_entropy", 2.0), ("loss_mask", "loss_mask", 5.0),
                                           ("loss_dice", "loss_dice", 5.0)]:
            torch.testing.assert_close(ours[our_name + suffix], ref[ref_name + suffix], atol=1e-5, rtol=1e-5)
            expected_total = expected_total + weight * ref[ref_name + suffix]
    assert set(ours) == {f"{n}{s}" for n in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")} | {"loss"}
    torch.testing.assert_close(ours["loss"], expected_total, atol=1e-5, rtol=1e-5)
    inputs = [cls, masks] + [t for layer in aux for t in layer.values()]
    for g_ours, g_ref in zip(torch.autograd.grad(ours["loss"], inputs), torch.autograd.grad(expected_total, inputs)):
        torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=1e-5)


def test_gradients_flow_to_every_layer_and_only_matched_masks() -> None:
    cls, masks, aux = _predictions(2, queries=5, size=10, num_aux=2, seed=2)
    targets = _targets([2, 3], size=10, seed=3)
    criterion = SetCriterion(NUM_CLASSES, num_points=40)
    out = criterion(cls, masks, aux, targets, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()

    for tensor in [cls, masks] + [t for layer in aux for t in layer.values()]:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    # Unmatched queries learn "no object" through the class loss only.
    indices = criterion.matcher(cls, masks, targets, generator=torch.Generator().manual_seed(0))
    for b, (rows, _) in enumerate(indices):
        unmatched = [q for q in range(5) if q not in rows.tolist()]
        assert torch.all(masks.grad[b, unmatched] == 0)
        assert torch.all(masks.grad[b, rows].abs().sum((1, 2)) > 0)


def test_zero_targets() -> None:
    cls, masks, aux = _predictions(2, queries=4, size=8, num_aux=1, seed=4)
    criterion = SetCriterion(NUM_CLASSES, num_points=20)

    out = criterion(cls, masks, aux, _targets([0, 0], size=8, seed=5))
    assert out["loss_mask"] == 0 and out["loss_dice"] == 0
    no_object = torch.full((2, 4), NUM_CLASSES)
    torch.testing.assert_close(out["loss_ce"], F.cross_entropy(cls.transpose(1, 2), no_object))
    out["loss"].backward()
    assert torch.isfinite(cls.grad).all() and cls.grad.abs().sum() > 0

    mixed = criterion(cls, masks, aux, _targets([0, 2], size=8, seed=5))
    assert all(torch.isfinite(v) for v in mixed.values()) and mixed["loss_mask"] > 0


def test_generator_makes_sampling_reproducible() -> None:
    cls, masks, _ = _predictions(1, queries=4, size=8, num_aux=0, seed=6)
    targets = _targets([3], size=8, seed=7)
    criterion = SetCriterion(NUM_CLASSES, num_points=20)
    a = criterion(cls, masks, None, targets, generator=torch.Generator().manual_seed(11))
    b = criterion(cls, masks, None, targets, generator=torch.Generator().manual_seed(11))
    c = criterion(cls, masks, None, targets, generator=torch.Generator().manual_seed(12))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["loss_mask"], c["loss_mask"])


def test_point_sample_reads_pixel_centres() -> None:
    features = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(4), indexing="ij")
    coords = torch.stack([(xs + 0.5) / 4, (ys + 0.5) / 3], -1).view(1, 12, 2).expand(2, -1, -1)
    torch.testing.assert_close(point_sample(features, coords), features.view(2, 1, 12))


def test_importance_sampling_prefers_uncertain_points() -> None:
    # Logit is 0 on the vertical line x = 0.5 and grows away from it.
    logits = (torch.linspace(-1, 1, 64).abs() * 10).expand(1, 1, 64, 64)
    coords = uncertain_point_coords(logits, 50, 3.0, 1.0, generator=torch.Generator().manual_seed(0))
    assert coords.shape == (1, 50, 2)
    assert (coords[0, :, 0] - 0.5).abs().max() < 0.25  # the 50 best of 150 uniform x's hug 0.5
    mixed = uncertain_point_coords(logits, 40, 3.0, 0.75, generator=torch.Generator().manual_seed(0))
    assert mixed.shape == (1, 40, 2) and (mixed[0, :30, 0] - 0.5).abs().max() < 0.25


def test_build_from_project_config() -> None:
    cfg = Mask2FormerConfig(id2label={i: str(i) for i in range(7)}, no_object_weight=0.2)
    criterion = build_criterion(cfg)
    assert criterion.num_classes == 7 and criterion.num_points == 12544
    assert criterion.class_weights.tolist() == pytest.approx([1.0] * 7 + [0.2])
    assert "class_weights" not in criterion.state_dict()


def test_num_masks_under_single_process_group() -> None:
    targets = _targets([3, 0, 2], size=4, seed=8)
    assert SetCriterion.num_masks(targets, torch.device("cpu")).item() == 5
    assert SetCriterion.num_masks(_targets([0], size=4, seed=8), torch.device("cpu")).item() == 1
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'store')}", rank=0, world_size=1)
        try:
            assert SetCriterion.num_masks(targets, torch.device("cpu")).item() == 5
        finally:
            dist.destroy_process_group()
