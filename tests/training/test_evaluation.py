"""Streaming evaluation in EoMTTrainer: the same metrics as a direct per-image computation for every task, mask-free
by default, memory that does not grow with the number of images, and clear errors."""

import gc
import tracemalloc

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch._subclasses.fake_tensor import FakeTensor
from transformers import TrainerCallback

from image_processing import EoMTImageProcessor
from modeling_eomt.loss_eomt import MaskClassificationLoss
from tests.training.data_helpers import crop_validation_images, synthetic_instance, synthetic_panoptic  # noqa: F401
from tests.training.helpers import SegmentationExamples, single_thread, tiny_segmentation_model  # noqa: F401
from training.data import (
    CLASS_NAMES,
    EvalDataset,
    collate_eval,
    from_hf_dataset,
    load_ade20k,
    make_eval_dataset,
    write_synthetic_ade20k,
)
from training.data.synthetic import STUFF_CLASSES
from training.evaluation import (
    SWEEP_THRESHOLDS,
    ClassScores,
    SegmentationEvaluator,
    ShardSampler,
    choose_postprocessing,
    evaluation_dataloader,
    inference_attention,
)
from modeling_eomt.loss_eomt import MaskClassificationLoss
from training.metrics import MaskAP, MeanIoU, PanopticQuality
from training.run import calibrate_postprocessing, evaluate
from training.trainer import EoMTTrainer, recipe_training_arguments

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32  # model input side; the generated images are 48 px (or 48 x 32 for semantic windows)


@pytest.fixture(scope="module")
def wide_ade(tmp_path_factory):
    """ADE20K-style semantic set whose validation images are 48 x 32: two 32 px sliding windows each."""
    root = write_synthetic_ade20k(tmp_path_factory.mktemp("ade"), num_train=1, num_val=3, size=48, seed=2)
    crop_validation_images(root, width=48)
    return root


def tiny_model(num_labels: int, seed: int = 0):
    return tiny_segmentation_model(seed, num_labels=num_labels, image_size=SIZE, num_queries=8)


def processor_for(info, **settings) -> EoMTImageProcessor:
    return EoMTImageProcessor(size=SIZE, num_labels=info.num_labels, do_split_image=info.task == "semantic", **settings)


def make_trainer(tmp_path, model, dataset, batch_size=3, **options):
    args = recipe_training_arguments(str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=True,
                                     per_device_eval_batch_size=batch_size)  # fmt: skip
    processor = options.pop("processing_class") if "processing_class" in options else processor_for(dataset.info)
    return EoMTTrainer(model=model, args=args, eval_dataset=dataset, processing_class=processor, mask_annealing=False, **options)


def direct_metrics(model, processor, dataset, threshold=0.0):
    """The metric of the task, image by image: processor, mask-free forward, post-processing, update."""
    info = dataset.info
    metric = {
        "panoptic": lambda: PanopticQuality(info.num_labels, info.thing_ids, info.id2label),
        "instance": lambda: MaskAP(info.num_labels, info.id2label),
        "semantic": lambda: MeanIoU(info.num_labels, ignore_index=info.ignore_index, id2label=info.id2label),
    }[info.task]()
    model.eval()
    with inference_attention(model), torch.no_grad():
        for example in dataset:
            inputs = processor(images=[example["image"]], return_tensors="pt")
            outputs = model(inputs["pixel_values"], patch_offsets=inputs.get("patch_offsets"))
            size = [example["image"].shape[:2]]
            if info.task == "panoptic":
                prediction = processor.post_process_panoptic_segmentation(outputs, size, threshold=threshold,
                                                                          stuff_classes=info.stuff_ids)[0]  # fmt: skip
                metric.update(prediction["segmentation"], prediction["segments_info"], example["segmentation"],
                              example["segments_info"])  # fmt: skip
            elif info.task == "instance":
                prediction = processor.post_process_instance_segmentation(outputs, size, threshold=threshold,
                                                                          return_binary_maps=True)[0]  # fmt: skip
                segments = prediction["segments_info"]
                target = example["target"]
                metric.update(prediction["segmentation"], [s["score"] for s in segments], [s["label_id"] for s in segments],
                              target.masks, target.labels, target.is_crowd)  # fmt: skip
            else:
                metric.update(processor.post_process_semantic_segmentation(outputs, size)[0], example["semantic_map"])
    return metric.compute(per_class=True)


def test_panoptic_evaluation_equals_the_per_image_computation(synthetic_panoptic, tmp_path):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    model = tiny_model(dataset.info.num_labels)
    expected = direct_metrics(model, processor_for(dataset.info), dataset)
    counts = expected["per_class"]
    assert sum(c["fp"] for c in counts.values()) > 0 and sum(c["fn"] for c in counts.values()) > 0  # not trivial

    trainer = make_trainer(tmp_path, model, dataset, postprocess_kwargs={"threshold": 0.0})
    metrics = trainer.evaluate()
    for name in ("pq", "sq", "rq", "pq_things", "pq_stuff", "rq_things", "rq_stuff"):
        assert metrics[f"eval_{name}"] == pytest.approx(expected[name], nan_ok=True)
    assert trainer.eval_per_class == counts
    assert metrics["eval_samples_per_second"] > 0 and np.isfinite(metrics["eval_loss"])
    assert torch.equal(model.attn_mask_probs, torch.ones(2))  # restored after the mask-free evaluation


def test_instance_evaluation_equals_the_per_image_computation(synthetic_instance, tmp_path):
    dataset = make_eval_dataset(synthetic_instance[0], "val")
    model = tiny_model(dataset.info.num_labels, seed=1)
    expected = direct_metrics(model, processor_for(dataset.info), dataset)
    metrics = make_trainer(tmp_path, model, dataset, batch_size=2).evaluate()
    assert expected["ap50"] >= 0  # COCOeval found ground truth
    for name in ("ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large"):
        assert metrics[f"eval_{name}"] == pytest.approx(expected[name], nan_ok=True)


def test_semantic_evaluation_with_sliding_windows_equals_the_per_image_computation(wide_ade, tmp_path):
    dataset = EvalDataset(load_ade20k(wide_ade, "val", id2label=dict(enumerate(CLASS_NAMES))))  # the 8 generated classes
    processor = processor_for(dataset.info)
    assert processor(images=[dataset[0]["image"]])["pixel_values"].shape[0] == 2  # two windows per image
    model = tiny_model(dataset.info.num_labels, seed=2)
    expected = direct_metrics(model, processor, dataset)
    trainer = make_trainer(tmp_path, model, dataset, batch_size=2, processing_class=processor)
    metrics = trainer.evaluate()
    assert 0 < metrics["eval_miou"] == pytest.approx(expected["mean_iou"])
    assert metrics["eval_pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"])
    assert set(trainer.eval_per_class) == set(dataset.info.id2label.values())


def test_eval_loss_is_the_row_weighted_mean_of_the_batch_losses(synthetic_panoptic, tmp_path):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    model = tiny_model(dataset.info.num_labels, seed=3)
    loss_fn = MaskClassificationLoss.from_config(model.config, num_points=None)  # every pixel: deterministic
    processor = processor_for(dataset.info)
    metrics = make_trainer(tmp_path, model, dataset, batch_size=3, loss_fn=loss_fn, processing_class=processor).evaluate()

    losses = []
    with inference_attention(model), torch.no_grad():
        for start in range(0, len(dataset), 3):
            examples = [dataset[i] for i in range(start, min(start + 3, len(dataset)))]
            inputs = processor(images=[e["image"] for e in examples], segmentation_maps=[e["target"] for e in examples])
            keep = [~crowd for crowd in inputs["is_crowd"]]  # crowd regions are not targets
            outputs = model(inputs["pixel_values"])
            loss, _ = loss_fn(outputs.masks_queries_logits, outputs.class_queries_logits,
                              [m[k] for m, k in zip(inputs["mask_labels"], keep)],
                              [c[k] for c, k in zip(inputs["class_labels"], keep)])  # fmt: skip
            losses.append((loss.item(), len(examples)))
    assert any(example["target"].is_crowd.any() for example in dataset)
    expected = sum(loss * rows for loss, rows in losses) / sum(rows for _, rows in losses)
    assert metrics["eval_loss"] == pytest.approx(expected, rel=1e-5)


class RecordMaskProbs(TrainerCallback):
    """The model's `attn_mask_probs` at every prediction step."""

    def __init__(self) -> None:
        self.seen = []

    def on_prediction_step(self, args, state, control, model=None, **kwargs):
        self.seen.append(model.attn_mask_probs.tolist())


def test_evaluation_is_mask_free_unless_masked_attention_is_asked_for(synthetic_panoptic, tmp_path):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    model = tiny_model(dataset.info.num_labels, seed=4)
    model.set_attn_mask_probs([0.3, 0.7])  # mid-annealing
    results = {}
    for masked in (False, True):
        record = RecordMaskProbs()
        trainer = make_trainer(tmp_path, model, dataset, eval_masked_attention=masked, callbacks=[record])
        results[masked] = trainer.evaluate()["eval_loss"]
        assert record.seen == [[float(masked)] * 2] * 2  # 4 images in batches of 3
        assert model.attn_mask_probs.tolist() == pytest.approx([0.3, 0.7])  # restored
    assert results[False] != results[True]


def test_evaluation_errors_name_the_problem(synthetic_panoptic, tmp_path):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    with pytest.raises(ValueError, match="the model predicts 4 classes but .* has 8: load the model with num_labels=8"):
        make_trainer(tmp_path, tiny_model(num_labels=4), dataset, processing_class=processor_for(dataset.info)).evaluate()
    with pytest.raises(ValueError, match="needs the image processor: pass processing_class=EoMTImageProcessor"):
        make_trainer(tmp_path, tiny_model(8), dataset, processing_class=None).evaluate()


def test_shard_sampler_gives_every_image_to_exactly_one_process():
    shards = [list(ShardSampler(7, rank, 3)) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]] and [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]
    with pytest.raises(ValueError, match=r"rank must be in \[0, 3\), got 3"):
        ShardSampler(7, 3, 3)


def test_streamed_evaluation_data_is_split_between_processes_without_repeats():
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(5)]
    labels = [Image.fromarray(np.full((16, 16), index % 3, np.uint8)) for index in range(5)]
    table = datasets.Dataset.from_dict({"image": images, "label": labels})
    source = from_hf_dataset(table.to_iterable_dataset(num_shards=1), "semantic", annotation_column="label",
                             id2label={0: "a", 1: "b", 2: "c"})  # fmt: skip
    dataset = make_eval_dataset(source)

    def image_sums(rank, world_size):
        loader = evaluation_dataloader(dataset, 2, rank, world_size)
        return [int(image.sum()) for batch in loader for image in batch["image"]]

    everything = image_sums(0, 1)
    shards = [image_sums(rank, 2) for rank in range(2)]
    assert len(everything) == 5 and sorted(shards[0] + shards[1]) == sorted(everything)
    assert shards[0] and shards[1]


# ---- memory ----


def live_tensor_bytes() -> int:
    """Bytes of every live CPU tensor storage (torch allocates them outside the Python heap). Fake tensors, which
    torch.export keeps from its last trace (tests/modeling exports a model), have no storage."""
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu" and not isinstance(obj, FakeTensor):
            storages[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
    return sum(storages.values())


class MemoryProbe(TrainerCallback):
    """Tensor memory and the Python heap (numpy buffers included: numpy reports them to tracemalloc) after the first
    and the last of `steps` prediction steps (scanning every object is slow)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.calls = steps, 0
        self.tensors, self.heap = [], []

    def on_prediction_step(self, args, state, control, **kwargs):
        self.calls += 1
        if self.calls in (1, self.steps):
            self.tensors.append(live_tensor_bytes())
            self.heap.append(tracemalloc.get_traced_memory()[0])


def probed_evaluation(tmp_path, model, dataset, **options) -> MemoryProbe:
    probe = MemoryProbe(steps=len(dataset) // 2)
    trainer = make_trainer(tmp_path, model, dataset, batch_size=2, callbacks=[probe], **options)
    tracemalloc.start()
    try:
        trainer.evaluate()
    finally:
        tracemalloc.stop()
    assert probe.calls == probe.steps
    return probe


def test_evaluation_memory_does_not_grow_with_the_number_of_images(synthetic_panoptic, tmp_path):
    source = make_eval_dataset(synthetic_panoptic[0], "val").source
    side = 64  # 50 queries x 16 x 16 mask logits: 51 KB per image, far above the noise of the Python heap
    model = tiny_segmentation_model(5, num_labels=8, image_size=side, num_queries=50)
    processor = EoMTImageProcessor(size=side, num_labels=8)
    n = 4
    # The same image over and over: every batch is identical, so any growth is accumulation.
    small = probed_evaluation(tmp_path, model, EvalDataset(source.select([0] * n)), processing_class=processor)
    large = probed_evaluation(tmp_path, model, EvalDataset(source.select([0] * 4 * n)), processing_class=processor)
    assert small.tensors[1] == small.tensors[0] and large.tensors[1] == large.tensors[0] == small.tensors[0]  # not a byte
    extra_heap = (large.heap[-1] - large.heap[0]) - (small.heap[-1] - small.heap[0])
    logits_per_image = model.config.num_queries * (side // 4) ** 2 * 4  # float32 mask logits of one image
    print(f"tensors {small.tensors} / {large.tensors} B; heap growth {small.heap[1] - small.heap[0]} B over {n} images, "
          f"{large.heap[1] - large.heap[0]} B over {4 * n}")  # fmt: skip
    assert extra_heap < 3 * n * logits_per_image / 8  # Python-object noise of the libraries (a few KB per image)

    # Control: Trainer's own loop with compute_metrics keeps every batch's logits, and the probe sees it.
    examples = SegmentationExamples(count=n, size=side)
    default = probed_evaluation(tmp_path, model, examples, processing_class=None, compute_metrics=lambda prediction: {})
    print(f"Trainer's loop: tensors {default.tensors} B")
    assert default.tensors[-1] - default.tensors[0] >= (n - 2) * logits_per_image


class CountForwards(TrainerCallback):
    def __init__(self) -> None:
        self.steps = 0

    def on_prediction_step(self, args, state, control, **kwargs):
        self.steps += 1


def test_evaluation_reports_a_threshold_sweep_from_one_forward_pass(synthetic_panoptic, tmp_path):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    model = tiny_model(dataset.info.num_labels, seed=5)
    forwards = []
    model.register_forward_hook(lambda *args: forwards.append(1))
    metrics = make_trainer(tmp_path, model, dataset, eval_loss=False).evaluate()
    assert len(forwards) == 2  # 4 images in batches of 3: one pass per batch, not one per threshold
    assert SWEEP_THRESHOLDS == (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
    for threshold in SWEEP_THRESHOLDS:
        expected = direct_metrics(model, processor_for(dataset.info), dataset, threshold=threshold)
        for name in ("pq", "pq_things", "pq_stuff"):
            assert metrics[f"eval_{name}@{threshold:g}"] == pytest.approx(expected[name], nan_ok=True)
    assert metrics["eval_pq"] == metrics["eval_pq@0.8"]  # the default threshold is the authors' 0.8
    assert metrics["eval_threshold"] == 0.8


def test_evaluation_uses_the_post_processing_settings_of_the_processor(synthetic_panoptic):
    dataset, examples, _, _, outputs = oracle_case(synthetic_panoptic)
    results = {}
    for threshold in (0.6, 0.8):
        evaluator = SegmentationEvaluator(dataset.info, processor_for(dataset.info, threshold=threshold))
        inputs = evaluator.preprocess(examples, with_targets=False)
        evaluator.add(outputs, inputs["original_sizes"], examples)
        results[threshold] = evaluator.compute()
        assert results[threshold]["threshold"] == results[threshold]["calibration"]["threshold"] == threshold
    assert results[0.6]["pq"] == results[0.6]["pq@0.6"] > results[0.8]["pq"] == results[0.6]["pq@0.8"]
    processor = processor_for(dataset.info, threshold=0.6, overlap_mask_area_threshold=0.3)
    evaluator = SegmentationEvaluator(dataset.info, processor)
    assert evaluator.postprocess_kwargs["overlap_mask_area_threshold"] == 0.3
    overridden = SegmentationEvaluator(dataset.info, processor, {"threshold": 0.8, "overlap_mask_area_threshold": 0.5})
    assert (overridden.threshold, overridden.overlap) == (0.8, 0.5)  # given post-processing arguments win


def test_the_overlap_sweep_equals_evaluations_at_each_setting(synthetic_panoptic):
    dataset, examples, processor, inputs, outputs = oracle_case(synthetic_panoptic)
    # shrink every mask: a third of the segments' pixels lose to an empty query with a higher score
    outputs["masks_queries_logits"][:, -1, :, : SIZE // 3] = 20.0
    outputs["class_queries_logits"][:, -1] = torch.log(torch.tensor([0.99] + [0.01 / 8] * 8))
    grid = SegmentationEvaluator(dataset.info, processor, sweep_thresholds=(0.4, 0.8), sweep_overlaps=(0.3, 0.8))
    grid.add(outputs, inputs["original_sizes"], examples)
    sweep = grid.compute()["calibration"]["sweep"]
    assert list(sweep) == ["0.4/0.3", "0.4/0.8", "0.8/0.3", "0.8/0.8"]
    for key, value in sweep.items():
        threshold, overlap = map(float, key.split("/"))
        alone = SegmentationEvaluator(dataset.info, processor, {"threshold": threshold, "overlap_mask_area_threshold":
                                      overlap}, sweep_thresholds=())  # fmt: skip
        alone.add(outputs, inputs["original_sizes"], examples)
        assert value == pytest.approx(alone.compute()["pq"], nan_ok=True)
    assert sweep["0.4/0.3"] > sweep["0.4/0.8"]  # segments that lost a third of their mask survive only at 0.3


@pytest.mark.parametrize(
    "sweep, expected",
    [
        ({"0.3/0.8": 61.1, "0.5/0.8": 60.9, "0.6/0.8": 60.8, "0.7/0.8": 51.7, "0.8/0.8": 44.9}, (0.6, 0.8)),  # 61.1-0.5
        ({"0.3/0.8": 76.8, "0.5/0.8": 76.6, "0.7/0.8": 76.2, "0.8/0.8": 75.6}, (0.5, 0.8)),  # 0.7 is 0.6 below the best
        ({"0.3/0.8": 36.3, "0.7/0.8": 36.4, "0.8/0.8": 36.6}, (0.8, 0.8)),  # the highest is the best
        ({"0.5/0.8": 40.0, "0.8/0.8": 39.6}, (0.8, 0.8)),  # 0.4 better only: noise, the authors' settings stay
        ({"0.7/0.6": 40.9, "0.7/0.4": 41.1, "0.8/0.6": 38.2, "0.8/0.8": 36.3, "0.3/0.4": 40.8}, (0.7, 0.6)),
        ({"0.5/0.8": float("nan"), "0.8/0.8": 10.0, "0.8/0.4": None}, (0.8, 0.8)),  # NaN and None are ignored
    ],
)
def test_choose_postprocessing_takes_the_highest_settings_within_the_margin_of_the_best(sweep, expected):
    choice = choose_postprocessing(sweep, current=(0.8, 0.8))
    assert (choice.threshold, choice.overlap_mask_area_threshold) == expected
    assert choice.reason.startswith(f"threshold {expected[0]:g}, mask overlap {expected[1]:g}: PQ ")
    assert (" against " in choice.reason) == (expected != (0.8, 0.8))


def test_choose_postprocessing_without_a_finite_pq_is_none():
    assert choose_postprocessing({}) is None
    assert choose_postprocessing({"0.5/0.8": float("nan")}) is None


def test_calibration_saves_the_chosen_settings_and_reports_the_metrics_at_them(synthetic_panoptic, tmp_path):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    trainer = make_trainer(tmp_path, tiny_model(dataset.info.num_labels, seed=5), dataset, eval_loss=False,
                           sweep_overlaps=(0.5, 0.8))  # fmt: skip
    trainer.save_model(str(tmp_path))
    first = trainer.evaluate()
    assert len(trainer.eval_calibration["sweep"]) == len(SWEEP_THRESHOLDS) * 2
    trainer.eval_calibration["sweep"] = {"0.5/0.5": 30.0, "0.8/0.8": 30.0}
    assert calibrate_postprocessing(trainer, first, tmp_path) is first  # the best is the authors': nothing moves
    assert trainer.eval_calibration["chosen"]["threshold"] == 0.8
    saved = EoMTImageProcessor.from_pretrained(tmp_path)
    assert (saved.threshold, saved.overlap_mask_area_threshold) == (0.8, 0.8)

    grid = {"0.5/0.5": 40.0, "0.5/0.8": 35.0, "0.8/0.5": 20.0, "0.8/0.8": 10.0}
    trainer.eval_calibration["sweep"] = grid
    metrics = calibrate_postprocessing(trainer, first, tmp_path)
    saved = EoMTImageProcessor.from_pretrained(tmp_path)
    assert (saved.threshold, saved.overlap_mask_area_threshold) == (0.5, 0.5)
    assert metrics["eval_threshold"] == 0.5 and metrics["eval_overlap_mask_area_threshold"] == 0.5  # evaluated again
    assert trainer.eval_calibration["threshold"] == 0.5 and trainer.sweep_overlaps == ()
    assert trainer.eval_calibration["chosen"] == {
        "threshold": 0.5, "overlap_mask_area_threshold": 0.5, "sweep": grid,
        "reason": "threshold 0.5, mask overlap 0.5: PQ 40.0 on the evaluation split against 10.0 at 0.8 / 0.8 (the "
                  "highest settings within 0.5 PQ of the best, 40.0)",
    }  # fmt: skip
    assert metrics["eval_pq"] == metrics["eval_pq@0.5"]
    evaluated = evaluate(str(tmp_path), str(synthetic_panoptic[0]), workers=0, use_cpu=True, progress=False)
    assert evaluated["eval_threshold"] == evaluated["eval_overlap_mask_area_threshold"] == 0.5  # eomt evaluate uses them
    assert evaluated["eval_pq"] == metrics["eval_pq"]


def oracle_outputs(examples, scores):
    """Model outputs that segment the ground truth of `examples` exactly at the model input (32 px): one query per
    segment (mask logits +-20), the segment's class with probability `scores[i % len(scores)]`, then empty queries."""
    queries = max(len(info) for info in examples["segments_info"]) + 1
    class_logits = torch.full((len(examples["image"]), queries, 9), -30.0)
    class_logits[..., -1] = 30.0  # "no object"
    mask_logits = torch.full((len(examples["image"]), queries, SIZE, SIZE), -20.0)
    for image, (segmentation, segments) in enumerate(zip(examples["segmentation"], examples["segments_info"])):
        resized = torch.nn.functional.interpolate(torch.as_tensor(segmentation)[None, None].float(), size=(SIZE, SIZE),
                                                  mode="nearest")[0, 0]  # fmt: skip
        for query, segment in enumerate(segments):
            score = scores[query % len(scores)]
            class_logits[image, query] = torch.log(torch.full((9,), (1 - score) / 8))
            class_logits[image, query, segment["label_id"]] = float(np.log(score))
            mask_logits[image, query][resized == segment["id"]] = 20.0
    return {"class_queries_logits": class_logits, "masks_queries_logits": mask_logits}


def oracle_case(synthetic_panoptic):
    """The validation split of `synthetic_panoptic` as one batch: dataset, examples, the default processor, its model
    inputs and `oracle_outputs` with class scores 0.45, 0.65 and 0.95."""
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    examples = collate_eval([dataset[index] for index in range(len(dataset))])
    processor = processor_for(dataset.info)
    inputs = SegmentationEvaluator(dataset.info, processor).preprocess(examples, with_targets=False)
    outputs = oracle_outputs(examples, scores=(0.45, 0.65, 0.95))
    return dataset, examples, processor, inputs, outputs


def test_sweep_pq_equals_the_pq_of_an_evaluation_at_that_threshold(synthetic_panoptic):
    dataset, examples, processor, inputs, outputs = oracle_case(synthetic_panoptic)
    sweep = SegmentationEvaluator(dataset.info, processor, sweep_thresholds=(0.4, 0.6, 0.9))
    sweep.add(outputs, inputs["original_sizes"], examples)
    results = sweep.compute()
    assert [key for key in results if key.startswith("pq@")] == ["pq@0.4", "pq@0.6", "pq@0.8", "pq@0.9"]
    values = []
    for threshold in (0.4, 0.6, 0.8, 0.9):
        alone = SegmentationEvaluator(dataset.info, processor, {"threshold": threshold}, sweep_thresholds=())
        alone.add(outputs, inputs["original_sizes"], examples)
        expected = alone.compute()
        for name in ("pq", "pq_things", "pq_stuff"):
            assert results[f"{name}@{threshold:g}"] == pytest.approx(expected[name], nan_ok=True)
        values.append(expected["pq"])
    assert values[0] > values[1] > values[3] > 0  # fewer segments survive higher thresholds
    assert results["pq"] == results["pq@0.8"] == values[2]


def test_a_class_without_predictions_above_the_threshold_is_named(synthetic_panoptic, tmp_path, caplog):
    dataset = make_eval_dataset(synthetic_panoptic[0], "val")
    model = tiny_model(dataset.info.num_labels, seed=5)
    with torch.no_grad():  # every query predicts "box" with probability ~0.6 and "no object" with the rest
        model.class_predictor.weight.zero_()
        model.class_predictor.bias.fill_(-20.0)
        model.class_predictor.bias[CLASS_NAMES.index("box")] = 0.0
        model.class_predictor.bias[-1] = -0.45
    with caplog.at_level("WARNING", logger="training.trainer"):
        trainer = make_trainer(tmp_path, model, dataset, eval_loss=False)
        trainer.evaluate()
    calibration = trainer.eval_calibration
    assert calibration["threshold"] == 0.8
    assert calibration["above_threshold"]["box"] == 0 and calibration["best_score"]["box"] == pytest.approx(0.65)
    assert calibration["above_threshold"]["disc"] == 0 and calibration["best_score"]["disc"] == 0.0
    present = {name for name, counts in trainer.eval_per_class.items() if counts["tp"] + counts["fn"] > 0}
    assert "box" in present and set(calibration["silent_things"]) == present & {"disc", "box", "triangle", "cross"}
    assert "sky" in present and set(calibration["silent_stuff"]) == present & set(STUFF_CLASSES)  # none predicted
    messages = [record.getMessage() for record in caplog.records]
    assert any("thing class 'box' has no prediction with a class score above the threshold 0.8 (best score 0.65" in m
               for m in messages)  # fmt: skip
    assert any("stuff class 'sky' has no prediction with a class score above the threshold 0.8 (best score 0.00" in m
               for m in messages)  # fmt: skip
    assert len(messages) == len(calibration["silent_things"]) + len(calibration["silent_stuff"])


def test_class_scores_count_each_query_under_its_best_class():
    scores = ClassScores(num_labels=2, threshold=0.5, bins=10)
    logits = torch.log(torch.tensor([[[0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.2, 0.3, 0.5], [0.45, 0.4, 0.15]]]))
    scores.update(logits)  # queries: class 0 at 0.9, class 1 at 0.6, "no object", class 0 at 0.45
    result = scores.compute()
    assert result["above_threshold"] == [1, 1]
    assert result["best_score"] == pytest.approx([1.0, 0.7])  # upper edges of the bins of 0.9 and 0.6
    assert scores.histogram[0].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
