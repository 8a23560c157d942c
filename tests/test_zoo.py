"""The Hub format, the model zoo and timm loading, with the real huggingface_hub client.

Hub traffic goes to :class:`lightning_dlstrat.testing.hub_server.HubServer` on 127.0.0.1
(checked against huggingface-hub 2.4.0, HF_HUB_DISABLE_XET=1), with the cache in tmp_path.
huggingface_hub reads HF_ENDPOINT / HF_HUB_CACHE / HF_HUB_OFFLINE at import, so the fixtures
patch its ``constants`` the way its own test-suite does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch
import yaml
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url, snapshot_download
from typer.testing import CliRunner

import lightning_dlstrat  # registers the timm entrypoints
from lightning_dlstrat import MLP, zoo
from lightning_dlstrat.cli import app
from lightning_dlstrat import export
from lightning_dlstrat.hub import HubError
from lightning_dlstrat.zoo import load_model
from lightning_dlstrat.spaces.darts.network import DARTSNetwork
from lightning_dlstrat.spaces.darts.genotype import PC_DARTS
from lightning_dlstrat.testing.hub_server import HubServer, git_blob_sha1

runner = CliRunner()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    server = HubServer().start()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "test-token")
    yield server
    server.stop()


@pytest.fixture
def no_backoff(monkeypatch):
    """huggingface_hub retries a dead endpoint with 1-8 s sleeps; the outcome is the same without them."""
    import huggingface_hub.utils._http as http

    class _Time:
        sleep = staticmethod(lambda s: None)
        time = staticmethod(__import__("time").time)

    monkeypatch.setattr(http, "time", _Time)


def cache_files(tmp_path: Path, repo_id: str) -> dict[str, list[str]]:
    """What the HF cache holds for a repo: blob names and snapshot file names."""
    root = tmp_path / "hf-cache" / f"models--{repo_id.replace('/', '--')}"
    blobs = sorted(p.name for p in (root / "blobs").glob("*")) if (root / "blobs").is_dir() else []
    snaps = sorted(p.name for p in (root / "snapshots").glob("*/*")) if (root / "snapshots").is_dir() else []
    return {"blobs": blobs, "snapshots": snaps}


def mlp(seed: int, hidden=(16,)) -> MLP:
    torch.manual_seed(seed)
    return MLP((1, 8, 8), 10, hidden=hidden).eval()


X = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))


# --- the format ---------------------------------------------------------------------------------
def test_save_pretrained_round_trip_is_strict_and_safetensors_only(tmp_path, monkeypatch):
    net = mlp(0)
    net.save_pretrained(tmp_path / "m")
    assert sorted(os.listdir(tmp_path / "m")) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == "dlstrat_mlp" and config["model_args"]["hidden"] == [16] and config["num_classes"] == 10
    back = MLP.from_pretrained(tmp_path / "m")
    assert not back.training and torch.equal(back(X), net(X))

    # a missing tensor is an error (huggingface_hub's mixin would load non-strictly)
    state = safetensors.torch.load_file(tmp_path / "m" / "model.safetensors")
    del state["head.bias"]
    safetensors.torch.save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(HubError, match=r"(?s)do not fit.*Missing.*head.bias"):
        MLP.from_pretrained(tmp_path / "m")

    # pytorch_model.bin is never read, let alone unpickled
    (tmp_path / "m" / "model.safetensors").unlink()
    torch.save(net.state_dict(), tmp_path / "m" / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called on a downloaded file"))
    with pytest.raises(HubError, match="no model.safetensors"):
        MLP.from_pretrained(tmp_path / "m")


def test_bad_configs_are_clear_errors(tmp_path):
    net = mlp(0)
    net.save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "architecture": "resnet_9000"}))
    known = "conditional_dcgan_generator, conditional_dense_generator, darts_net, dcgan_generator, dense_generator, dlstrat_mlp, mlp_generator, nb201_net"
    with pytest.raises(HubError, match=f"resnet_9000, which this version of lightning-dlstrat does not know; known: {known}\\. "):
        load_model(tmp_path / "m")
    config_path.write_text(json.dumps({"hidden_size": 3}))  # someone else's config.json
    with pytest.raises(HubError, match="not written by lightning-dlstrat"):
        load_model(tmp_path / "m")
    config_path.write_text(json.dumps(config))
    with pytest.raises(HubError, match="holds a MLP.*not a DARTSNetwork"):
        DARTSNetwork.from_pretrained(tmp_path / "m")
    with pytest.raises(HubError, match="neither an existing folder nor a Hub repo id"):
        load_model(tmp_path / "missing")


# --- the architecture registry fills itself ------------------------------------------------------------
ROOT = Path(lightning_dlstrat.__file__).resolve().parents[1]


def fresh_python(code: str, cwd: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -c code`` in a new interpreter that imports this checkout of the package."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=cwd, env=full_env)


def card_snippet(card: str) -> str:
    """The python block of a model card."""
    return card.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_a_fresh_interpreter_loads_any_architecture_without_importing_the_networks():
    """The command of issue 21: hub alone knows every architecture the package ships, importing each on first use."""
    proc = fresh_python("from lightning_dlstrat.hub import load_model; load_model('zoo/mlp-digits')")
    assert proc.returncode == 0, proc.stderr
    script = (
        "import sys\n"
        "from lightning_dlstrat import hub\n"
        "assert not [m for m in sys.modules if m.startswith(('lightning_dlstrat.models', 'lightning_dlstrat.spaces'))]\n"
        "assert 'nb201_net' in hub.ARCHITECTURES and 'resnet_9000' not in hub.ARCHITECTURES\n"
        "print(hub.ARCHITECTURES['nb201_net'].__module__, 'lightning_dlstrat.models' in sys.modules)\n"
        "print(sorted(hub.architectures('generator')))\n"
    )
    proc = fresh_python(script)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "lightning_dlstrat.spaces.nb201.network False"  # only the module asked for was imported
    assert second == str(sorted(["dense_generator", "dcgan_generator", "mlp_generator", "conditional_dense_generator", "conditional_dcgan_generator"]))


def test_the_builtin_table_is_the_entry_points_pyproject_declares():
    import tomllib

    from lightning_dlstrat import hub

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][hub.ENTRY_POINT_GROUP]
    assert declared == hub.BUILTIN_ARCHITECTURES
    assert set(hub.architectures()) == set(hub.BUILTIN_ARCHITECTURES)  # every network the package defines is listed
    for name, target in hub.BUILTIN_ARCHITECTURES.items():
        module, _, attr = target.partition(":")
        cls = getattr(__import__(module, fromlist=[attr]), attr)
        assert hub.ARCHITECTURES[name] is cls and cls.architecture == name and cls.kind in hub.KINDS


@pytest.mark.parametrize("name, args", [("dlstrat_mlp", dict(in_shape=(1, 8, 8), hidden=(16,))), ("darts_net", dict(genotype="PC_DARTS", C=4, layers=3, in_chans=1))])
def test_the_save_pretrained_card_snippet_runs_in_a_fresh_interpreter(name, args, tmp_path):
    from lightning_dlstrat import hub

    torch.manual_seed(0)
    net = hub.ARCHITECTURES[name](**args).eval()
    net.save_pretrained(tmp_path / "m")
    snippet = card_snippet((tmp_path / "m" / "README.md").read_text())
    assert 'load_model("ORG/NAME")' in snippet and snippet.startswith("from lightning_dlstrat.hub import load_model")
    torch.save(X, tmp_path / "x.pt")
    code = snippet.replace("ORG/NAME", str(tmp_path / "m")) + (
        "import json, torch\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        "with torch.no_grad():\n"
        "    print(type(net).__name__, net.training, json.dumps(net(x).softmax(1).tolist()))\n"
    )
    proc = fresh_python(code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cls_name, training, probs = proc.stdout.strip().split(" ", 2)
    assert (cls_name, training) == (type(net).__name__, "False")
    with torch.no_grad():
        assert torch.allclose(torch.tensor(json.loads(probs)), net(X).softmax(1), atol=1e-6)


def test_the_push_to_hub_card_snippet_names_the_repo_and_runs_in_a_fresh_interpreter(hub, tmp_path):
    net = mlp(3)
    net.push_to_hub("org/card-mlp")
    card = Path(snapshot_download("org/card-mlp")) / "README.md"
    snippet = card_snippet(card.read_text())
    assert 'net = load_model("org/card-mlp")' in snippet  # as written on the Hub, run unchanged
    torch.save(X, tmp_path / "x.pt")
    code = snippet + (
        "import torch\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)\n"
        "print(net(x).argmax(1).tolist())\n"
    )
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "fresh-cache"), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0", "HF_TOKEN": "test-token"}
    proc = fresh_python(code, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(net(X).argmax(1).tolist())


PLUGIN = """
import torch
from torch import nn

from lightning_dlstrat.hub import HubMixin


class TinyGenerator(nn.Module, HubMixin, architecture="test_tiny_generator", kind="generator"):
    def __init__(self, latent_dim: int = 2, out_dim: int = 3):
        super().__init__()
        self.latent_dim, self.out_shape = latent_dim, (out_dim,)
        self.lin = nn.Linear(latent_dim, out_dim)

    def forward(self, z):
        return torch.tanh(self.lin(z))


class NotANetwork:
    pass
"""


def test_another_package_adds_an_architecture_through_its_entry_point(tmp_path, monkeypatch):
    """What `[project.entry-points."lightning_dlstrat.architectures"]` in a plugin's pyproject.toml does,
    with importlib.metadata's answer made up: found by name on first use, listed, broken ones explained."""
    import importlib.metadata
    import sys

    from lightning_dlstrat import hub

    (tmp_path / "dlstrat_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    group = hub.ENTRY_POINT_GROUP
    declared = [
        importlib.metadata.EntryPoint("test_tiny_generator", "dlstrat_test_plugin:TinyGenerator", group),
        importlib.metadata.EntryPoint("test_missing_module", "dlstrat_no_such_module:Net", group),
        importlib.metadata.EntryPoint("test_not_a_network", "dlstrat_test_plugin:NotANetwork", group),
        importlib.metadata.EntryPoint("dlstrat_mlp", "dlstrat_test_plugin:TinyGenerator", group),  # a built-in name: ignored
    ]

    def entry_points(group=None, name=None):
        return [ep for ep in declared if ep.group == group and (name is None or ep.name == name)]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    folder = tmp_path / "plugin-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"library_name": "lightning-dlstrat", "architecture": "test_tiny_generator", "model_args": {"out_dim": 3}}))
    weights = {"lin.weight": torch.randn(3, 2), "lin.bias": torch.randn(3)}
    safetensors.torch.save_file(weights, folder / "model.safetensors")
    try:
        net = hub.load_model(folder)  # imports the plugin's module through its entry point
        assert type(net).__name__ == "TinyGenerator" and type(net).__module__ == "dlstrat_test_plugin"
        assert torch.equal(net.lin.weight, weights["lin.weight"]) and not net.training
        assert hub.ARCHITECTURES["dlstrat_mlp"] is MLP  # no plugin takes a built-in name
        with pytest.warns(UserWarning) as caught:
            listed = hub.architectures("generator")
        assert "test_tiny_generator" in listed and not {"test_missing_module", "test_not_a_network"} & set(listed)
        messages = " ".join(str(w.message) for w in caught)
        assert "'dlstrat_no_such_module:Net'" in messages and "failed to import: ModuleNotFoundError" in messages
        assert "must subclass nn.Module and HubMixin with architecture='test_not_a_network'" in messages
        with pytest.raises(HubError, match="the architecture 'test_missing_module' comes from the entry point 'dlstrat_no_such_module:Net'"):
            hub.architecture_class("test_missing_module")
    finally:
        if "test_tiny_generator" in hub.ARCHITECTURES._classes:
            del hub.ARCHITECTURES["test_tiny_generator"]
        sys.modules.pop("dlstrat_test_plugin", None)


def test_darts_net_genotype_travels_in_config_and_timm_builds_it(tmp_path):
    net = timm.create_model("darts_net", genotype="PC_DARTS", C=4, layers=3, in_chans=1, img_size=8, num_classes=10).eval()
    assert isinstance(net, DARTSNetwork) and net.genotype == PC_DARTS and net(X).shape == (5, 10)
    net.save_pretrained(tmp_path / "d")
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["model_args"]["genotype"] == PC_DARTS.to_dict() and config["pretrained_cfg"]["input_size"] == [1, 8, 8]
    back = DARTSNetwork.from_pretrained(tmp_path / "d")
    assert back.genotype == PC_DARTS and torch.equal(back(X), net(X))
    via_timm = timm.create_model(f"local-dir:{tmp_path / 'd'}", pretrained=True).eval()
    assert torch.equal(via_timm(X), net(X))
    untrained = timm.create_model(f"local-dir:{tmp_path / 'd'}").eval()  # timm: architecture only
    assert untrained.genotype == PC_DARTS and not torch.equal(untrained(X), net(X))
    net.reset_classifier(3)  # a new head: config.json follows the network, not its construction
    net.save_pretrained(tmp_path / "d3")
    assert DARTSNetwork.from_pretrained(tmp_path / "d3")(X).shape == (5, 3)


# --- through the Hub ----------------------------------------------------------------------------
def test_push_then_download_is_byte_identical_with_etags(hub, tmp_path):
    net = mlp(0)
    net.save_pretrained(tmp_path / "local", model_card_kwargs={"repo_id": "org/mlp"})  # push_to_hub's card names the repo
    url = net.push_to_hub("org/mlp")
    api = HfApi()
    sha = api.model_info("org/mlp").sha
    assert url.endswith(sha)
    folder = Path(snapshot_download("org/mlp"))
    for name in ("config.json", "model.safetensors", "README.md"):
        data = (tmp_path / "local" / name).read_bytes()
        assert (folder / name).read_bytes() == data
        meta = get_hf_file_metadata(hf_hub_url("org/mlp", name))
        assert meta.etag == git_blob_sha1(data) and meta.commit_hash == sha and meta.size == len(data)
    assert folder.name == sha  # the snapshot is keyed by the commit the server reported
    assert torch.equal(MLP.from_pretrained("org/mlp")(X), net(X))
    card = (folder / "README.md").read_text()
    assert yaml.safe_load(card.split("---")[1])["library_name"] == "lightning-dlstrat"


def test_revisions_pin_and_cache_outlives_the_server(hub, tmp_path):
    v1, v2 = mlp(1), mlp(2)
    v1.push_to_hub("org/mlp")
    api = HfApi()
    sha1 = api.model_info("org/mlp").sha
    api.create_tag("org/mlp", tag="v1")
    v2.push_to_hub("org/mlp")
    zoo.upload(_saved(mlp(3), tmp_path / "dev"), "org/mlp", revision="dev")
    assert {b.name for b in api.list_repo_refs("org/mlp").branches} == {"main", "dev"}

    assert torch.equal(MLP.from_pretrained("org/mlp")(X), v2(X))
    assert torch.equal(MLP.from_pretrained("org/mlp", revision="v1")(X), v1(X))
    assert torch.equal(MLP.from_pretrained("org/mlp", revision=sha1)(X), v1(X))
    assert torch.equal(MLP.from_pretrained("org/mlp", revision="dev")(X), mlp(3)(X))
    with pytest.raises(HubError, match="no such revision"):
        MLP.from_pretrained("org/mlp", revision="v9")

    # cached: a second load needs only the HEAD calls, no downloads of weights
    blobs = cache_files(tmp_path, "org/mlp")["blobs"]
    hub.stop()  # the network goes away: everything already seen loads from the cache
    assert torch.equal(MLP.from_pretrained("org/mlp")(X), v2(X))
    assert torch.equal(MLP.from_pretrained("org/mlp", revision="v1")(X), v1(X))
    assert torch.equal(MLP.from_pretrained("org/mlp", revision=sha1)(X), v1(X))
    assert cache_files(tmp_path, "org/mlp")["blobs"] == blobs


def test_offline_mode(hub, tmp_path, monkeypatch):
    net = mlp(0)
    net.push_to_hub("org/mlp")
    mlp(1).push_to_hub("org/other")  # on the Hub, never downloaded
    MLP.from_pretrained("org/mlp")  # into the cache
    seen = hub.requests
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert torch.equal(MLP.from_pretrained("org/mlp")(X), net(X))
    assert hub.requests == seen  # not one request in offline mode
    with pytest.raises(HubError, match=r"not in the local cache.*HF_HUB_OFFLINE=1"):
        MLP.from_pretrained("org/other")
    result = runner.invoke(app, ["zoo", "pull", "org/other"])
    assert result.exit_code == 2 and "HF_HUB_OFFLINE=1" in result.output


def test_network_down_and_missing_repos(hub, tmp_path, no_backoff):
    with pytest.raises(HubError, match="no such model repo"):
        MLP.from_pretrained("org/nothing")
    api = HfApi()
    api.create_repo("org/not-ours")
    api.upload_file(path_or_fileobj=b'{"hidden_size": 8}', path_in_repo="config.json", repo_id="org/not-ours")
    with pytest.raises(HubError, match="not written by lightning-dlstrat"):
        MLP.from_pretrained("org/not-ours")
    api.create_repo("org/empty")
    with pytest.raises(HubError, match="has no config.json: it is not a lightning-dlstrat model repo"):
        MLP.from_pretrained("org/empty")
    mlp(0).push_to_hub("org/mlp")
    hub.stop()
    with pytest.raises(HubError, match="cannot reach the Hub.*not in the local cache"):
        MLP.from_pretrained("org/mlp")
    assert cache_files(tmp_path, "org/mlp")["blobs"] == []
    with pytest.raises(HubError, match="cannot reach the Hub"):
        zoo.upload(_saved(mlp(0), tmp_path / "up"), "org/up")


def test_corrupted_and_truncated_weights_never_stay_in_the_cache(hub, tmp_path):
    net = mlp(0)
    net.push_to_hub("org/mlp")
    hub.faults["model.safetensors"] = "flip"  # served corrupted: same size, one byte changed
    with pytest.raises(HubError, match="corrupted.*removed it from the cache"):
        MLP.from_pretrained("org/mlp")
    assert "model.safetensors" not in cache_files(tmp_path, "org/mlp")["snapshots"]
    del hub.faults["model.safetensors"]
    assert torch.equal(MLP.from_pretrained("org/mlp")(X), net(X))  # downloaded afresh, not trusted from before

    hub.faults["model.safetensors"] = "truncate"  # one cut transfer: the client resumes with Range
    assert torch.equal(MLP.from_pretrained("org/mlp", force_download=True)(X), net(X))
    assert "model.safetensors" not in hub.faults  # the cut transfer did happen

    # a repo whose weights file itself is truncated: a clear error, and the bad blob is purged
    saved = _saved(net, tmp_path / "bad")
    data = (saved / "model.safetensors").read_bytes()
    (saved / "model.safetensors").write_bytes(data[: len(data) // 2])
    zoo.upload(saved, "org/truncated")
    with pytest.raises(HubError, match="not a readable safetensors file.*removed it from the cache"):
        MLP.from_pretrained("org/truncated")
    cached = cache_files(tmp_path, "org/truncated")
    assert "model.safetensors" not in cached["snapshots"] and len(cached["blobs"]) == 1  # config.json only


def _saved(net, folder: Path) -> Path:
    net.save_pretrained(folder)
    return folder


def test_timm_hf_hub_with_revision(hub):
    net = timm.create_model("darts_net", genotype="DARTS_V2", C=4, layers=3, in_chans=1, img_size=8, num_classes=10).eval()
    net.push_to_hub("org/darts", branch=None)
    HfApi().create_tag("org/darts", tag="v1")
    loaded = timm.create_model("hf-hub:org/darts@v1", pretrained=True).eval()
    assert torch.equal(loaded(X), net(X)) and loaded.pretrained_cfg["hf_hub_id"] == "org/darts@v1"


# --- the zoo and the CLI ------------------------------------------------------------------------
def test_packaged_zoo_folders_resolve_and_reproduce_their_metric():
    from lightning_dlstrat.data import DigitsDataModule

    for name, entry in zoo.entries().items():
        folder = entry.folder  # via importlib.resources: inside the installed package
        assert (folder / "config.json").is_file() and (folder / "README.md").is_file()
        card = (folder / "README.md").read_text()
        meta = yaml.safe_load(card.split("---")[1])
        assert meta["library_name"] == "lightning-dlstrat"
        assert (folder / "model.safetensors").is_file() == (entry.kind == "weights")
        if entry.kind == "weights":  # the exact command that trained it, in the folder and in the card
            summary = json.loads((folder / zoo.SUMMARY_NAME).read_text())
            assert summary["command"].startswith("dlstrat fit") and summary["command"] in card
        else:  # a published cell: the genotype, the paper it comes from, the command that wrote the card
            genotype = zoo.load(name)
            assert meta["model-index"][0]["results"][0]["source"]["url"].startswith("https://arxiv.org/")
            assert f"dlstrat zoo export-genotype {genotype_name(genotype)} --out {name}" in card
    for name in ("mlp-digits", "darts-digits"):  # the packaged weights give the accuracy their card states
        net = zoo.load(name)
        summary = json.loads((zoo.local_folder(name) / zoo.SUMMARY_NAME).read_text())
        dm = DigitsDataModule(seed=summary["seed"])
        dm.setup("test")
        with torch.no_grad():
            correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in dm.test_dataloader())
        assert correct / len(dm.test_set) == pytest.approx(summary["test_metrics"]["test/acc"], abs=1e-6)
    with pytest.raises(HubError, match="unknown zoo model 'mlp-mnist'; the zoo has: darts-digits, darts-v2-cifar10, gan-digits, gan-digits-cond, gan-ring8, mlp-digits, nb201-digits-hard, pc-darts-cifar10"):
        zoo.load("mlp-mnist")


def test_packaged_digits_gan_reproduces_its_confident_share():
    from lightning_dlstrat.metrics import CONFIDENCE, load_digits_classifier

    generator = zoo.load("gan-digits")
    recorded = json.loads((zoo.local_folder("gan-digits") / zoo.SUMMARY_NAME).read_text())["gan_metrics"]
    with torch.no_grad():
        images = generator(torch.randn(recorded["num_samples"], generator.latent_dim, generator=torch.Generator().manual_seed(1)))  # (N, 1, 8, 8)
        probs = load_digits_classifier()(((images + 1) / 2).clamp(0, 1)).softmax(dim=1)  # (N, 10)
    confident = 100.0 * float((probs.max(dim=1).values >= CONFIDENCE).double().mean())
    assert images.shape[1:] == (1, 8, 8) and images.abs().max() <= 1.0
    assert confident == pytest.approx(recorded["confident_pct"], abs=4.0)  # 2,500 draws: sd ~0.9 points


def test_packaged_gan_reproduces_its_mode_coverage():
    from lightning_dlstrat.data import Ring8DataModule
    from lightning_dlstrat.metrics import mode_metrics

    generator = zoo.load("gan-ring8")
    recorded = json.loads((zoo.local_folder("gan-ring8") / zoo.SUMMARY_NAME).read_text())["gan_metrics"]
    with torch.no_grad():  # fresh noise: the same distribution as the run's evaluation, other draws
        samples = generator(torch.randn(recorded["num_samples"], generator.latent_dim, generator=torch.Generator().manual_seed(1)))
    measured = mode_metrics(samples, Ring8DataModule.modes(), Ring8DataModule.sigma)
    assert measured["modes_captured"] == recorded["modes_captured"]
    assert measured["high_quality_pct"] == pytest.approx(recorded["high_quality_pct"], abs=3.0)  # 2,500 draws: sd ~0.6 points


def genotype_name(genotype) -> str:
    from lightning_dlstrat.spaces.darts.genotype import GENOTYPES

    return next(k for k, v in GENOTYPES.items() if v == genotype)


def test_zoo_publish_pull_and_load_from_the_hub(hub, tmp_path, monkeypatch):
    result = runner.invoke(app, ["zoo", "publish", "mlp-digits"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["zoo", "pull", "mlp-digits"])
    assert result.exit_code == 0, result.output
    snapshot = Path(result.stdout.strip())
    local = zoo.local_folder("mlp-digits")
    assert sorted(p.name for p in local.iterdir()) == sorted(p.name for p in snapshot.iterdir() if p.name != ".gitattributes")
    assert all((snapshot / p.name).read_bytes() == p.read_bytes() for p in local.iterdir())
    hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert torch.equal(zoo.load("mlp-digits", source="hub")(X), zoo.load("mlp-digits")(X))
    result = runner.invoke(app, ["zoo", "list"])
    assert result.exit_code == 0 and "lightning-dlstrat/mlp-digits" in result.output
    result = runner.invoke(app, ["zoo", "pull", "nope"])
    assert result.exit_code == 2 and "the zoo has: darts-digits" in result.output


def test_dlstrat_push_exports_a_run_with_its_card(hub, tmp_path):
    from lightning_dlstrat.recipes import fit

    summary = fit("mlp", out=str(tmp_path / "runs"), trainer={"max_epochs": 2, "accelerator": "cpu"}, command="dlstrat fit --model mlp --max-epochs 2")
    run_dir = summary["run_dir"]
    result = runner.invoke(app, ["push", run_dir, "--repo-id", "org/tiny", "--revision", "dev", "--private"])
    assert result.exit_code == 0, result.output
    folder = Path(snapshot_download("org/tiny", revision="dev"))
    assert {"README.md", "config.json", "model.safetensors", zoo.SUMMARY_NAME} <= {p.name for p in folder.iterdir()}
    meta = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    results = meta["model-index"][0]["results"][0]
    acc = next(m for m in results["metrics"] if m["type"] == "accuracy")
    assert acc["value"] == round(summary["test_metrics"]["test/acc"], 4) and results["dataset"]["split"] == "test"
    assert "dlstrat fit --model mlp --max-epochs 2" in (folder / "README.md").read_text()
    # the pushed weights are the best checkpoint's network, also through timm
    from lightning_dlstrat.trainers.classifier import MLPClassifier

    best = MLPClassifier.load_from_checkpoint(summary["best_checkpoint"], map_location="cpu", weights_only=True).model.eval()
    assert torch.equal(timm.create_model("hf-hub:org/tiny@dev", pretrained=True).eval()(X), best(X))
    assert HfApi().model_info("org/tiny").private

    result = runner.invoke(app, ["push", str(tmp_path / "nope"), "--repo-id", "org/x"])
    assert result.exit_code == 2 and "not a finished run directory" in result.output


def test_gan_run_exports_its_ema_generator_with_samples(tmp_path):
    from lightning_dlstrat.models.gan import MLPGenerator
    from lightning_dlstrat.recipes import fit
    from lightning_dlstrat.trainers.gan import GAN

    summary = fit("gan", data="ring8", out=str(tmp_path / "runs"), trainer={"max_steps": 3, "accelerator": "cpu"}, command="dlstrat fit --model gan --data ring8 --trainer.max_steps=3")
    result = runner.invoke(app, ["zoo", "export", summary["run_dir"], "--out", str(tmp_path / "gan-ring8")])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "gan-ring8"
    assert (folder / "samples.png").stat().st_size > 0
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "mlp_generator" and "num_classes" not in config
    ema = GAN.load_from_checkpoint(summary["best_checkpoint"], map_location="cpu", weights_only=True).generator_ema.eval()
    z = torch.randn(7, ema.latent_dim)
    assert torch.equal(MLPGenerator.from_pretrained(folder)(z), ema(z))  # the EMA generator, not the raw one
    meta = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["modes-captured"] == summary["gan_metrics"]["modes_captured"]
    assert metrics["high-quality-samples"] == round(summary["gan_metrics"]["high_quality_pct"], 2)


def test_fine_tune_a_zoo_model_as_docs_show(tmp_path):
    import lightning as L

    from lightning_dlstrat import DigitsDataModule, MLPClassifier

    net = zoo.load("mlp-digits")
    task = MLPClassifier(**net.hub_config()["model_args"], lr=1e-4)
    task.model.load_state_dict(net.state_dict())
    dm = DigitsDataModule()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(task, datamodule=dm)
    assert any(not torch.equal(before[k], v) for k, v in task.model.state_dict().items())  # it trained
    task.model.save_pretrained(tmp_path / "tuned")
    assert torch.equal(MLP.from_pretrained(tmp_path / "tuned")(X), task.model.eval()(X))


def test_darts_net_run_exports_with_its_search(tmp_path):
    """A darts-net run trained from a search's genotype.json carries the search's record and picture."""
    from lightning_dlstrat.spaces.darts.genotype import sample_genotype
    from lightning_dlstrat.core import atomic_write_json
    from lightning_dlstrat.recipes import fit

    search = tmp_path / "runs" / "darts-digits-search"
    genotype = sample_genotype(0)
    genotype.save(search / "genotype.json")
    (search / "alpha.png").write_bytes((zoo.local_folder("pc-darts-cifar10") / "cell.png").read_bytes())
    atomic_write_json(search / "summary.json", {"command": "dlstrat fit --model darts --data digits --seed 3", "data": "digits", "seed": 3, "model": "darts"})
    command = f"dlstrat fit --model darts-net --genotype {search / 'genotype.json'} --model.C=4 --model.layers=3"
    summary = fit("darts-net", out=str(tmp_path / "runs"), model={"genotype": str(search / "genotype.json"), "C": 4, "layers": 3},
                  trainer={"max_steps": 2, "accelerator": "cpu"}, command=command)
    assert summary["made_from"] == {"recipe": "darts-net", "genotype": str(search / "genotype.json"), "search_run": str(search.resolve())}
    folder = export.export_run(summary["run_dir"], tmp_path / "darts-digits")
    assert {"cell.png", "alpha.png", export.SEARCH_SUMMARY_NAME, zoo.SUMMARY_NAME, "model.safetensors", "config.yaml"} <= {p.name for p in folder.iterdir()}
    card = (folder / "README.md").read_text()
    published = command.replace(str(search), "runs/darts-digits-search")  # no path of the machine it ran on
    assert card.index("--model darts --data digits --seed 3") < card.index(published) and str(genotype) in card
    assert str(tmp_path) not in card and str(tmp_path) not in (folder / zoo.SUMMARY_NAME).read_text()
    net = DARTSNetwork.from_pretrained(folder)
    assert net.genotype == genotype and net.C == 4
    assert torch.equal(timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(X), net(X))


def test_zoo_pull_verifies_every_file(hub, tmp_path):
    """`dlstrat zoo pull` checks each downloaded file against the Hub's hash, as from_pretrained does."""
    net = mlp(0)
    net.push_to_hub("org/pulled")
    hub.faults["model.safetensors"] = "flip"  # served corrupted: same size, one byte changed
    result = runner.invoke(app, ["zoo", "pull", "org/pulled"])
    assert result.exit_code == 2 and "corrupted" in result.output and "removed it from the cache" in result.output
    assert "model.safetensors" not in cache_files(tmp_path, "org/pulled")["snapshots"]
    del hub.faults["model.safetensors"]
    result = runner.invoke(app, ["zoo", "pull", "org/pulled"])
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1].split("\r")[-1].split("]")[-1])  # after huggingface_hub's progress bar
    assert torch.equal(MLP.from_pretrained(folder)(X), net(X))

    pickled = tmp_path / "pickled"  # a repo with only a pickle for weights is not usable
    net.save_pretrained(pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(net.state_dict(), pickled / "pytorch_model.bin")
    zoo.upload(pickled, "org/pickled")
    result = runner.invoke(app, ["zoo", "pull", "org/pickled"])
    assert result.exit_code == 2 and "holds only pickled weights" in result.output


def test_from_pretrained_accepts_strict(tmp_path):
    net = mlp(0)
    net.save_pretrained(tmp_path / "m")
    state = safetensors.torch.load_file(tmp_path / "m" / "model.safetensors")
    del state["head.bias"]
    safetensors.torch.save_file(state, tmp_path / "m" / "model.safetensors")
    with pytest.raises(HubError, match="Missing"):
        MLP.from_pretrained(tmp_path / "m")  # strict by default
    loose = MLP.from_pretrained(tmp_path / "m", strict=False)  # what matches by name is loaded
    assert torch.equal(loose.head.weight, net.head.weight) and not torch.equal(loose.head.bias, net.head.bias)


def test_shipped_zoo_folders_hold_no_machine_paths():
    """Committed artifacts never carry absolute or temporary paths of the machine that made them."""
    import re

    pattern = re.compile(r"(?<![\w.:])/(tmp|root|home|work|Users|var/folders)/")
    for folder in zoo.entries().values():
        for path in folder.folder.rglob("*"):
            if path.suffix in (".json", ".md", ".yaml"):
                assert not pattern.search(path.read_text()), f"{path} holds a machine path"


@pytest.mark.parametrize("name", sorted(zoo.entries()))
def test_shipped_cards_parse_back_with_huggingface_hub(name):
    """huggingface_hub's ModelCard.load reads each card's metadata: name, tags, task and the measured metrics."""
    from huggingface_hub import ModelCard

    from lightning_dlstrat.hub import ARCHITECTURES

    entry = zoo.entries()[name]
    card = ModelCard.load(entry.folder / "README.md")
    data = card.data
    arch = entry.config["architecture"]
    cls = ARCHITECTURES[arch]
    assert data.model_name == name and data.library_name == "lightning-dlstrat"
    assert set(cls._hub_mixin_info.model_card_data["tags"]) <= set(data.tags)  # the class's own tags are kept
    if cls._hub_mixin_info.paper_url:
        assert f"Paper: {cls._hub_mixin_info.paper_url}" in card.text and any(t.startswith("arxiv:") for t in data.tags)
    if cls.kind == "generator":
        expected = None if arch in ("mlp_generator",) or arch.startswith("conditional_") else "unconditional-image-generation"
        assert data.pipeline_tag == expected
    if entry.kind == "weights":
        summary = json.loads((entry.folder / "training_summary.json").read_text())
        parsed = {r.metric_type: r.metric_value for r in data.eval_results}
        if "test/acc" in (summary.get("test_metrics") or {}):
            assert parsed["accuracy"] == round(summary["test_metrics"]["test/acc"], 4)
        gan = summary.get("gan_metrics") or {}
        if gan.get("kind") == "classifier":
            assert parsed["frechet-distance"] == round(gan["classifier_fd"], 3) and parsed["kernel-distance"] == round(gan["classifier_kid"], 5)
        if "label_agreement_pct" in gan:
            assert parsed["label-agreement"] == round(gan["label_agreement_pct"], 2) and data.eval_results[0].task_type == "conditional-image-generation"


def test_the_hub_client_is_one_the_test_server_was_checked_against():
    """The server speaks the client's private wire details: a client outside the checked range fails here, by name."""
    import tomllib
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    from lightning_dlstrat.testing.hub_server import CHECKED_HUB_VERSIONS

    assert version("huggingface-hub") in SpecifierSet(CHECKED_HUB_VERSIONS), (version("huggingface-hub"), CHECKED_HUB_VERSIONS)
    extra = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert f"huggingface-hub{CHECKED_HUB_VERSIONS}" in extra  # CI installs the test extra: the same range
