"""The Hungarian matcher and the mask-classification loss against direct computations and transformers' EoMT loss."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import EomtConfig, EomtForUniversalSegmentation
from transformers.models.eomt.modeling_eomt import EomtLoss

import modeling_eomt.loss_eomt as loss_module
from modeling_eomt import EoMTConfig, EoMTForUniversalSegmentation
from modeling_eomt.loss_eomt import BatchTargets, HungarianMatcher, MaskClassificationLoss, importance_sampled_points, sample_points
from tests.modeling.helpers import loss_of_outputs, perturb_
from tests.training.helpers import random_targets, single_thread  # noqa: F401 (fixture)

WEIGHTS = dict(class_weight=2.0, mask_weight=5.0, dice_weight=5.0)

pytestmark = pytest.mark.usefixtures("single_thread")


# ---- direct computations: float64, one pair / one query at a time ----------------------------------------------------


def naive_pair_cost(mask_logits, class_logits, target_mask, label):
    """Matching cost of one (query, target) pair; masks at the same resolution, every pixel."""
    probs = mask_logits.double().flatten().sigmoid()
    target = target_mask.double().flatten()
    bce = -(target * probs.log() + (1 - target) * (1 - probs).log()).mean()
    dice = 1 - (2 * (probs * target).sum() + 1) / (probs.sum() + target.sum() + 1)
    class_cost = -class_logits.double().softmax(-1)[label]
    return WEIGHTS["class_weight"] * class_cost + WEIGHTS["mask_weight"] * bce + WEIGHTS["dice_weight"] * dice, bce, dice


def brute_force_match(mask_logits, class_logits, masks, labels):
    """The assignment of minimal total cost over all injective maps targets -> queries: {target: query}."""
    num_queries, num_targets = mask_logits.shape[0], masks.shape[0]
    cost = [[naive_pair_cost(mask_logits[q], class_logits[q], masks[t], labels[t])[0].item() for t in range(num_targets)] for q in range(num_queries)]
    best = min(itertools.permutations(range(num_queries), num_targets), key=lambda queries: sum(cost[q][t] for t, q in enumerate(queries)))
    return dict(enumerate(best))


def naive_level_losses(mask_logits, class_logits, mask_labels, class_labels, no_object_weight=0.1):
    """Unweighted loss_mask, loss_dice, loss_cross_entropy of one level with brute-force matching, every pixel."""
    num_labels = class_logits.shape[-1] - 1
    num_masks = max(sum(len(labels) for labels in class_labels), 1)
    bce_sum = dice_sum = 0.0
    ce_sum = weight_sum = 0.0
    for image in range(mask_logits.shape[0]):
        match = brute_force_match(mask_logits[image], class_logits[image], mask_labels[image], class_labels[image])
        target_of_query = {q: t for t, q in match.items()}
        for t, q in match.items():
            _, bce, dice = naive_pair_cost(mask_logits[image, q], class_logits[image, q], mask_labels[image][t], class_labels[image][t])
            bce_sum, dice_sum = bce_sum + bce.item(), dice_sum + dice.item()
        for q in range(mask_logits.shape[1]):
            target = int(class_labels[image][target_of_query[q]]) if q in target_of_query else num_labels
            weight = 1.0 if target < num_labels else no_object_weight
            ce_sum += weight * -class_logits[image, q].double().log_softmax(-1)[target].item()
            weight_sum += weight
    return {"loss_mask": bce_sum / num_masks, "loss_dice": dice_sum / num_masks, "loss_cross_entropy": ce_sum / weight_sum}


def random_predictions(batch, queries, size, num_labels=4, levels=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    masks = [torch.randn(batch, queries, size, size, generator=generator) * 3 for _ in range(levels)]
    classes = [torch.randn(batch, queries, num_labels + 1, generator=generator) * 2 for _ in range(levels)]
    return masks, classes


# ---- matcher -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[3, 1], [4, 0], [2, 4]])
def test_matcher_equals_brute_force_over_all_permutations(sizes):
    masks, classes = random_predictions(len(sizes), 4, 6, seed=sum(sizes))
    mask_labels, class_labels = random_targets(sizes, 6, 6, seed=len(sizes))
    matcher = HungarianMatcher(**WEIGHTS, num_points=None)  # every pixel
    (indices,) = matcher(masks[0][None], classes[0][None], mask_labels, class_labels)  # one prediction level
    for image, (rows, cols) in enumerate(indices):
        expected = brute_force_match(masks[0][image], classes[0][image], mask_labels[image], class_labels[image])
        assert dict(zip(cols.tolist(), rows.tolist())) == expected
        assert rows.tolist() == sorted(rows.tolist())


def test_matcher_cost_matrix_equals_direct_cost():
    masks, classes = random_predictions(1, 5, 8, seed=3)
    mask_labels, class_labels = random_targets([3], 8, 8, seed=3)
    targets = BatchTargets.from_lists(mask_labels, class_labels, torch.device("cpu"))
    cost = HungarianMatcher(**WEIGHTS, num_points=None).cost_matrices(masks[0][None], classes[0][None], targets)[0, 0]
    for q, t in itertools.product(range(5), range(3)):
        expected = naive_pair_cost(masks[0][0, q], classes[0][0, q], mask_labels[0][t], class_labels[0][t])[0]
        assert cost[q, t].item() == pytest.approx(expected.item(), abs=1e-5)


def test_point_sampling_compares_full_resolution_targets_with_quarter_resolution_predictions():
    """A point maps to the same place on a 4x finer map: sampling the coarse map at the fine pixel centres is bilinear
    upsampling (align_corners=False) away from the zero-padded border."""
    coarse = torch.randn(1, 2, 8, 8)
    fine = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    points = loss_module.pixel_centre_points(32, 32)[None]  # (1, 1024, 2)
    sampled = sample_points(coarse, points).reshape(1, 2, 32, 32)
    assert torch.allclose(sampled[..., 2:-2, 2:-2], fine[..., 2:-2, 2:-2], atol=1e-6)
    # ... and sampling a map at its own pixel centres returns it
    assert torch.allclose(sample_points(fine, points).reshape(1, 2, 32, 32), fine, atol=1e-6)


def test_batch_targets_pad_each_image_and_sample_every_matched_pair_at_its_own_points():
    mask_labels, class_labels = random_targets([2, 0, 3], 20, 28, seed=1)
    targets = BatchTargets.from_lists(mask_labels, class_labels, torch.device("cpu"))
    assert targets.counts == (2, 0, 3) and targets.masks.dtype == torch.float32
    assert targets.images.tolist() == [0, 0, 2, 2, 2]
    for image, count in enumerate(targets.counts):  # the first n_i rows of image i are its targets, in order
        rows = targets.rows[image, :count]
        assert torch.equal(targets.masks[rows, 0], mask_labels[image].float())
        assert torch.equal(targets.classes[rows], class_labels[image])
    # pairs of 2 levels (a target at most once per level), each with its own points; corners test the zero padding
    levels, rows = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 3, 4, 4, 1])
    points = torch.rand(5, 300, 2)
    points[:, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.999, 0.001]])
    sampled = MaskClassificationLoss.sample_matched_targets(targets, points, levels, rows, num_levels=2)
    for pair in range(5):
        expected = F.grid_sample(targets.masks[rows[pair], None], 2 * points[pair, None, :, None] - 1, align_corners=False)
        assert torch.allclose(sampled[pair], expected.flatten(), atol=1e-6)


# ---- loss ----------------------------------------------------------------------------------------------------------------


def test_loss_with_every_pixel_equals_naive_per_pair_computation():
    sizes = [3, 0, 2]
    masks, classes = random_predictions(3, 4, 6, levels=3, seed=7)
    mask_labels, class_labels = random_targets(sizes, 6, 6, seed=7)
    criterion = MaskClassificationLoss(num_labels=4, **WEIGHTS, num_points=None)
    total, components = criterion(masks[-1], classes[-1], mask_labels, class_labels, masks[:-1], classes[:-1])

    expected_total = 0.0
    for suffix, level in (("_block0", 0), ("_block1", 1), ("", 2)):
        expected = naive_level_losses(masks[level], classes[level], mask_labels, class_labels)
        for name, value in expected.items():
            assert components[name + suffix].item() == pytest.approx(value, rel=1e-5, abs=1e-6), name + suffix
        expected_total += 2.0 * expected["loss_cross_entropy"] + 5.0 * expected["loss_mask"] + 5.0 * expected["loss_dice"]
    assert set(components) == {f"loss_{kind}{suffix}" for kind in ("mask", "dice", "cross_entropy") for suffix in ("", "_block0", "_block1")}
    assert total.item() == pytest.approx(expected_total, rel=1e-5)


def test_images_without_targets_give_a_finite_all_no_object_loss():
    masks, classes = random_predictions(2, 5, 8, seed=1)
    masks[0].requires_grad_(True)
    classes[0].requires_grad_(True)
    mask_labels = [torch.zeros(0, 32, 32, dtype=torch.bool)] * 2
    class_labels = [torch.zeros(0, dtype=torch.long)] * 2
    total, components = MaskClassificationLoss(num_labels=4)(masks[0], classes[0], mask_labels, class_labels)
    assert torch.isfinite(total)
    assert components["loss_mask"].item() == 0 and components["loss_dice"].item() == 0
    expected_ce = -classes[0].detach().log_softmax(-1)[..., 4].mean()  # every query "no object"
    assert components["loss_cross_entropy"].item() == pytest.approx(expected_ce.item(), rel=1e-6)
    total.backward()
    assert classes[0].grad.abs().sum() > 0 and torch.all(masks[0].grad == 0)


def test_gradients_reach_every_level():
    masks, classes = random_predictions(2, 5, 8, levels=3, seed=2)
    for tensor in masks + classes:
        tensor.requires_grad_(True)
    mask_labels, class_labels = random_targets([2, 3], 32, 32, seed=2)
    total, _ = MaskClassificationLoss(num_labels=4, num_points=64)(masks[-1], classes[-1], mask_labels, class_labels, masks[:-1], classes[:-1])
    total.backward()
    for tensor in masks + classes:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_importance_sampling_picks_the_most_uncertain_candidates():
    logits = torch.linspace(-6, 6, 16).repeat(3, 1, 16, 1)  # (3, 1, 16, 16): uncertain around the middle column
    candidates = torch.rand(3, 300, 2)  # 100 points, oversample ratio 3, importance sample ratio 0.75
    points = importance_sampled_points(logits, candidates, 75, torch.rand(3, 25, 2))
    assert points.shape == (3, 100, 2)
    candidate_uncertainty = sample_points(logits, candidates)[:, 0].abs()
    for mask in range(3):
        chosen = points[mask, :75]
        most_uncertain = candidates[mask, candidate_uncertainty[mask].argsort()[:75]]
        assert torch.equal(chosen[chosen[:, 0].argsort()], most_uncertain[most_uncertain[:, 0].argsort()])
    # the importance-sampled points lie near x = 0.5 (logit 0), the 25 uniform ones anywhere
    assert (points[:, :75, 0] - 0.5).abs().max() < 0.25
    assert (points[:, 75:, 0] - 0.5).abs().max() > 0.25


def test_num_masks_is_averaged_across_processes(monkeypatch):
    masks, classes = random_predictions(1, 5, 8, seed=4)
    mask_labels, class_labels = random_targets([2], 32, 32, seed=4)
    criterion = MaskClassificationLoss(num_labels=4, num_points=64)
    torch.manual_seed(0)
    _, single = criterion(masks[0], classes[0], mask_labels, class_labels)

    def all_reduce(tensor, op=None):  # another process holds 6 target masks: average (2 + 6) / 2 = 4
        tensor.add_(6.0)

    for name, value in dict(is_initialized=lambda: True, get_world_size=lambda: 2, get_backend=lambda: "gloo", all_reduce=all_reduce).items():
        monkeypatch.setattr(torch.distributed, name, value)
    torch.manual_seed(0)
    _, averaged = criterion(masks[0], classes[0], mask_labels, class_labels)
    assert averaged["loss_mask"].item() == pytest.approx(single["loss_mask"].item() * 2 / 4, rel=1e-6)
    assert averaged["loss_dice"].item() == pytest.approx(single["loss_dice"].item() * 2 / 4, rel=1e-6)
    assert averaged["loss_cross_entropy"].item() == pytest.approx(single["loss_cross_entropy"].item(), rel=1e-6)


def test_runs_in_float32_under_bf16_autocast():
    masks, classes = random_predictions(2, 5, 8, seed=6)
    mask_labels, class_labels = random_targets([2, 1], 32, 32, seed=6)
    criterion = MaskClassificationLoss(num_labels=4, num_points=None)
    low_masks, low_classes = masks[0].bfloat16().requires_grad_(True), classes[0].bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, components = criterion(low_masks, low_classes, mask_labels, class_labels)
    reference, _ = criterion(low_masks.detach().float(), low_classes.detach().float(), mask_labels, class_labels)
    assert total.dtype == torch.float32 and all(value.dtype == torch.float32 for value in components.values())
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)
    total.backward()
    assert low_masks.grad.dtype == torch.bfloat16 and torch.isfinite(low_masks.grad.float()).all()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda m, c: (m[:1], c[:1]), "mask_labels has 1 entries but the batch has 2 images"),
        (lambda m, c: (m, [c[0], c[1][:1]]), "image 1: mask_labels has 2 masks but class_labels has 1 labels"),
        (lambda m, c: (m, [c[0], torch.tensor([1, 4])]), r"image 1: class_labels \[4\] are outside \[0, 4\)"),
        (lambda m, c: (m, [torch.tensor([-1]), c[1]]), r"image 0: class_labels \[-1\] are outside"),
        (lambda m, c: ([m[0], m[1][0]], c), r"mask_labels\[1\] must be a \(num_masks, height, width\) tensor"),
        (lambda m, c: (m, [c[0].float(), c[1]]), r"class_labels\[0\] must hold integer class indices"),
        (lambda m, c: ([m[0], m[1][:, :16]], c), "image 1: target masks are 16x32 but image 0's are 32x32"),
        (lambda m, c: ([x[:, :16] for x in m], c), "aspect ratios differ"),
    ],
)
def test_bad_targets_raise_clear_errors(mutate, message):
    masks, classes = random_predictions(2, 5, 8, seed=8)
    mask_labels, class_labels = random_targets([1, 2], 32, 32, seed=8)
    mask_labels, class_labels = mutate(mask_labels, class_labels)
    with pytest.raises(ValueError, match=message):
        MaskClassificationLoss(num_labels=4, num_points=16)(masks[0], classes[0], mask_labels, class_labels)


# ---- transformers' EoMT loss (reference only) ---------------------------------------------------------------------------


@pytest.mark.parametrize("sizes, queries", [([3, 0, 2], 6), ([7, 1, 5], 4)])  # the second: more targets than queries
def test_equals_transformers_eomt_loss_with_the_same_random_points(sizes, queries):
    """Same RNG seed -> the same uniform and importance-sampled points -> the same matching, losses and gradients;
    transformers computes each level and image in turn, ours all at once."""
    masks, classes = random_predictions(3, queries, 16, levels=3, seed=9)
    mask_labels, class_labels = random_targets(sizes, 64, 64, seed=9)  # targets at 4x the mask-logit resolution
    config = EomtConfig(num_labels=4, train_num_points=300)
    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}
    reference = EomtLoss(config, weight_dict=weights)
    reference_leaves = [tensor.clone().requires_grad_(True) for tensor in masks + classes]
    torch.manual_seed(11)
    expected, expected_total = {}, 0.0
    for level, suffix in enumerate(("_block0", "_block1", "")):  # transformers' order: intermediate levels first
        level_masks, level_classes = reference_leaves[level], reference_leaves[3 + level]
        losses = reference(level_masks, level_classes, [m.float() for m in mask_labels], class_labels)
        expected.update({name + suffix: value.item() for name, value in losses.items()})
        expected_total = expected_total + sum(weights[name] * value for name, value in losses.items())
    expected_total.backward()

    leaves = [tensor.clone().requires_grad_(True) for tensor in masks + classes]
    torch.manual_seed(11)
    criterion = MaskClassificationLoss.from_config(config, num_points=config.train_num_points)  # 300, not "auto"'s 256
    total, components = criterion(leaves[2], leaves[5], mask_labels, class_labels, leaves[:2], leaves[3:5])
    total.backward()
    assert set(components) == set(expected)
    for name, value in expected.items():
        assert components[name].item() == pytest.approx(value, rel=1e-6, abs=1e-7), name
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)
    for ours, theirs in zip(leaves, reference_leaves):  # gradients of every level's mask and class logits
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-5 * theirs.grad.abs().max().item())


def test_levels_in_one_call_equal_one_call_per_level():
    """Batching the levels changes nothing: the same as the levels one by one, with the same random draws."""
    masks, classes = random_predictions(2, 5, 8, levels=3, seed=10)
    mask_labels, class_labels = random_targets([3, 2], 32, 32, seed=10)
    criterion = MaskClassificationLoss(num_labels=4, num_points=40)
    torch.manual_seed(3)
    total, components = criterion(masks[-1], classes[-1], mask_labels, class_labels, masks[:-1], classes[:-1])
    torch.manual_seed(3)
    separate = [criterion(masks[level], classes[level], mask_labels, class_labels) for level in range(3)]
    assert total.item() == pytest.approx(sum(level_total.item() for level_total, _ in separate), rel=1e-6)
    for (_, level_components), suffix in zip(separate, ("_block0", "_block1", "")):
        for name, value in level_components.items():
            assert components[name + suffix].item() == pytest.approx(value.item(), rel=1e-6), name + suffix


def test_auto_num_points_follows_the_mask_logit_resolution():
    assert loss_module.auto_num_points((160, 160)) == 12544  # the authors' 640 px: the recipe's count
    assert loss_module.auto_num_points((128, 128)) == 12544  # ADE20K's 512 px
    assert loss_module.auto_num_points((64, 64)) == 4096  # 128 px at patch 8: one point per logit
    assert loss_module.auto_num_points((32, 32), max_points=256) == 256
    config = EoMTConfig(num_labels=4, train_num_points=1000)
    criterion = MaskClassificationLoss.from_config(config)
    assert (criterion.num_points, criterion.max_points) == ("auto", 1000)
    assert [criterion.points_per_mask(size) for size in ((16, 16), (40, 40))] == [256, 1000]
    assert MaskClassificationLoss.from_config(config, num_points=77).points_per_mask((16, 16)) == 77
    assert MaskClassificationLoss.from_config(config, num_points=None).points_per_mask((16, 16)) is None
    with pytest.raises(ValueError, match="num_points must be a positive int, 'auto' or None"):
        MaskClassificationLoss(num_labels=4, num_points="all")


def test_auto_num_points_draws_that_many_points_per_mask(monkeypatch):
    """The loss samples `auto_num_points` points per matched mask: 8x8 mask logits -> 64 (of 12544)."""
    masks, classes = random_predictions(2, 5, 8, seed=12)
    mask_labels, class_labels = random_targets([2, 1], 32, 32, seed=12)
    shapes, sample = [], loss_module.sample_points

    def recording_sample_points(maps, points):
        shapes.append(tuple(points.shape))
        return sample(maps, points)

    monkeypatch.setattr(loss_module, "sample_points", recording_sample_points)
    MaskClassificationLoss(num_labels=4)(masks[0], classes[0], mask_labels, class_labels)
    assert shapes[0] == (2, 64, 2)  # the matcher: 64 uniform points per image
    assert shapes[-1] == (3, 64, 2)  # the loss: 64 points for each of the 3 matched masks


def test_equals_the_loss_transformers_eomt_computes_in_its_forward(tmp_path):
    common = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, num_blocks=2, image_size=64, patch_size=16, num_queries=6, num_labels=4)
    reference = perturb_(EomtForUniversalSegmentation(EomtConfig(**common, num_register_tokens=4, train_num_points=200))).train()
    reference.save_pretrained(tmp_path)
    ours = EoMTForUniversalSegmentation.from_pretrained(tmp_path).train()
    reference.attn_mask_probs.copy_(torch.tensor([1.0, 0.5]))  # the random per-query draws coincide too
    ours.set_attn_mask_probs([1.0, 0.5])
    pixel_values = torch.randn(2, 3, 64, 64)
    mask_labels, class_labels = random_targets([3, 2], 64, 64, seed=12)

    torch.manual_seed(13)
    expected = reference(pixel_values, mask_labels=[m.float() for m in mask_labels], class_labels=class_labels).loss
    torch.manual_seed(13)
    outputs = ours(pixel_values)
    total, _ = loss_of_outputs(ours.config, outputs, mask_labels, class_labels)
    print(f"transformers {expected.item():.6f}, ours {total.item():.6f}")
    assert math.isfinite(total.item()) and total.item() == pytest.approx(expected.item(), rel=1e-5)
