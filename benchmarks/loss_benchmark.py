"""Time one evaluation of the EoMT training loss (all prediction levels), ours against transformers' `EomtLoss`.

    python -m benchmarks.loss_benchmark [--queries 200] [--levels 4] [--targets 10] [--mask-size 160] [--threads 2]

Prints a table: median wall and minimum CPU seconds over `--repeats` runs for the loss alone (no grad) and loss + backward, with targets at
4x the mask-logit resolution (the input resolution, as in training) and at the mask-logit resolution. The two losses
draw the same random points for the same seed, so their values are printed too.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm import tqdm

from training.loss import MaskClassificationLoss


def make_inputs(batch: int, queries: int, levels: int, targets: int, mask_size: int, target_size: int, num_labels: int):
    generator = torch.Generator().manual_seed(0)
    masks = [torch.randn(batch, queries, mask_size, mask_size, generator=generator) * 3 for _ in range(levels)]
    classes = [torch.randn(batch, queries, num_labels + 1, generator=generator) for _ in range(levels)]
    grid = torch.linspace(0, 1, target_size)
    mask_labels, class_labels = [], []
    for _ in range(batch):
        centres = torch.rand(targets, 2, generator=generator)
        radii = torch.rand(targets, generator=generator) * 0.3 + 0.05
        distance = (grid[None, :, None] - centres[:, 0, None, None]) ** 2 + (grid[None, None, :] - centres[:, 1, None, None]) ** 2
        mask_labels.append(distance < radii[:, None, None] ** 2)  # (targets, H, W) discs
        class_labels.append(torch.randint(0, num_labels, (targets,), generator=generator))
    return masks, classes, mask_labels, class_labels


def time_runs(function, repeats: int) -> tuple[float, float, float]:
    """(median wall seconds, minimum process CPU seconds, value of the last run); CPU time is the robust figure on a
    shared machine."""
    wall, cpu, value = [], [], None
    function()  # warm-up
    for _ in range(repeats):
        torch.manual_seed(0)
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        value = function()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), min(cpu), value


def ours(masks, classes, mask_labels, class_labels, num_labels, backward):
    criterion = MaskClassificationLoss(num_labels=num_labels)

    def run():
        leaves = [m.detach().requires_grad_(backward) for m in masks] + [c.detach().requires_grad_(backward) for c in classes]
        levels = len(masks)
        total, _ = criterion(leaves[levels - 1], leaves[-1], mask_labels, class_labels, leaves[: levels - 1], leaves[levels:-1])
        if backward:
            total.backward()
        return total.item()

    return run


def reference(masks, classes, mask_labels, class_labels, num_labels, backward):
    from transformers import EomtConfig
    from transformers.models.eomt.modeling_eomt import EomtLoss

    criterion = EomtLoss(EomtConfig(num_labels=num_labels), {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0})
    float_labels = [m.float() for m in mask_labels]
    weights = {"loss_cross_entropy": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}

    def run():
        total = 0.0
        for m, c in zip(masks, classes):
            m, c = m.detach().requires_grad_(backward), c.detach().requires_grad_(backward)
            losses = criterion(m, c, float_labels, class_labels)
            total = total + sum(weights[name] * value for name, value in losses.items())
        if backward:
            total.backward()
        return total.item()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--levels", type=int, default=4, help="prediction levels (final + intermediate)")
    parser.add_argument("--targets", type=int, default=10, help="target masks per image")
    parser.add_argument("--mask-size", type=int, default=160, help="side of the predicted mask logits")
    parser.add_argument("--num-labels", type=int, default=133)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"batch {args.batch}, Q={args.queries}, {args.levels} levels, {args.targets} targets/image, "
          f"{args.mask_size}x{args.mask_size} mask logits, 12544 points, {args.threads} threads")  # fmt: skip
    print(f"{'targets':>9} {'pass':>16} {'ours wall / cpu (s)':>20} {'transformers wall / cpu (s)':>28} {'ours value':>11} {'transformers value':>19}")
    cases = [(t, b) for t in (4 * args.mask_size, args.mask_size) for b in (False, True)]
    for target_size, backward in tqdm(cases, desc="cases", leave=False):
        inputs = make_inputs(args.batch, args.queries, args.levels, args.targets, args.mask_size, target_size, args.num_labels)
        ours_wall, ours_cpu, ours_value = time_runs(ours(*inputs, args.num_labels, backward), args.repeats)
        ref_wall, ref_cpu, ref_value = time_runs(reference(*inputs, args.num_labels, backward), args.repeats)
        name = "loss + backward" if backward else "loss"
        tqdm.write(
            f"{target_size:>9} {name:>16} {f'{ours_wall:.3f} / {ours_cpu:.3f}':>20} {f'{ref_wall:.3f} / {ref_cpu:.3f}':>28} "
            f"{ours_value:>11.5f} {ref_value:>19.5f}"
        )


if __name__ == "__main__":
    main()
