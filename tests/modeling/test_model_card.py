"""The model card written with every `save_pretrained` / `push_to_hub`: Hub metadata that `huggingface_hub` parses
(`ModelCard`, `metadata_load`, model-index results), the training summary, and a user's own README left alone."""

import logging

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import EntryNotFoundError
from huggingface_hub.repocard import metadata_load

from modeling_eomt.model_card import MARKER
from tests.training.helpers import single_thread, tiny_segmentation_model  # noqa: F401 (fixture)

SUMMARY = {
    "base_model": "facebook/dinov2-with-registers-small",
    "dataset": {"name": "someone/coco-subset", "task": "panoptic", "train_split": "train", "eval_split": "validation"},
    "recipe": {"steps": 30, "learning_rate": 0.001, "mask_annealing": "block i from 0.17 to 0.33 ... of the run"},
    "eval_results": {"pq": 41.25, "sq": 77.5, "rq": 50.0, "loss": 3.2},
}


def test_save_pretrained_writes_a_card_the_hub_parses(tmp_path):
    model = tiny_segmentation_model()
    model.config.training_summary = SUMMARY
    model.save_pretrained(tmp_path)
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-segmentation"
    assert {"eomt", "panoptic-segmentation", "custom_code"} <= set(metadata["tags"])
    assert metadata["base_model"] == SUMMARY["base_model"] and metadata["datasets"] == ["someone/coco-subset"]
    card = ModelCard.load(tmp_path / "README.md")
    results = {result.metric_type: result for result in card.data.eval_results}
    assert {key: result.metric_value for key, result in results.items()} == {"pq": 41.25, "sq": 77.5, "rq": 50.0}
    assert results["pq"].dataset_name == "someone/coco-subset" and results["pq"].dataset_split == "validation"
    text = card.text
    assert "learning rate: 0.001" in text and "mask annealing: block i" in text and "PQ 41.25" in text
    assert "trust_remote_code=True" in text and "import modeling_eomt" in text and str(tmp_path) in text


def test_a_model_without_training_summary_gets_a_plain_card(tmp_path):
    tiny_segmentation_model().save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.eval_results is None and card.data.base_model is None
    assert "## Training" not in card.text and "4 classes" in card.text


def test_a_users_own_readme_is_kept(tmp_path, caplog):
    (tmp_path / "README.md").write_text("# My model\n\nMy notes.\n")
    with caplog.at_level(logging.WARNING, logger="modeling_eomt.model_card"):
        tiny_segmentation_model().save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# My model\n\nMy notes.\n"
    assert "not written by eomt-transformers" in caplog.text
    tiny_segmentation_model().save_pretrained(tmp_path / "again")
    tiny_segmentation_model().save_pretrained(tmp_path / "again")  # a generated card is replaced
    assert MARKER in (tmp_path / "again" / "README.md").read_text()


class FakeHub:
    """Stands in for the Hub: `create_repo`, the repo's card (absent, or `card`) and the uploaded files."""

    def __init__(self, monkeypatch, card: str | None):
        self.uploaded: dict[str, bytes] = {}

        class Repo:
            repo_id = "someone/eomt-tiny"

        def load(repo_id_or_path, **kwargs):
            if str(repo_id_or_path).endswith("README.md"):
                return ModelCard(open(repo_id_or_path).read())
            if card is None:
                raise EntryNotFoundError("no README.md")
            return ModelCard(card)

        def upload(model, folder, repo_id, timestamps, **kwargs):
            from pathlib import Path

            self.uploaded = {path.name: path.read_bytes() for path in Path(folder).iterdir()}
            return "commit"

        monkeypatch.setattr("huggingface_hub.HfApi.create_repo", lambda self, *args, **kwargs: Repo())
        monkeypatch.setattr("huggingface_hub.ModelCard.load", load)
        monkeypatch.setattr(type(tiny_segmentation_model()), "_upload_modified_files", upload)


def test_push_to_hub_uploads_the_code_and_a_card_for_the_repo(monkeypatch):
    fake = FakeHub(monkeypatch, card=None)
    model = tiny_segmentation_model()
    model.config.training_summary = SUMMARY
    assert model.push_to_hub("someone/eomt-tiny", tags=["my-tag"]) == "commit"
    assert {"config.json", "model.safetensors", "modeling_eomt.py", "image_processing_eomt.py", "README.md"} <= set(fake.uploaded)
    card = ModelCard(fake.uploaded["README.md"].decode())
    assert 'model="someone/eomt-tiny"' in card.text and "my-tag" in card.data.tags
    assert card.data.eval_results[0].metric_value in (41.25, 77.5, 50.0)


def test_push_to_hub_keeps_the_repos_own_card(monkeypatch, caplog):
    fake = FakeHub(monkeypatch, card="---\nlicense: mit\n---\n# Hand-written\n")
    with caplog.at_level(logging.WARNING, logger="modeling_eomt.hub"):
        tiny_segmentation_model().push_to_hub("someone/eomt-tiny")
    assert "Hand-written" in fake.uploaded["README.md"].decode() and "README.md of its own" in caplog.text


@pytest.mark.parametrize("name, expected", [("facebook/dinov2-small", True), ("/abs/path", False), ("runs/x/y", False)])
def test_hub_ids_are_told_from_paths(name, expected):
    from modeling_eomt.model_card import is_hub_id

    assert is_hub_id(name) is expected
