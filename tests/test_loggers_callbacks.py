"""Loggers and callbacks chosen the Lightning way: --trainer.logger and --trainer.callbacks.

TensorBoard is used for real: its event file must hold the same values at the same steps as the
run's metrics.csv, also after a resume. A missing extra, a class path that does not import, a class
that is not a Callback and the run's own checkpoint settings are refused before a run exists.
"""

import csv
import json
import os
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from _helpers import ROOT, assert_clean_failure, dlstrat, run_dir_of
from lightning_dlstrat.cli import app

runner = CliRunner()
TINY = ["--model", "mlp", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"]


def _csv_series(run_dir) -> dict[str, set[tuple[int, float]]]:
    """metrics.csv as {tag: {(step, value)}}."""
    series: dict[str, set] = {}
    with open(run_dir / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key not in ("epoch", "step") and value:
                    series.setdefault(key, set()).add((int(row["step"]), round(float(value), 5)))
    return series


def _tensorboard_series(folder) -> dict[str, set[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
    events.Reload()
    return {tag: {(e.step, round(e.value, 5)) for e in events.Scalars(tag)} for tag in events.Tags()["scalars"] if tag != "epoch"}


def test_tensorboard_logs_what_metrics_csv_logs_and_continues_on_resume(tmp_path):
    pytest.importorskip("tensorboard")  # in the test extra; the run would refuse cleanly without it (next test)
    first = runner.invoke(app, ["fit", *TINY, "--max-epochs", "1", "--trainer.logger=[csv,tensorboard]", "--out", str(tmp_path)])
    assert first.exit_code == 0, first.output
    run_dir = run_dir_of(first.output)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert _tensorboard_series(run_dir / "tensorboard") == _csv_series(run_dir)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["logger"] == ["csv", "tensorboard"]

    again = runner.invoke(app, ["fit", "--resume", str(run_dir), "--max-epochs", "2"])  # replays config.yaml, logger included
    assert again.exit_code == 0, again.output
    assert run_dir_of(again.output) == run_dir
    series = _tensorboard_series(run_dir / "tensorboard")
    assert series == _csv_series(run_dir)
    assert sorted(step for step, _ in series["val/loss"]) == [2, 5]  # both epochs, on Lightning's step axis
    assert "hp_metric" not in series  # no placeholder -1


@pytest.mark.parametrize("logger,package,extra", [("tensorboard", ("tensorboard", "tensorboardX"), "tensorboard"), ("[csv,wandb]", ("wandb",), "wandb"), ("mlflow", ("mlflow",), "mlflow")])
def test_a_missing_logger_package_names_the_extra(logger, package, extra, tmp_path, monkeypatch):
    for name in package:  # None in sys.modules: importing it fails, as when it is not installed
        monkeypatch.setitem(sys.modules, name, None)
    result = runner.invoke(app, ["fit", *TINY, "--max-epochs", "1", f"--trainer.logger={logger}", "--out", str(tmp_path)])
    assert_clean_failure(result, f'pip install "lightning-dlstrat[{extra}]"', tmp_path)
    assert not list(tmp_path.iterdir())


def test_callbacks_from_class_paths_with_init_args(tmp_path):
    callbacks = (
        "--trainer.callbacks=[{class_path: lightning.pytorch.callbacks.EarlyStopping, init_args: {monitor: val/loss, min_delta: 100, patience: 1}},"
        " {class_path: ModelCheckpoint, init_args: {monitor: val/acc, mode: max, save_top_k: 2}}, LearningRateMonitor]"
    )
    result = runner.invoke(app, ["fit", *TINY, "--max-epochs", "10", callbacks, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run_dir = run_dir_of(result.output)
    epochs = {int(r["epoch"]) for r in csv.DictReader(open(run_dir / "metrics.csv")) if r["val/loss"]}
    assert epochs == {0, 1}  # no epoch improves val/loss by 100: EarlyStopping ends the run after patience=1 epoch, not at 10
    assert any(r["lr-Adam"] for r in csv.DictReader(open(run_dir / "metrics.csv")))  # LearningRateMonitor, by its short name
    # the ModelCheckpoint entry set the run's own checkpoint: two best files by val/acc, and last.ckpt still there
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["best-epoch0-step3.ckpt", "best-epoch1-step6.ckpt", "last.ckpt"], names
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    assert any("'monitor': 'val/acc'" in key and "ModelCheckpoint" in key for key in state)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["best_checkpoint"].endswith(".ckpt") and "best-epoch" in summary["best_checkpoint"]
    replay = runner.invoke(app, ["fit", "--config", str(run_dir / "config.yaml"), "--print-config"])
    assert yaml.safe_load(replay.output)["trainer"]["callbacks"][0]["init_args"]["patience"] == 1


BAD = [
    ("--trainer.callbacks=[{class_path: torch.nn.Linear}]", "torch.nn.Linear is not a Lightning Callback"),
    ("--trainer.callbacks=[nope.module.Callback]", "cannot import nope.module"),
    ("--trainer.callbacks=[EarlyStoping]", "has no class EarlyStoping; did you mean: EarlyStopping?"),
    ("--trainer.callbacks=os.system", "os.system is not a Lightning Callback"),
    ("--trainer.callbacks={class_path: EarlyStopping, init_args: {monitr: val/loss}}", "EarlyStopping takes no argument 'monitr'"),
    ("--trainer.callbacks=EarlyStopping", "EarlyStopping needs monitor"),
    ("--trainer.callbacks={class_path: ModelCheckpoint, init_args: {dirpath: elsewhere}}", "ModelCheckpoint's dirpath is not a setting"),
    ("--trainer.callbacks=[{class_path: x.Y, args: 1}]", "needs a class_path and may have init_args"),
    ("--trainer.logger=tensorbored", "unknown logger 'tensorbored'"),
    ("--trainer.logger={class_path: CSVLogger, init_args: {save_dir: elsewhere}}", "its save_dir is not a setting"),
    ("--trainer.logger=[{class_path: lightning.pytorch.callbacks.EarlyStopping}]", "is not a Lightning Logger"),
    ("--trainer.default_root_dir=elsewhere", "is set by dlstrat fit itself"),
]


@pytest.mark.parametrize("flag,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_loggers_and_callbacks_exit_2_before_a_run_exists(flag, message, tmp_path):
    result = runner.invoke(app, ["fit", *TINY, flag, "--out", str(tmp_path)])
    assert_clean_failure(result, message, tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_class_of_the_standalone_package_is_named_as_such(tmp_path):
    pytest.importorskip("pytorch_lightning")  # only where both packages are installed can the two be mixed up
    result = runner.invoke(app, ["fit", *TINY, "--trainer.callbacks=pytorch_lightning.callbacks.EarlyStopping", "--out", str(tmp_path)])
    assert_clean_failure(result, "use lightning.pytorch.callbacks.EarlyStopping", tmp_path)


# --- class paths import nothing before they are checked (issue 23, item 12) ----------------------------
@pytest.mark.slow
def test_class_paths_of_the_standard_library_are_refused_before_they_are_imported(tmp_path):
    """Importing runs a module: `this` prints the Zen of Python, `unittest.__main__` runs unittest's CLI."""
    for flag in ("--trainer.callbacks=this.X", "--trainer.callbacks=[unittest.__main__.X]", "--trainer.logger={class_path: this.X}"):
        proc = dlstrat("fit", *TINY, flag, "--out", str(tmp_path), "--print-config")
        assert_clean_failure(proc, "names a module of Python's standard library", tmp_path)
        assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr and "Ran 0 tests" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_users_own_callback_is_imported_from_the_command_line_only(tmp_path):
    """A configuration file (written by anyone, or a run's config.yaml replayed) may name Lightning's
    callbacks and loggers only; the user's own module is imported when named on the command line."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mycallbacks.py").write_text(
        "import os\nimport lightning as L\n"
        "open(os.environ['IMPORTS'], 'a').write('imported\\n')\n"
        "class Mark(L.Callback):\n    def on_train_end(self, trainer, pl_module):\n        open(os.environ['IMPORTS'], 'a').write('trained\\n')\n"
    )
    imports = tmp_path / "imports.txt"
    env = {"PYTHONPATH": os.pathsep.join([str(package), str(ROOT)]), "IMPORTS": str(imports)}
    config = tmp_path / "run.yaml"
    config.write_text("model: mlp\ntrainer:\n  callbacks: [mycallbacks.Mark]\n")
    refused = dlstrat("fit", "--config", str(config), "--out", str(tmp_path / "runs"), env=env)
    assert_clean_failure(refused, "mycallbacks.Mark is not one of Lightning's callbacks (lightning.pytorch.callbacks); a class of another module is imported only when you name it on the command line", tmp_path / "runs")
    assert not imports.exists()  # refused before the module ran

    ran = dlstrat("fit", *TINY, "--max-epochs", "1", "--trainer.callbacks=[mycallbacks.Mark]", "--out", str(tmp_path / "runs"), env=env)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert imports.read_text() == "imported\ntrained\n"
    run_dir = run_dir_of(ran.stdout)
    replayed = dlstrat("fit", "--config", str(run_dir / "config.yaml"), "--print-config", env=env)
    assert_clean_failure(replayed, "mycallbacks.Mark is not one of Lightning's callbacks")
    again = dlstrat("fit", "--config", str(run_dir / "config.yaml"), "--trainer.callbacks=[mycallbacks.Mark]", "--print-config", env=env)
    assert again.returncode == 0, again.stderr[-2000:]  # named on the command line again: the user's choice
    assert imports.read_text().count("imported") == 2
