"""The `accelerate launch` configurations in examples/accelerate/ (used by the README) load with accelerate's own
config loader and set what matters for `eomt train`."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from modeling_eomt import EoMTForUniversalSegmentation
from tests.modeling.helpers import tiny_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "accelerate"
NAMES = ["ddp_multi_gpu.yaml", "multi_node.yaml", "fsdp.yaml", "deepspeed_zero2.yaml"]


def load(name: str):
    return load_config_from_file(str(EXAMPLES / name))


def test_the_examples_are_the_ones_the_readme_uses():
    assert sorted(path.name for path in EXAMPLES.glob("*.yaml")) == sorted(NAMES)
    readme = (ROOT / "README.md").read_text()
    for name in NAMES:
        assert f"--config_file examples/accelerate/{name}" in readme, name


@pytest.mark.parametrize("name", NAMES)
def test_every_example_runs_one_process_per_gpu_on_gpus(name):
    config = load(name)
    assert config.compute_environment.value == "LOCAL_MACHINE"
    assert not config.use_cpu
    assert config.num_processes > 1 and config.num_processes % config.num_machines == 0  # processes on every machine
    assert config.mixed_precision in ("no", "bf16")  # bf16 goes with eomt train's --bf16


def test_ddp_on_one_and_on_two_machines():
    single, multi = load("ddp_multi_gpu.yaml"), load("multi_node.yaml")
    assert single.distributed_type == multi.distributed_type == DistributedType.MULTI_GPU
    assert single.num_machines == 1
    assert multi.num_machines == 2 and multi.machine_rank == 0  # the main machine; --machine_rank 1 on the other
    assert multi.main_process_ip and isinstance(multi.main_process_port, int)


def test_fsdp_wraps_each_transformer_block():
    config = load("fsdp.yaml")
    assert config.distributed_type == DistributedType.FSDP
    fsdp = config.fsdp_config
    block = type(EoMTForUniversalSegmentation(tiny_config()).eomt.layers[0]).__name__
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert fsdp["fsdp_transformer_layer_cls_to_wrap"] == block
    assert block in EoMTForUniversalSegmentation._no_split_modules  # what transformers wraps by default too
    assert fsdp["fsdp_sharding_strategy"] == "FULL_SHARD"
    assert fsdp["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # the saved model loads with from_pretrained


def test_deepspeed_zero2_takes_accumulation_and_clipping_from_eomt_train():
    config = load("deepspeed_zero2.yaml")
    assert config.distributed_type == DistributedType.DEEPSPEED
    deepspeed = config.deepspeed_config
    assert deepspeed["zero_stage"] == 2
    # "auto": filled from --grad-accum and --max-grad-norm; a number here could contradict them
    assert deepspeed["gradient_accumulation_steps"] == deepspeed["gradient_clipping"] == "auto"
    assert deepspeed["offload_optimizer_device"] == deepspeed["offload_param_device"] == "none"
