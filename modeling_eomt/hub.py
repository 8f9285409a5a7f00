"""The installed package's additions to the EoMT models' Hub methods (`EoMTHubMixin`): reading transformers' own EoMT
checkpoints in `from_pretrained`, and writing the remote code, `auto_map` and the model card with every
`save_pretrained` / `push_to_hub`. The remote-code copy of the model leaves this module out (the mixin is an empty
stand-in there, see `image_processing.remote_code`): it reads this package's format and writes no card."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from image_processing.remote_code import MODEL_AUTO_MAP, MODEL_MODULES, PROCESSOR_MODULES, point_auto_map, write_remote_code

from .checkpoints.transformers_eomt import load_transformers_eomt
from .model_card import CARD_NAME, is_generated, write_model_card

logger = logging.getLogger(__name__)

# `save_pretrained` keyword arguments that only concern pushing to the Hub.
PUSH_KWARGS = ("repo_id", "commit_message", "commit_description", "private", "create_pr", "revision", "tags")


class EoMTHubMixin:
    """Mixed into `EoMTPreTrainedModel` before `PreTrainedModel`."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, **kwargs: Any):
        """A checkpoint saved by transformers' `EomtForUniversalSegmentation` / `EomtDinov3ForUniversalSegmentation`
        (model types `eomt`, `eomt_dinov3`) is converted on the fly; anything else goes to `PreTrainedModel`."""
        if "config" not in kwargs:
            options = {key: value for key, value in kwargs.items() if key != "output_loading_info"}
            loaded = load_transformers_eomt(cls, pretrained_model_name_or_path, **options)
            if loaded is not None:
                return loaded if kwargs.get("output_loading_info") else loaded[0]
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, push_to_hub: bool = False, **kwargs: Any):
        """`PreTrainedModel.save_pretrained`, plus the remote code (with `auto_map` in `config.json`) and the model card
        (`README.md`, unless the folder holds a user's own); with `push_to_hub` all of it is uploaded."""
        hub_kwargs = {key: kwargs.pop(key) for key in PUSH_KWARGS if key in kwargs}
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **MODEL_AUTO_MAP}
        super().save_pretrained(save_directory, *args, **kwargs)
        if not kwargs.get("is_main_process", args[0] if args else True):
            return
        write_remote_code(save_directory, MODEL_MODULES + PROCESSOR_MODULES)  # `auto_map` names the processor too
        point_auto_map(save_directory)
        write_model_card(self.config, save_directory)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", Path(save_directory).name)
            push_folder(self, save_directory, repo_id, token=kwargs.get("token"), **hub_kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = "50GB",
        tags: list[str] | None = None,
    ) -> Any:
        """Upload the model as `save_pretrained` writes it (weights, remote code, model card) to `repo_id`. A README
        in the repo that this package did not write is kept (with a warning), not replaced."""
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size)
            return push_folder(self, folder, repo_id, token=token, private=private, commit_message=commit_message,
                               commit_description=commit_description, revision=revision, create_pr=create_pr,
                               tags=tags)  # fmt: skip


def push_folder(
    obj: Any,
    folder: str | os.PathLike,
    repo_id: str,
    token: bool | str | None = None,
    private: bool | None = None,
    tags: list[str] | None = None,
    commit_message: str | None = None,
    **upload_kwargs: Any,
) -> Any:
    """Upload every file of `folder` to `repo_id` (created if needed) with `obj._upload_modified_files`; the card is
    the folder's, with the model card written for the repo, unless the repo has a README of its own."""
    from huggingface_hub import HfApi, ModelCard
    from huggingface_hub.errors import EntryNotFoundError

    repo_id = HfApi().create_repo(repo_id, token=token, private=private, exist_ok=True).repo_id
    card_path = Path(folder) / CARD_NAME
    try:
        existing = ModelCard.load(repo_id, token=token)
    except EntryNotFoundError:
        existing = None
    if existing is not None and not is_generated(existing.content):
        logger.warning("%s has a README.md of its own: kept (no model card uploaded)", repo_id)
        existing.save(card_path)
    elif card_path.is_file() and is_generated(card_path.read_text(encoding="utf-8")):
        write_model_card(obj.config, folder, repo=repo_id)  # the snippets name the repo
    if tags and card_path.is_file():
        card = ModelCard.load(card_path)
        card.data.tags = list(dict.fromkeys([*(card.data.tags or []), *tags]))
        card.save(card_path)
    return obj._upload_modified_files(folder, repo_id, {}, commit_message=commit_message, token=token, **upload_kwargs)
