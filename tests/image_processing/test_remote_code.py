"""Checkpoints carry their own code: a folder written by `save_pretrained` loads with `trust_remote_code=True` in a
Python where this package cannot be imported (a subprocess without it on its path), and gives the installed package's
outputs exactly; with the package imported nothing changes; missing or edited code files give clear errors."""

import json
import re
import site
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForUniversalSegmentation, pipeline
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

from image_processing import EoMTImageProcessor
from image_processing.remote_code import (
    MODEL_MODULES,
    PROCESSOR_MODULES,
    PROJECT_PACKAGES,
    RemoteCodeError,
    flat_name,
    remote_code_files,
)
from modeling_eomt import EoMTForUniversalSegmentation
from tests.training.helpers import random_targets, single_thread, tiny_segmentation_model  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")

# Run in a subprocess whose `sys.path` holds the installed libraries but not this package (no `.pth` files are read:
# the editable install's finder is one). Writes the outputs of every Auto class and the pipeline to `results.pt`.
REMOTE_SCRIPT = r'''
import json, sys
paths, folder, out = json.loads(sys.argv[1])
sys.path.extend(paths)
try:
    import modeling_eomt
except ImportError:
    pass
else:
    raise SystemExit("the package is importable: the test would not show anything")
import numpy as np, torch
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForUniversalSegmentation, pipeline

torch.set_num_threads(1)
results = {}
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
results["config"] = {key: getattr(config, key) for key in ("model_type", "num_labels", "hidden_size", "category_ids")}
model = AutoModelForUniversalSegmentation.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
encoder = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
results["classes"] = [type(thing).__module__ + "." + type(thing).__name__ for thing in (config, model, processor, encoder)]
image = Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))
inputs = processor(images=[image], return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
    results["encoder"] = encoder(inputs["pixel_values"]).last_hidden_state
results["pixel_values"] = inputs["pixel_values"]
results["class_logits"], results["mask_logits"] = outputs.class_queries_logits, outputs.masks_queries_logits
results["panoptic"] = processor.post_process_panoptic_segmentation(outputs, target_sizes=[(40, 56)], threshold=0.0)[0]["segmentation"]
targets = torch.load(out + ".targets.pt")
model.train()
torch.manual_seed(0)
results["loss"] = model(inputs["pixel_values"], mask_labels=targets[0], class_labels=targets[1]).loss.detach()
model.eval()
segments = pipeline("image-segmentation", model=folder, trust_remote_code=True)(image, subtask="panoptic", threshold=0.0)
results["pipeline"] = [(segment["label"], round(segment["score"], 6), torch.from_numpy(np.array(segment["mask"]))) for segment in segments]
processor.save_pretrained(folder + "-processor")  # a processor alone, from its remote class
results["alone"] = AutoImageProcessor.from_pretrained(folder + "-processor", trust_remote_code=True)(images=[image], return_tensors="pt")["pixel_values"]
model.save_pretrained(folder + "-again")  # transformers copies the flat files of the remote module
again = AutoModelForUniversalSegmentation.from_pretrained(folder + "-again", trust_remote_code=True).eval()
with torch.no_grad():
    results["again"] = again(inputs["pixel_values"]).class_queries_logits
torch.save(results, out)
'''


def run_without_package(code: str, *args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess:
    """Run `code` with `python -I -S` (no user site, no `.pth` files, not the repo on its path) plus the installed
    libraries' folders, offline, with `args` as `sys.argv[1:]`."""
    paths = [path for path in site.getsitepackages() if Path(path).is_dir()]
    environment = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-I", "-S", "-c", code, json.dumps([paths, *args])]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory):
    """A tiny model (COCO-style category ids) and its processor saved with `save_pretrained`."""
    folder = tmp_path_factory.mktemp("remote") / "tiny-eomt"
    model = tiny_segmentation_model(category_ids=[1, 3, 7, 90]).eval()
    model.save_pretrained(folder)
    EoMTImageProcessor(size=64, num_labels=4).save_pretrained(folder)
    return folder


def test_the_generated_files_are_what_transformers_loader_follows(saved_folder):
    files = remote_code_files(MODEL_MODULES + PROCESSOR_MODULES)
    assert {"configuration_eomt.py", "modeling_eomt.py", "loss_eomt.py", "image_processing_eomt.py", "post_processing.py"} <= set(files)
    assert {path.name for path in saved_folder.glob("*.py")} == set(files)
    for name in ("modeling_eomt.py", "image_processing_eomt.py"):
        needed = {Path(path).name for path in get_relative_import_files(saved_folder / name)}
        assert needed <= set(files) and needed, name
    for name, source in files.items():
        assert (saved_folder / name).read_text() == source  # written as generated
        assert not set(get_imports(saved_folder / name)) & set(PROJECT_PACKAGES), name  # no absolute project import
        assert not re.search(r"^\s*from \.\S*\.", source, flags=re.MULTILINE), name  # flat relative imports only
        compile(source, name, "exec")
    assert "class EoMTHubMixin:" in files["modeling_eomt.py"]  # the package's Hub integration is left out
    assert "load_transformers_eomt" not in files["modeling_eomt.py"]
    config = json.loads((saved_folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForUniversalSegmentation"] == "modeling_eomt.EoMTForUniversalSegmentation"
    assert config["auto_map"]["AutoImageProcessor"] == "image_processing_eomt.EoMTImageProcessor"
    processor = json.loads((saved_folder / "preprocessor_config.json").read_text())
    assert "auto_map" not in processor and "image_processor_type" not in processor  # the model config's auto_map rules


def test_a_processor_saved_alone_carries_its_own_auto_map(tmp_path):
    EoMTImageProcessor(size=48).save_pretrained(tmp_path)
    processor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_eomt.EoMTImageProcessor"}
    assert {path.name for path in tmp_path.glob("*.py")} == set(remote_code_files(PROCESSOR_MODULES))
    assert AutoImageProcessor.from_pretrained(tmp_path).size == {"shortest_edge": 48, "longest_edge": 48}


def test_flat_names_and_unsupported_imports():
    assert flat_name("modeling_eomt.modeling_eomt") == "modeling_eomt"
    assert flat_name("image_processing.post_processing.panoptic") == "post_processing_panoptic"
    with pytest.raises(RemoteCodeError, match="not a module inside"):
        flat_name("torch.nn")


def test_a_python_without_the_package_loads_the_folder_and_gives_identical_outputs(saved_folder, tmp_path):
    model = EoMTForUniversalSegmentation.from_pretrained(saved_folder).eval()
    processor = EoMTImageProcessor.from_pretrained(saved_folder)
    targets = random_targets([2], 64, 64, seed=5)
    out = tmp_path / "results.pt"
    torch.save(targets, str(out) + ".targets.pt")
    done = run_without_package(REMOTE_SCRIPT, str(saved_folder), str(out), cwd=tmp_path, home=tmp_path / "home")
    assert done.returncode == 0, done.stderr[-3000:]
    remote = torch.load(out)
    assert all(name.startswith("transformers_modules.") for name in remote["classes"]), remote["classes"]
    assert remote["config"] == {"model_type": "eomt_vit", "num_labels": 4, "hidden_size": 32, "category_ids": [1, 3, 7, 90]}

    image = Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))
    inputs = processor(images=[image], return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
        encoder = model.eomt(inputs["pixel_values"]).last_hidden_state
    panoptic = processor.post_process_panoptic_segmentation(outputs, target_sizes=[(40, 56)], threshold=0.0)[0]
    model.train()
    torch.manual_seed(0)
    loss = model(inputs["pixel_values"], mask_labels=targets[0], class_labels=targets[1]).loss.detach()
    model.eval()
    segments = pipeline("image-segmentation", model=str(saved_folder))(image, subtask="panoptic", threshold=0.0)
    local = {
        "pixel_values": inputs["pixel_values"], "class_logits": outputs.class_queries_logits,
        "mask_logits": outputs.masks_queries_logits, "encoder": encoder, "panoptic": panoptic["segmentation"],
        "loss": loss, "again": outputs.class_queries_logits, "alone": inputs["pixel_values"],
    }  # fmt: skip
    differences = {name: (remote[name].double() - value.double()).abs().max().item() for name, value in local.items()}
    print("remote-code round trip, max |difference|:", differences)
    assert max(differences.values()) == 0.0, differences
    assert len(remote["pipeline"]) == len(segments) > 0
    for (label, score, mask), segment in zip(remote["pipeline"], segments):
        assert (label, score) == (segment["label"], round(segment["score"], 6))
        assert np.array_equal(mask.numpy(), np.asarray(segment["mask"]))


def test_with_the_package_imported_the_installed_classes_load_without_trust_remote_code(saved_folder, monkeypatch):
    def no_prompt(*args):
        raise AssertionError("transformers asked whether to trust the remote code")

    monkeypatch.setattr("builtins.input", no_prompt)
    config = AutoConfig.from_pretrained(saved_folder)
    model = AutoModelForUniversalSegmentation.from_pretrained(saved_folder)
    processor = AutoImageProcessor.from_pretrained(saved_folder)
    assert type(model) is EoMTForUniversalSegmentation and type(processor) is EoMTImageProcessor
    assert type(config).__module__ == "modeling_eomt.configuration_eomt"
    segmenter = pipeline("image-segmentation", model=str(saved_folder))
    assert type(segmenter.model) is EoMTForUniversalSegmentation


def edit(folder: Path, name: str, old: str, new: str) -> None:
    path = folder / name
    source = path.read_text()
    assert old in source
    path.write_text(source.replace(old, new))


CHECK_SCRIPT = r'''
import json, sys
paths, folder = json.loads(sys.argv[1])
sys.path.extend(paths)
from transformers import AutoModelForUniversalSegmentation
AutoModelForUniversalSegmentation.from_pretrained(folder, trust_remote_code=True)
'''


def test_missing_or_edited_code_files_are_clear_errors(saved_folder, tmp_path):
    import shutil

    missing_main, missing_helper, edited = (tmp_path / name for name in ("missing-main", "missing-helper", "edited"))
    for folder in (missing_main, missing_helper, edited):
        shutil.copytree(saved_folder, folder)
    (missing_main / "modeling_eomt.py").unlink()
    (missing_helper / "fast_paths.py").unlink()
    edit(edited, "modeling_eomt.py", "self.fc3 = nn.Linear(dim, dim)", "self.fc4 = nn.Linear(dim, dim)")
    edit(edited, "modeling_eomt.py", "self.fc3(", "self.fc4(")
    expected = {
        missing_main: r"modeling_eomt\.py",
        missing_helper: r"fast_paths\.py",
        edited: r"checkpoint does not match EoMTForUniversalSegmentation: missing keys .*mask_head\.fc4\.weight.*unexpected keys .*mask_head\.fc3\.weight",
    }
    for folder, message in expected.items():
        done = run_without_package(CHECK_SCRIPT, str(folder), cwd=tmp_path, home=tmp_path / "home")
        assert done.returncode != 0
        last_line = done.stderr.strip().splitlines()[-1]
        assert re.search(message, last_line), last_line
