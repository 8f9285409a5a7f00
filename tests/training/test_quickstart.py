"""The README's first command (without the install step)."""

import numpy as np
from PIL import Image

from training.commands import main


def test_quickstart_writes_overlay_and_reloadable_model(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "reload identical: True" in printed
    overlay = Image.open(tmp_path / "quickstart.png")
    assert overlay.format == "PNG" and overlay.height == 128 and overlay.width > 128  # image + legend
    assert len(np.unique(np.asarray(overlay).reshape(-1, 3), axis=0)) > 10
    assert (tmp_path / "model" / "model.safetensors").is_file()
