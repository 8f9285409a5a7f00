"""One rank of the multi-process test (`test_multiprocess.py` starts it with `accelerate launch`): a short `eomt train`
run through `training.run.train`; every rank writes `rank{i}.json` with a checksum of its final weights and the
metrics it reports.

Usage: accelerate launch --multi_gpu --num_processes 2 tests/training/multiprocess_train.py DATA OUT
"""

import hashlib
import json
import os
import sys
from pathlib import Path

import torch

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from transformers import TrainerCallback  # noqa: E402

from training.annealing import unwrap_model  # noqa: E402
from training.launch import end_process_group  # noqa: E402
from training.run import train  # noqa: E402
from training.settings import TrainSettings  # noqa: E402

# The tiny model of the CLI tests, trained for a few steps on the generated set.
TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "num_register_tokens": 0}


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in unwrap_model(model).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class RecordWeights(TrainerCallback):
    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.checksum = weights_checksum(model)
        self.world_size = args.world_size


def main(data: str, output_dir: str) -> None:
    torch.set_num_threads(1)
    record = RecordWeights()
    settings = TrainSettings(
        data=data, output_dir=output_dir, size="S", model_config=TINY, image_size=32, num_queries=6, num_blocks=2,
        max_steps=8, batch_size=2, eval_batch_size=2, learning_rate=1e-3, head_warmup_steps=1, backbone_warmup_steps=1,
        logging_steps=2, save_steps=100, workers=0, use_cpu=True, progress=False, seed=3,
    )  # fmt: skip
    metrics = train(settings, callbacks=[record])
    rank = int(os.environ.get("RANK", 0))
    result = {"rank": rank, "world_size": record.world_size, "checksum": record.checksum, "metrics": metrics}
    Path(output_dir, f"rank{rank}.json").write_text(json.dumps(result))
    end_process_group()  # as `eomt` does after its command


if __name__ == "__main__":
    main(*sys.argv[1:3])
