"""The CLI skeleton: help, version, info, and clean one-line errors."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from latentlab import Glow, GlowConfig, __version__, save_model
from latentlab.cli.app import app

runner = CliRunner()


def test_help_and_version():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "info" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_info_shows_config_and_parameters(tmp_path):
    torch.manual_seed(0)
    model = Glow(GlowConfig(image_size=8, levels=2, steps=1, width=4))
    save_model(model, tmp_path / "run", step=3, metrics={"val_bpd": 4.25})
    result = runner.invoke(app, ["info", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    n_params = sum(p.numel() for p in model.parameters())
    assert f"{n_params:,}" in result.output and "4.2500" in result.output
    # 8 px, 2 levels: 6 channels on a 4x4 grid split off, then 24 on 2x2 at the top; 96 + 96 = 3 * 8 * 8
    assert "1 4x4: 6x4x4 = 96" in result.output and "2 2x2 (top): 24x2x2 = 96" in result.output


def test_info_on_missing_and_corrupt_checkpoints_is_one_line(tmp_path):
    result = runner.invoke(app, ["info", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "no model checkpoint" in result.stderr and "Traceback" not in result.output + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 3)
    result = runner.invoke(app, ["info", str(bad)])
    assert result.exit_code == 1 and "bad.safetensors" in result.stderr


def test_debug_shows_the_exception(tmp_path):
    result = runner.invoke(app, ["--debug", "info", str(tmp_path / "nothing")])
    assert result.exit_code != 0 and result.exception is not None


def test_every_command_has_help_with_examples():
    names = [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands]
    assert {"train", "sample", "evaluate", "encode", "attribute-vectors", "manipulate", "interpolate"} <= set(names)
    for name in names:
        result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "120"})
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"{name} --help has no examples"


SHIPPED_PRESETS = ["celeba32", "celeba64", "celebahq256", "glowjax64", "toy32"]


def test_shipped_presets_are_package_data_and_all_load():
    from importlib import resources

    from latentlab.config import available_presets, load_preset

    shipped = resources.files("latentlab") / "presets"
    assert sorted(f.name for f in shipped.iterdir() if f.name.endswith(".toml")) == [
        f"{p}.toml" for p in SHIPPED_PRESETS
    ]
    assert available_presets() == SHIPPED_PRESETS
    sizes = {name: load_preset(name).model.image_size for name in SHIPPED_PRESETS}
    assert sizes == {"celeba32": 32, "celeba64": 64, "celebahq256": 256, "glowjax64": 64, "toy32": 32}


def test_presets_in_the_models_folder_override_shipped_ones_by_name(tmp_path, monkeypatch):
    from latentlab.config import available_presets, load_preset

    mine = tmp_path / "my-models"
    monkeypatch.setenv("LATENTLAB_MODELS", str(mine))
    (mine / "a-run.toml").mkdir(parents=True)  # a folder is not a preset, whatever its name
    (mine / "toy32.toml").write_text("[model]\nwidth = 24\n[train]\nbatch_size = 4\n")
    (mine / "tiny.toml").write_text("[model]\nimage_size = 16\nlevels = 2\n")
    assert available_presets() == sorted([*SHIPPED_PRESETS, "tiny"])
    toy = load_preset("toy32")
    assert (toy.model.width, toy.batch_size, toy.model.image_size) == (24, 4, 32)
    assert load_preset("tiny").model.image_size == 16
    assert load_preset(str(mine / "tiny.toml")) == load_preset("tiny")
    assert load_preset("celeba64").model.width == 256  # shipped ones the folder does not name stay

    result = runner.invoke(app, ["train", "--preset", "tiny2"])
    assert result.exit_code == 1 and "tiny2" in result.stderr
    assert "celeba64, celebahq256, glowjax64, tiny, toy32" in result.stderr


def test_a_broken_preset_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENTLAB_MODELS", str(tmp_path))
    (tmp_path / "broken.toml").write_text("[model\nwidth = 8\n")
    (tmp_path / "extra.toml").write_text("[model]\nwidth = 8\n[optimizer]\nlr = 1\n")
    for name, expected in (("broken", "not valid TOML"), ("extra", "unknown section(s) optimizer")):
        result = runner.invoke(app, ["train", "--preset", name])
        assert result.exit_code == 1 and expected in result.stderr, result.output + result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_command_modules_import_common_never_the_app():
    """The app imports every command module; a command module importing the app back would close a circle."""
    import ast
    from pathlib import Path

    import latentlab.cli

    for path in Path(latentlab.cli.__file__).parent.glob("*.py"):
        if path.name == "app.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(name.startswith("latentlab.cli.app") for name in names), f"{path.name} imports the app"
