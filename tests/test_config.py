"""Presets: typed loading, one-line errors naming file/key/type, overrides, round trip."""
from __future__ import annotations

import dataclasses

import pytest

from core.config import Config, config_to_dict, load_preset, preset_names, save_preset
from core.errors import UserError


def test_shipped_presets_load():
    assert {"preview", "standard", "paper"} <= set(preset_names())
    for name in preset_names():
        config = load_preset(name)
        assert isinstance(config, Config) and config.name == name


def test_paper_preset_has_the_papers_numbers():
    c = load_preset("paper")
    assert c.avatar.num_gaussians == 167000
    assert (c.avatar.triplane_channels, c.avatar.triplane_resolution, c.avatar.triplane_extent) == (32, 128, 2.0)
    assert (c.avatar.mlp_width, c.avatar.mlp_layers, c.avatar.offset_scale) == (128, 3, 0.01)
    assert c.render.rasterize_mode == "antialiased" and c.render.eps2d == 0.1
    assert c.sampling.photo_share == 0.5 and c.sampling.seam_threshold == 0.02
    assert c.loss.photo.image_refined == 0.1 and c.loss.generated.hand_mask == 50.0
    assert c.loss.laplacian_offsets == 1e6 and c.loss.laplacian_refined_offsets == 1e5
    assert c.optim.eps == 1e-15 and c.optim.decay_at == 0.75
    assert c.train.iterations == 9000 and c.train.batch_size == 1


def test_preview_is_smaller_than_paper():
    preview, paper = load_preset("preview"), load_preset("paper")
    assert preview.avatar.num_gaussians < paper.avatar.num_gaussians
    assert preview.train.iterations < paper.train.iterations


def _write(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


def test_unknown_key_names_file_and_key(tmp_path):
    path = _write(tmp_path, "[train]\niterashuns = 5\n")
    with pytest.raises(UserError) as err:
        load_preset(path)
    msg = str(err.value)
    assert str(path) in msg and "train.iterashuns" in msg and "\n" not in msg


def test_wrong_type_names_expected_type(tmp_path):
    path = _write(tmp_path, '[train]\niterations = "many"\n')
    with pytest.raises(UserError, match=r"train\.iterations' must be an integer"):
        load_preset(path)
    path = _write(tmp_path, "[ablation]\npose_offsets = 1\n")
    with pytest.raises(UserError, match="must be a boolean"):
        load_preset(path)
    path = _write(tmp_path, "train = 3\n")
    with pytest.raises(UserError, match="must be a table"):
        load_preset(path)


def test_int_is_accepted_for_float(tmp_path):
    path = _write(tmp_path, "[loss.photo]\nimage = 2\n")
    assert load_preset(path).loss.photo.image == 2.0


def test_bad_toml_and_bad_choice(tmp_path):
    with pytest.raises(UserError, match="not valid TOML"):
        load_preset(_write(tmp_path, "[train\n"))
    with pytest.raises(UserError, match="render.backend' must be one of"):
        load_preset(_write(tmp_path, '[render]\nbackend = "vulkan"\n'))
    with pytest.raises(UserError, match="train.device' must be one of auto, cpu, cuda"):
        load_preset("preview", ["train.device=gpu"])
    with pytest.raises(UserError, match="unknown preset"):
        load_preset("no-such-preset")


def test_overrides():
    c = load_preset("preview", ["train.iterations=7", "render.backend=cpu", "loss.generated.depth=0.5",
                                "frames.motions=['wave']", "ablation.pose_offsets=false"])
    assert c.train.iterations == 7 and c.render.backend == "cpu"
    assert c.loss.generated.depth == 0.5 and c.frames.motions == ["wave"] and c.ablation.pose_offsets is False
    for bad, pattern in (("train.iterations=lots", "must be an integer"), ("train.nope=1", "unknown key 'train.nope'"),
                         ("train", "section.key=value"), ("loss.photo=1", "is a section"),
                         ("train.iterations=0", "must be positive")):
        with pytest.raises(UserError, match=pattern):
            load_preset("preview", [bad])


def test_save_round_trip(tmp_path):
    c = load_preset("paper", ["train.seed=3"])
    out = tmp_path / "saved.toml"
    save_preset(c, out)
    again = load_preset(out)
    assert config_to_dict(again) == config_to_dict(c)


def test_a_nested_table_changes_only_the_keys_it_names(tmp_path):
    """``[loss.generated]`` with one key keeps the generated frames' other weights (hand mask 50, strong
    geometry), not the plain ``FrameLossWeights`` defaults: the shipped presets lower only the RGB and normals."""
    default = Config().loss.generated
    path = tmp_path / "p.toml"
    path.write_text("[loss.generated]\nimage = 0.2\n")
    loaded = load_preset(path).loss.generated
    assert loaded.image == 0.2
    assert loaded == dataclasses.replace(default, image=0.2)
    assert load_preset("preview").loss.generated.hand_mask == default.hand_mask == 50.0
    assert load_preset("standard").loss.photo == Config().loss.photo
