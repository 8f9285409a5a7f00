"""Two-way rename tables: template expansion, fusion and splitting, missing and unexpected keys, and every format's
table read in both directions."""

import pytest
import torch

from modeling_eomt import EoMTForUniversalSegmentation
from modeling_eomt.checkpoints.backbones import backbone_rows
from modeling_eomt.checkpoints.loading import SEGMENTATION_ONLY_PREFIXES
from modeling_eomt.checkpoints.original import original_table
from modeling_eomt.checkpoints.renaming import RenameTable, map_rows
from modeling_eomt.checkpoints.transformers_eomt import transformers_eomt_table
from tests.modeling.helpers import perturb_, tiny_config

ROWS = [
    ("blocks.{i}.norm.{p}", "layers.{i}.norm.{p}"),
    (("blocks.{i}.q", "blocks.{i}.k", "blocks.{i}.v"), "layers.{i}.qkv"),
    ("head.{j}.weight", "upscale.{j}.weight"),
    ("blocks.{i}.k_bias", None),
]


def test_rows_expand_for_every_block_and_parameter():
    pairs = RenameTable(ROWS, num_layers=2, num_upscale_blocks=1).pairs
    assert ("blocks.1.norm.bias",) in [theirs for theirs, _ in pairs]
    assert (("blocks.0.q", "blocks.0.k", "blocks.0.v"), "layers.0.qkv") in pairs
    assert (("head.0.weight",), "upscale.0.weight") in pairs
    assert len(pairs) == 2 * 2 + 2 + 1 + 2  # norm weight/bias per block, qkv per block, one upscale, key biases


def test_both_directions_fuse_and_split():
    table = RenameTable(ROWS, num_layers=1, num_upscale_blocks=1)
    theirs = {
        "blocks.0.norm.weight": torch.ones(2), "blocks.0.norm.bias": torch.zeros(2), "head.0.weight": torch.rand(3),
        "blocks.0.q": torch.full((1, 2), 1.0), "blocks.0.k": torch.full((1, 2), 2.0), "blocks.0.v": torch.full((1, 2), 3.0),
        "blocks.0.k_bias": torch.zeros(2),
    }  # fmt: skip
    ours = table.to_ours(theirs).check("test")
    assert sorted(ours) == ["layers.0.norm.bias", "layers.0.norm.weight", "layers.0.qkv", "upscale.0.weight"]
    assert ours["layers.0.qkv"][:, 0].tolist() == [1.0, 2.0, 3.0]  # concatenated in the row's order
    back = table.to_theirs(ours).check("test")
    assert back.keys() == theirs.keys() - {"blocks.0.k_bias"}  # the zero key bias is not stored, not written
    assert all(torch.equal(back[key], theirs[key]) for key in back)


def test_missing_unexpected_and_non_zero_key_bias_are_named():
    table = RenameTable(ROWS, num_layers=1)
    renamed = table.to_ours({"blocks.0.q": torch.zeros(1), "blocks.0.k": torch.zeros(1), "extra": torch.zeros(1)})
    assert renamed.unexpected == ["extra"] and "blocks.0.v" in renamed.missing and "layers.0.qkv" not in renamed.state
    with pytest.raises(ValueError, match=r"^where: missing keys \['blocks\.0\.norm\.bias', .*; unexpected keys \['extra'\]"):
        renamed.check("where")
    with pytest.raises(ValueError, match=r"blocks\.0\.k_bias is non-zero but the config has key_bias=False"):
        table.to_ours({"blocks.0.k_bias": torch.ones(2)})
    assert table.to_theirs({"other": torch.zeros(1)}).missing[:1] == ["layers.0.norm.weight"]


def test_map_rows_renames_one_side():
    rows = map_rows(ROWS[:2], lambda key: "net." + key, lambda key: "eomt." + key)
    assert rows[1] == (("net.blocks.{i}.q", "net.blocks.{i}.k", "net.blocks.{i}.v"), "eomt.layers.{i}.qkv")
    assert map_rows(ROWS[3:], str.upper) == [("BLOCKS.{I}.K_BIAS", None)]


@pytest.mark.parametrize("variant", ["dinov2", "dinov2-registers-swiglu", "dinov3", "dinov3-gated"])
def test_every_format_table_reads_back_what_it_writes(variant):
    """Each format's table is a bijection on the tensors that format has: ours -> theirs -> ours is the identity."""
    model = perturb_(EoMTForUniversalSegmentation(tiny_config(variant)))
    ours = model.state_dict()
    config = model.config
    model_type = "dinov3_vit" if config.position_embedding_type == "rope" else "dinov2_with_registers"
    tables = {
        "transformers": transformers_eomt_table(config),
        "original": original_table(config),
        "backbone": RenameTable(backbone_rows(model_type, config), config.num_hidden_layers),
    }
    for name, table in tables.items():
        written = table.to_theirs(ours)
        assert not written.missing, name
        not_in_format = [key for key in written.unexpected if not key.startswith(("eomt.query.", *SEGMENTATION_ONLY_PREFIXES))]
        assert not not_in_format and (name == "backbone") == bool(written.unexpected), name  # a backbone has no heads
        read = table.to_ours(written.state).check(name)
        assert read.keys() == ours.keys() - set(written.unexpected), name
        assert all(torch.equal(read[key], ours[key]) for key in read), name
