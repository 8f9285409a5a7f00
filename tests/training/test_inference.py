"""`training.inference`: segment areas and boxes, and the model's forward per dtype (the files it writes are checked
through `eomt predict` in `tests/training/commands/test_predict.py`; inputs and the output store in
`test_prediction_inputs.py` and `test_prediction_store.py`)."""

import numpy as np
import pytest
import torch

from tests.training.helpers import tiny_inference_model
from training.inference import prepare_model, segment_areas_and_boxes


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_prepare_model_runs_half_precision_with_enable_fast_inference(dtype):
    torch.manual_seed(0)
    model = tiny_inference_model("dinov3")
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        reference = model(pixel_values).masks_queries_logits
    half = prepare_model(model, torch.device("cpu"), dtype)(pixel_values).masks_queries_logits
    assert half.dtype == torch.float32 and not torch.equal(half, reference)  # computed in `dtype`, returned in float32
    assert model.inference_dtype == dtype  # model.enable_fast_inference(dtype)
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())  # weights stay float32
    tolerance = 0.05 if dtype == torch.bfloat16 else 0.01  # 8 vs 11 mantissa bits
    assert (half.float() - reference).abs().mean() < tolerance * reference.abs().mean()
    full = prepare_model(model, torch.device("cpu"), torch.float32)(pixel_values).masks_queries_logits
    assert torch.equal(full, reference)


def test_segment_areas_and_boxes():
    id_map = np.zeros((5, 7), dtype=np.int64)
    id_map[1:3, 2:6] = 1
    id_map[4, 0] = 3
    areas, boxes = segment_areas_and_boxes(id_map, 4)
    assert areas.tolist() == [26, 8, 0, 1]
    assert boxes.tolist() == [[0, 0, 7, 5], [2, 1, 4, 2], [0, 0, 0, 0], [0, 4, 1, 1]]
