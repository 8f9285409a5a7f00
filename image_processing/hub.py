"""The installed package's addition to `EoMTImageProcessor.save_pretrained`: the processor's remote code beside its
config, so that `AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)` works where this package is not
installed. Not part of that remote code (the mixin is an empty stand-in there; see `remote_code`)."""

from __future__ import annotations

import os
from typing import Any

from .remote_code import PROCESSOR_MODULES, point_auto_map, write_remote_code


class EoMTImageProcessorHubMixin:
    """Writes the remote code with the processor config (`save_pretrained`); `auto_map` as `point_auto_map` says."""

    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> list[str]:
        """`ImageProcessingMixin.save_pretrained`, plus the remote-code files (uploaded too with `push_to_hub`)."""
        hub_kwargs = {key: kwargs.pop(key) for key in ("repo_id", "commit_message", "private", "create_pr") if key in kwargs}
        files = super().save_pretrained(save_directory, **kwargs)
        files += [str(path) for path in write_remote_code(save_directory, PROCESSOR_MODULES)]
        point_auto_map(save_directory)
        if push_to_hub:
            repo_id = hub_kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
            commit_message = hub_kwargs.pop("commit_message", None)
            create_pr = hub_kwargs.pop("create_pr", False)
            from huggingface_hub import HfApi

            repo_id = HfApi().create_repo(repo_id, token=kwargs.get("token"), exist_ok=True, **hub_kwargs).repo_id
            self._upload_modified_files(save_directory, repo_id, {}, commit_message=commit_message,
                                        token=kwargs.get("token"), create_pr=create_pr)  # fmt: skip
        return files
