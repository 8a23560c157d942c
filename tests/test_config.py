"""One home for settings: presets as data, the merge order, config.yaml and its replay, and the layout.

Covers the run-layer redesign: every recipe x default dataset resolves and prints its
configuration; the max_steps bug (a preset's epochs cutting a max_steps run short) stays fixed;
a run's config.yaml replays it; the package's import graph points downward with no cycles;
``import lightning_dlstrat`` stays light; and every deployable architecture round-trips through
the Hub format.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from typer.testing import CliRunner

from _helpers import ROOT, SMALL, run_dir_of, run_dirs
from lightning_dlstrat import hub
from lightning_dlstrat.cli import app
from lightning_dlstrat.config import read_config_file, resolve
from lightning_dlstrat.core import DlstratError
from lightning_dlstrat.recipes import RECIPES, fit, get_recipe

runner = CliRunner()
PACKAGE = ROOT / "lightning_dlstrat"


# --- presets and the merge order ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_prints_its_resolved_config(name, tmp_path):
    recipe = RECIPES[name]
    result = runner.invoke(app, ["fit", "--model", name, "--print-config", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load(result.output)
    assert cfg["model"]["name"] == name and cfg["data"]["name"] == recipe.default_data
    preset = recipe.preset_for(recipe.default_data)
    for section in ("model", "data", "trainer"):
        for key, value in preset.get(section, {}).items():  # the preset is applied ...
            assert cfg[section][key] == value, (section, key)
    module_args = set(cfg["model"]) - {"name"}  # ... over every argument of the module
    assert module_args <= set(RECIPES[name].module.__init__.__code__.co_varnames)
    assert not list(tmp_path.iterdir())  # printing the config trains nothing and writes nothing


def test_preset_epochs_never_cut_a_max_steps_run_short():
    gan = get_recipe("gan")
    assert resolve(gan).trainer["max_epochs"] == 300  # the digits preset
    only_steps = resolve(gan, flags={"trainer": {"max_steps": 5000}})
    assert only_steps.trainer == {"max_steps": 5000}  # no preset max_epochs=300 beside it
    from_file = resolve(gan, {"trainer": {"max_steps": 5000}}, {})
    assert "max_epochs" not in from_file.trainer
    both = resolve(gan, flags={"trainer": {"max_steps": 5000}, "max_epochs": 2})
    assert both.trainer == {"max_steps": 5000, "max_epochs": 2}


class _LastLearningRates(L.Callback):
    def on_train_end(self, trainer, pl_module):
        self.lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        self.steps = trainer.global_step


@pytest.mark.parametrize("trainer,steps", [({"max_steps": 12}, 12), ({"max_steps": 10_000, "max_epochs": 2, "limit_train_batches": 4}, 8)])
def test_gan_schedule_reads_the_real_stopping_point(tmp_path, trainer, steps):
    """The linear decay reaches 0 exactly where the Trainer stops, whichever of max_steps / max_epochs ends it."""
    seen = _LastLearningRates()
    fit("gan", data="ring8", out=str(tmp_path), trainer={**trainer, "callbacks": [seen], "enable_progress_bar": False})
    assert seen.steps == steps
    assert seen.lrs == [0.0, 0.0]


def test_cosine_schedules_plan_over_max_steps(tmp_path):
    """mlp with only max_steps: the cosine schedule ends at 0 at that step, not at a preset's 30 epochs."""
    seen = _LastLearningRates()
    fit("mlp", out=str(tmp_path), trainer={"max_steps": 30, "callbacks": [seen], "enable_progress_bar": False})
    # 21 batches an epoch: 30 steps end in the 2nd epoch, and the per-epoch cosine over 2 epochs is at 0 then
    assert seen.steps == 30 and seen.lrs[0] == pytest.approx(5e-4)  # half-way: epoch 1 of 2 of the cosine
    assert "max_epochs" not in yaml.safe_load((run_dirs(tmp_path)[0] / "config.yaml").read_text())["trainer"]


def test_merge_order_module_preset_file_flags(tmp_path):
    darts = get_recipe("darts")
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text("model: {name: darts, C: 6, lr: 0.05}\ntrainer: {max_epochs: 3}\nseed: 4\n")
    cfg = resolve(darts, read_config_file(cfg_file), {"model": {"lr": 0.07}, "seed": 5})
    assert cfg.model_args["C"] == 6  # file over preset (8)
    assert cfg.model_args["layers"] == 5  # preset over the module's default (8)
    assert cfg.model_args["lr"] == 0.07  # flags over file
    assert cfg.model_args["steps"] == 4  # the module's default
    assert cfg.trainer["max_epochs"] == 3 and cfg.seed == 5 and cfg.data_args["seed"] == 5


def test_bad_values_are_refused_before_anything_runs():
    mlp = get_recipe("mlp")
    for flags, message in [
        ({"model": {"lr": "abc"}}, "--model.lr must be a number"),
        ({"data": {"batch_size": 0}}, "batch_size must be a positive integer"),
        ({"data": {"val_fraction": 2}}, "val_fraction must be in [0, 1)"),
        ({"max_epochs": -1}, "max_epochs=-1 trains forever unless max_steps is set"),
        ({"max_epochs": 0}, "max_epochs must be at least 1"),
        ({"devices": 0}, "devices=0 runs on nothing"),
        ({"seed": "abc"}, "seed must be an integer"),
        ({"trainer": {"logger": "tensorbored"}}, "unknown logger 'tensorbored'"),
    ]:
        with pytest.raises(DlstratError, match=message.replace("[", r"\[").replace(")", r"\)")):
            resolve(mlp, flags=flags)
    assert resolve(mlp, flags={"max_epochs": -1, "trainer": {"max_steps": 5}}).trainer == {"max_epochs": -1, "max_steps": 5}


# --- config.yaml: written by every run, replayed by --config ----------------------------------------
@pytest.mark.slow
def test_config_yaml_replays_the_run(tmp_path):
    args = ["fit", "--model", "darts", "--max-epochs", "1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2", "--seed", "3"]
    first = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    run_a = run_dir_of(first.output)
    cfg = yaml.safe_load((run_a / "config.yaml").read_text())
    assert cfg["model"]["name"] == "darts" and cfg["model"]["C"] == 8 and cfg["data"]["bilevel"] is True and cfg["seed"] == 3
    again = runner.invoke(app, ["fit", "--config", str(run_a / "config.yaml"), "--out", str(tmp_path / "b")])
    assert again.exit_code == 0, again.output
    run_b = run_dir_of(again.output)
    a, b = (json.loads((r / "summary.json").read_text()) for r in (run_a, run_b))
    assert a["genotype"] == b["genotype"] and a["test_metrics"] == b["test_metrics"]
    assert (run_b / "config.yaml").read_text().replace(str(tmp_path / "b"), "") == (run_a / "config.yaml").read_text().replace(str(tmp_path / "a"), "")


def test_darts_net_config_holds_the_genotype_itself(tmp_path):
    """config.yaml keeps the cell's text (it replays anywhere); summary.json says which file it came from."""
    search = tmp_path / "search"
    from lightning_dlstrat.spaces.darts.genotype import DARTS_V1

    DARTS_V1.save(search / "genotype.json")
    result = runner.invoke(app, ["fit", "--model", "darts-net", "--genotype", str(search), "--print-config"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.output)["model"]["genotype"] == str(DARTS_V1)


# --- layout: imports point downward ------------------------------------------------------------------
LAYERS = {  # a module may import only from its own layer or below
    "core": 0, "layers": 1, "hub": 1, "data": 1, "models": 2, "spaces": 2, "gan_losses": 2, "diffaugment": 2, "metrics": 3, "cost": 3, "latency": 3, "viz": 3, "methods": 3, "cuda_graph": 4,
    "trainers": 4, "config": 5, "trainer_specs": 5, "run": 6, "study": 6, "recipes": 7, "zoo": 8, "timm_models": 8, "export": 9, "inference": 9,
    "export_formats": 9, "testing": 9, "pipeline": 9, "cli": 10, "lightning_cli": 10,
    "__main__": 11, "_timm_hook": 0, "__init__": 0,  # the package root: __version__ and lazy names (imported by name, not statements)
}


def package_imports() -> dict[str, set[str]]:
    """Module (dotted, relative to the package) -> the package modules it imports, at any depth of the file."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(rel.parts)
        package = rel.parts[:-1] if rel.name != "__init__" else rel.parts[:-1]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                if node.module is None:
                    found |= {".".join(target + [a.name]) for a in node.names}
                else:
                    found.add(".".join(target))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for mod in [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]:
                    if mod.startswith("lightning_dlstrat."):
                        found.add(mod.removeprefix("lightning_dlstrat."))
        graph[name] = {normal(f) for f in found if f} - {name}
    return graph


def normal(target: str) -> str:
    """``"data"`` -> ``"data"`` (a package), ``"models.gan"`` (a file); a name inside a module -> that module."""
    parts = target.split(".")
    while parts and not ((PACKAGE / Path(*parts)).is_dir() or (PACKAGE / Path(*parts)).with_suffix(".py").is_file()):
        parts = parts[:-1]
    return ".".join(parts) or "__init__"


def layer_of(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def test_imports_point_downward_and_have_no_cycles():
    graph = package_imports()
    assert graph["core"] == set()  # the foundation imports nothing of the package
    for module, targets in graph.items():
        if module.split(".")[0] in ("__init__", "__main__"):
            continue
        for target in targets:
            assert layer_of(target) <= layer_of(module), f"{module} imports {target}, which sits above it"
    for module in (m for m in graph if m.startswith(("models", "spaces"))):
        assert not {t for t in graph[module] if t.split(".")[0] in ("methods", "trainers", "recipes", "run", "config", "cli")}, module

    def resolve_module(name: str) -> str:  # "models.gan" may name a package's __init__
        return name if name in graph else f"{name}.__init__" if f"{name}.__init__" in graph else name

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in map(resolve_module, graph.get(node, ())):
            if nxt not in graph or nxt.split(".")[0] in ("__init__",):
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(stack + [nxt])
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state and not module.startswith("__init__"):
            visit(module, [module])


@pytest.mark.slow
def test_import_is_light_and_timm_finds_the_models_either_way():
    light = subprocess.run(
        [sys.executable, "-c", "import sys, lightning_dlstrat; print(sorted(m for m in ('torch', 'lightning', 'timm', 'torchmetrics') if m in sys.modules))"],
        capture_output=True, text=True, timeout=120,
    )
    assert light.returncode == 0 and light.stdout.strip() == "[]", light.stderr
    for order in ("import lightning_dlstrat, timm", "import timm, lightning_dlstrat"):
        script = f"{order}; m = timm.create_model('darts_net', genotype='DARTS_V2', C=4, layers=3, num_classes=3); print(type(m).__name__, sorted(timm.list_models('dlstrat*')))"
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "DARTSNetwork ['dlstrat_mlp']"


# --- one registry of deployable architectures (SMALL: their small settings, in _helpers.py) ----------------
def test_every_architecture_has_a_round_trip_case():
    import lightning_dlstrat.models  # noqa: F401  (registers them all)
    import lightning_dlstrat.spaces  # noqa: F401

    assert set(hub.architectures()) == set(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_architectures_round_trip_through_the_hub_format(name, tmp_path):
    import lightning_dlstrat.models  # noqa: F401
    import lightning_dlstrat.spaces  # noqa: F401

    cls = hub.architectures()[name]
    torch.manual_seed(0)
    net = cls(**SMALL[name]).eval()
    net.save_pretrained(tmp_path / name)
    config = json.loads((tmp_path / name / "config.json").read_text())
    assert config["architecture"] == name == cls.architecture and cls.kind in hub.KINDS
    loaded = cls.from_pretrained(tmp_path / name)
    if cls.kind == "classifier":
        inputs = (torch.randn(3, *(net.in_shape if hasattr(net, "in_shape") else (1, 8, 8))),)
    else:  # generators: latents, and labels for the conditional ones
        inputs = (torch.randn(3, net.latent_dim),) + ((torch.tensor([0, 1, 2]),) if "num_classes" in SMALL[name] else ())
    with torch.no_grad():
        assert torch.equal(loaded(*inputs), net(*inputs))
    other = next(c for n, c in hub.architectures().items() if n != name)
    with pytest.raises(hub.HubError, match=f"holds a {cls.__name__}"):
        other.from_pretrained(tmp_path / name)


def test_presets_are_data_shipped_with_the_package():
    presets = sorted(p.stem for p in (PACKAGE / "recipes" / "presets").glob("*.yaml"))
    assert presets == sorted(RECIPES)
    assert not [p for p in (PACKAGE / "trainers").glob("*.py") if "PRESETS" in p.read_text() or "DEFAULT_EPOCHS" in p.read_text()]


def test_zoo_has_one_home(tmp_path):
    from lightning_dlstrat import zoo

    assert zoo.zoo_root().resolve() == (ROOT / "zoo").resolve() or (zoo.zoo_root() / "mlp-digits" / "config.json").is_file()
    assert not (PACKAGE / "zoo_models").exists()
    assert sorted(zoo.entries()) == sorted(p.parent.name for p in (ROOT / "zoo").glob("*/config.json"))
    assert Path(zoo.entries()["mlp-digits"].folder, "config.json").is_file()


def test_the_wheel_lists_every_package_folder():
    """pyproject.toml names its packages one by one: a new folder (a new search space) must be listed, or the wheel lacks it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert folders <= listed, sorted(folders - listed)
