"""From search to a published model in one command (``dlstrat fit --model darts --retrain ...``, lightning_dlstrat/pipeline.py).

The reference run is one real ``dlstrat`` process that searches, retrains with two seeds, tests,
exports (Hub folder and ONNX) and pushes to the bundled Hub-compatible server; the tests read
what it left. A second chain of processes is killed (SIGTERM) in each stage and resumed, and must
end with the same weights and card metrics.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from typer.testing import CliRunner

from lightning_dlstrat.cli import app
from lightning_dlstrat.testing.hub_server import HubServer
from _helpers import assert_clean_failure, dlstrat, run_dir_of

runner = CliRunner()
REPO = "org/darts-digits-searched"
# a small search (C=4, 3 cells, 3 epochs), two retrain seeds of 2 epochs each, ONNX beside the Hub folder
TINY = ["fit", "--model", "darts", "--model.C=4", "--model.layers=3", "--max-epochs", "3", "--retrain", "--retrain-epochs", "2", "--retrain-seeds", "2", "--export", "onnx"]


def hub_env(server: HubServer, cache: Path) -> dict[str, str]:
    return {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": "test-token"}


@pytest.fixture(scope="module")
def server():
    hub = HubServer().start()
    yield hub
    hub.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, server):
    """The uninterrupted run: (its run directory, its output)."""
    out = tmp_path_factory.mktemp("reference")
    result = dlstrat(*TINY, "--push", REPO, "--out", str(out), env=hub_env(server, out / "cache"), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return run_dir_of(result.stdout), result.stdout


def card_metrics(folder: Path) -> dict[str, float]:
    card = ModelCard.load(folder / "README.md")
    return {f"{r.dataset_split} {r.metric_name}": r.metric_value for r in card.data.eval_results if r.metric_type != "latency"}  # latency: measured anew


@pytest.mark.slow
def test_one_command_searches_retrains_exports_and_pushes(reference, server):
    root, output = reference
    assert root.name.startswith("darts-digits-pipeline-") and (root.parent / "darts-digits-pipeline-latest").resolve() == root.resolve()
    assert {p.name for p in root.iterdir()} >= {"pipeline.json", "search", "retrain", "export", "push.json", "summary.json"}
    assert sorted(p.name for p in (root / "retrain").iterdir()) == ["seed-0", "seed-1"]
    hub = root / "export" / "hub"
    assert {"model.safetensors", "config.json", "README.md", "cell.png", "alpha.png", "alpha_history.png", "retrain_curves.png", "receipt.json"} <= {p.name for p in hub.iterdir()}
    assert (root / "export" / "model.onnx").is_file()
    summary = json.loads((root / "summary.json").read_text())
    seeds = [json.loads((root / "retrain" / f"seed-{s}" / "summary.json").read_text())["test_metrics"]["test/acc"] for s in (0, 1)]
    assert summary["test_over_seeds"]["test/acc"]["mean"] == pytest.approx(sum(seeds) / 2)
    assert summary["stages"]["search"]["genotype"] == json.loads((root / "search" / "summary.json").read_text())["genotype"]
    assert output.count("run directory: ") == 1 and f"run directory: {root}" in output  # one report, the pipeline's
    # the published weights are seed 0's best checkpoint
    ckpt = torch.load(root / "retrain" / "seed-0" / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    published = load_file(hub / "model.safetensors")
    assert published and all(torch.equal(published[k], ckpt[f"model.{k}"]) for k in published)

    # the card: a model card huggingface_hub parses back, with the receipt
    card = ModelCard.load(hub / "README.md")
    metrics = card_metrics(hub)
    assert metrics["test test accuracy, mean of 2 seeds"] == pytest.approx(round(sum(seeds) / 2, 4))
    assert metrics["test test accuracy"] == pytest.approx(round(seeds[0], 4))
    text = card.text
    for item in ("## How it was made", "Reproducibility receipt", "search method | `darts`", "splits (search) | train 647, architecture 647, val 144, test 359",
                 "seeds | search 0; retrain 0, 1", "search cost |", "3 epoch(s)", "FLOPs", "latency, torch", "latency, onnxruntime", "parameters",
                 "versions | lightning ", "torch 2.", "alpha_history.png", "retrain_curves.png", "cell.png", "Genotype(normal="):
        assert item in text, item
    assert re.search(r"\| test accuracy, 2 seeds \| \d\.\d{4} ± \d\.\d{4} \|", text)
    commands = [line for line in text.split("```bash")[1].split("```")[0].splitlines() if line.startswith(("dlstrat", "hf "))]
    assert commands[0].startswith("dlstrat fit --model darts --model.C=4") and "--retrain" in commands[0]
    assert "dlstrat fit --model darts --model.C=4 --model.layers=3 --max-epochs 3" in commands  # the search on its own
    assert sum(c.startswith("dlstrat fit --model darts-net --genotype runs/") and "--max-epochs 2" in c for c in commands) == 2
    assert any(c.startswith("hf upload org/darts-digits-searched") for c in commands)
    receipt = json.loads((hub / "receipt.json").read_text())
    assert receipt["cost"]["params"] == summary["stages"]["export"]["cost"]["params"] > 0 and receipt["cost"]["flops"] > 0
    # nothing of this machine's temporary folders is published
    for name in ("README.md", "receipt.json", "training_summary.json", "search_summary.json", "config.yaml"):
        assert str(root.parent) not in (hub / name).read_text(), name
    # and the Hub holds the same folder
    pushed = json.loads((root / "push.json").read_text())
    assert pushed["repo_id"] == REPO
    listed = runner.invoke(app, ["zoo", "list", str(hub)])
    assert listed.exit_code == 0 and root.name in listed.output and REPO in listed.output and "over 2 seeds" in listed.output


@pytest.mark.slow
def test_the_pushed_model_loads_offline_through_timm_from_pretrained_and_predict(reference, server, tmp_path):
    root, _ = reference
    hub = root / "export" / "hub"
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    code = (
        "import sys, torch, timm, lightning_dlstrat\n"
        "from lightning_dlstrat.spaces.darts.network import DARTSNetwork\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        f"a = timm.create_model('hf-hub:{REPO}', pretrained=True).eval()\n"
        f"b = DARTSNetwork.from_pretrained('{REPO}')\n"
        "with torch.no_grad(): print(a(x).argmax(1).tolist(), b(x).argmax(1).tolist(), float((a(x) - b(x)).abs().max()))\n"
    )
    env = {**os.environ, **hub_env(server, tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    online = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert online.returncode == 0, online.stderr
    offline = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env={**env, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"})  # nothing listens there
    assert offline.returncode == 0, offline.stderr
    assert offline.stdout == online.stdout and offline.stdout.split()[-1] == "0.0"
    from lightning_dlstrat.hub import load_model

    local = load_model(hub).eval()
    with torch.no_grad():
        assert online.stdout.startswith(str(local(x).argmax(1).tolist()))
    # dlstrat predict on the exported folder
    samples = runner.invoke(app, ["data", "samples", "--out", str(tmp_path / "digits"), "-n", "4"])
    assert samples.exit_code == 0, samples.output
    predicted = runner.invoke(app, ["predict", "--zoo", str(hub), str(tmp_path / "digits"), "--out", str(tmp_path / "p.csv")])
    assert predicted.exit_code == 0, predicted.output
    assert len((tmp_path / "p.csv").read_text().strip().splitlines()) == 5  # header + 4 images


def kill_when(args: list[str], ready, env: dict | None = None, timeout: float = 300) -> str:
    """Run ``dlstrat ARGS``, SIGTERM it as soon as ``ready()`` is true, and return its output (it must exit 143)."""
    proc = subprocess.Popen([sys.executable, "-m", "lightning_dlstrat", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"finished before the kill: {proc.stdout.read()}"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, output
    return output


@pytest.mark.slow
def test_killed_in_each_stage_and_resumed_gives_the_uninterrupted_result(reference, server, tmp_path):
    root_ref, _ = reference
    out = tmp_path / "runs"
    env = hub_env(server, tmp_path / "cache")
    args = [*TINY, "--push", "org/killed", "--out", str(out)]
    root = lambda: next(p for p in out.glob("darts-digits-pipeline-2*"))  # noqa: E731
    # 1. in the search, after its first epoch's checkpoint
    said = kill_when(args, lambda: any(out.glob("*/search/checkpoints/last.ckpt")), env)
    assert f"dlstrat fit --resume {root()}" in said
    # 2. in the retraining of seed 0, after its first epoch
    kill_when(["fit", "--resume", str(root())], lambda: (root() / "retrain" / "seed-0" / "checkpoints" / "last.ckpt").is_file(), env)
    assert (root() / "search" / "summary.json").is_file() and not (root() / "retrain" / "seed-0" / "summary.json").is_file()
    # 3. in the export, while export.partial/ is being written
    kill_when(["fit", "--resume", str(root())], lambda: (root() / "export.partial").is_dir(), env)
    assert not (root() / "export").exists()
    finished = dlstrat("fit", "--resume", str(root()), env=env, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert not (root() / "export.partial").exists() and len(list(out.glob("darts-digits-pipeline-2*"))) == 1
    a, b = load_file(root_ref / "export" / "hub" / "model.safetensors"), load_file(root() / "export" / "hub" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert card_metrics(root() / "export" / "hub") == card_metrics(root_ref / "export" / "hub")
    # a finished run is never redone: resuming it again trains nothing
    again = dlstrat("fit", "--resume", str(root()), env=env)
    assert again.returncode == 0 and "starting" not in again.stdout and "resuming" not in again.stdout, again.stdout


@pytest.mark.slow
@pytest.mark.parametrize("search", [
    ["--model", "darts", "--model.space=nb201", "--max-epochs", "1"],
    ["--model", "random-nas", "--trials", "2", "--max-epochs", "1"],
], ids=["nb201", "random-nas"])
def test_other_searches_go_to_a_model_too(search, tmp_path):
    result = runner.invoke(app, ["fit", *search, "--retrain", "--retrain-epochs", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = run_dir_of(result.output)
    summary = json.loads((root / "summary.json").read_text())
    recipe = "nb201-net" if any("nb201" in a for a in search) else "darts-net"
    assert json.loads((root / "retrain" / "seed-0" / "summary.json").read_text())["model"] == recipe
    folder = root / "export" / "hub"
    assert json.loads((folder / "config.json").read_text())["architecture"] == recipe.replace("-", "_")
    assert card_metrics(folder)["test test accuracy"] == pytest.approx(round(summary["test_metrics"]["test/acc"], 4))


@pytest.mark.parametrize("args, message", [
    (["--model", "mlp", "--retrain"], "--retrain follows an architecture search"),
    (["--model", "darts", "--export", "onnx,tflite"], "--export tflite: unknown format"),
    (["--model", "darts", "--push", "not a repo"], "is not a Hub repo id"),
    (["--model", "darts", "--retrain", "--retrain-seeds", "0"], "--retrain-seeds must be in 1..20"),
    (["--model", "darts", "--private"], "--private goes with --push"),
])
def test_bad_pipeline_input_is_refused_before_anything_is_written(args, message, tmp_path):
    result = runner.invoke(app, ["fit", *args, "--out", str(tmp_path)])
    assert_clean_failure(result, message, tmp_path)
    assert not list(tmp_path.iterdir())


def test_every_recipe_names_its_newest_run(tmp_path):
    """``runs/NAME-latest`` points at the newest run, and --resume follows it."""
    dirs = []
    for _ in range(2):
        result = runner.invoke(app, ["fit", "--model", "mlp", "--max-epochs", "1", "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        dirs.append(run_dir_of(result.output))
    latest = tmp_path / "mlp-digits-latest"
    assert latest.is_symlink() and os.readlink(latest) == dirs[1].name  # relative: the folder can move
    resumed = runner.invoke(app, ["fit", "--resume", str(latest), "--max-epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert run_dir_of(resumed.output) == dirs[1]
    # a run that leaves nothing behind points the link back at the newest run left
    from lightning_dlstrat.run import discard_run_dir, point_latest

    (tmp_path / "mlp-digits-29990101-000000").mkdir()
    point_latest(tmp_path / "mlp-digits-29990101-000000", "mlp-digits")
    discard_run_dir(tmp_path / "mlp-digits-29990101-000000")
    assert os.readlink(latest) == dirs[1].name


@pytest.mark.slow
def test_under_ddp_one_directory_and_one_report(tmp_path):
    """Two gloo ranks (Lightning's ddp launcher re-runs the command): every stage trains on both, rank 0 alone writes and reports."""
    result = dlstrat("fit", "--model", "darts", "--model.C=4", "--model.layers=3", "--max-epochs", "1", "--retrain", "--retrain-epochs", "1",
                     "--devices", "2", "--strategy", "ddp", "--accelerator", "cpu", "--out", str(tmp_path), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("run directory: ") == 1 and result.stdout.count("retrain: test accuracy") == 1
    root = run_dir_of(result.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([root.name, "darts-digits-pipeline-latest"])  # no rank's folder
    for stage in (root / "search", root / "retrain" / "seed-0"):
        config = (stage / "config.yaml").read_text()
        assert "devices: 2" in config and "strategy: ddp" in config, stage
    assert (root / "export" / "hub" / "model.safetensors").is_file()
