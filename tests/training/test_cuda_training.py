"""A training step on CUDA (masked attention, deep supervision, the loss, backward) computes what it computes on the CPU
(marked `cuda`: skipped without a GPU; benchmarks/gpu_check.sh runs it)."""

import copy

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation
from tests.modeling.helpers import perturb_, tiny_config
from training.loss import MaskClassificationLoss


def loss_and_gradients(model, pixel_values, masks, classes):
    """The total loss of one forward pass (every prediction level) and the gradients by parameter name."""
    criterion = MaskClassificationLoss(model.config.num_labels, num_points=None)  # every pixel: deterministic
    model.zero_grad(set_to_none=True)
    outputs = model(pixel_values)
    loss = criterion(
        outputs.masks_queries_logits, outputs.class_queries_logits, masks, classes,
        outputs.intermediate_masks_queries_logits, outputs.intermediate_class_queries_logits,
    )[0]  # fmt: skip
    loss.backward()
    return loss.item(), {name: parameter.grad.cpu() for name, parameter in model.named_parameters()}


@pytest.mark.cuda
def test_training_step_on_cuda_matches_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # float32 convolutions, as on the CPU
    model = perturb_(EoMTForUniversalSegmentation(tiny_config())).train()
    model.set_attn_mask_probs(1.0)  # every query masked: no random draws
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, 64, 64, generator=generator)
    masks = [torch.rand(3, 64, 64, generator=generator) > 0.5 for _ in range(2)]
    classes = [torch.randint(0, model.config.num_labels, (3,), generator=generator) for _ in range(2)]

    cpu_loss, cpu_gradients = loss_and_gradients(model, pixel_values, masks, classes)
    on_cuda = copy.deepcopy(model).cuda()
    cuda_loss, cuda_gradients = loss_and_gradients(
        on_cuda, pixel_values.cuda(), [m.cuda() for m in masks], [c.cuda() for c in classes]
    )
    assert cuda_loss == pytest.approx(cpu_loss, rel=1e-4)
    for name, gradient in cpu_gradients.items():
        torch.testing.assert_close(cuda_gradients[name], gradient, atol=1e-4, rtol=1e-3, msg=name)
