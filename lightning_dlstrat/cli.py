"""The ``dlstrat`` command line (Typer).

    dlstrat fit --model darts                      # search an architecture on the bundled digits
    dlstrat fit --model mlp --data digits --max-epochs 30 --trainer.gradient_clip_val=1.0
    dlstrat test --checkpoint runs/.../checkpoints/best.ckpt
    dlstrat data list | dlstrat models list | dlstrat --version

Trainer flags keep Lightning's names and meanings; ``--trainer.KEY=VALUE``, ``--model.KEY=VALUE``
and ``--data.KEY=VALUE`` pass anything else through, checked against the signatures they feed.
Bad input prints one clear message and exits with code 2, without a traceback.
"""

from __future__ import annotations

import difflib
import inspect
import warnings
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml

from . import __version__

app = typer.Typer(
    name="dlstrat",
    help="Lightning modules for DARTS architecture search, GANs and classifiers, with a Hub model zoo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

PASS_THROUGH = ("trainer", "model", "data")


def fail(message: str) -> None:
    """Print a one-paragraph error and exit with code 2 (bad input)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=2)


def parse_value(text: str) -> Any:
    """``--x.k=VALUE`` values are YAML scalars or lists (3, 0.1, true, null, [1, 2]); else strings."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_pass_through(args: list[str]) -> dict[str, dict[str, Any]]:
    """``["--trainer.max_steps=5", "--model.lr", "0.1"]`` -> ``{"trainer": {"max_steps": 5}, ...}``."""
    out: dict[str, dict[str, Any]] = {k: {} for k in PASS_THROUGH}
    i = 0
    while i < len(args):
        arg = args[i]
        group, _, rest = arg.removeprefix("--").partition(".")
        if not arg.startswith("--") or group not in PASS_THROUGH or not rest:
            fail(f"unexpected argument {arg!r}; extra options take the form --trainer.KEY=VALUE, --model.KEY=VALUE or --data.KEY=VALUE")
        key, eq, value = rest.partition("=")
        if not eq:
            if i + 1 >= len(args):
                fail(f"{arg} needs a value: {arg}=VALUE")
            value, i = args[i + 1], i + 1
        out[group][key.replace("-", "_")] = parse_value(value)
        i += 1
    return out


def check_keys(kind: str, keys, valid: list[str]) -> None:
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean: {', '.join(close)}?" if close else f" Valid keys: {', '.join(sorted(valid))}."
            fail(f"unknown {kind} option {key!r}.{hint}")


def trainer_keys() -> list[str]:
    import lightning as L

    return [p for p in inspect.signature(L.Trainer.__init__).parameters if p != "self"]


def load_config(path: Path) -> dict[str, Any]:
    """A YAML file with the same keys as the flags (``model``, ``data``, ``max_epochs``, ``trainer: {..}``).

    ``model`` and ``data`` may be a name or a mapping ``{name: NAME, KEY: VALUE, ...}``.
    """
    if not path.is_file():
        fail(f"config file {path} does not exist")
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        fail(f"config file {path} is not valid YAML: {' '.join(str(e).split())}")
    if not isinstance(cfg, dict):
        fail(f"config file {path} must hold a mapping of option names to values")
    valid = {"model", "data", "seed", "data_dir", "out", "accelerator", "devices", "strategy", "precision", "max_epochs", "trainer", "genotype", "trials", "resume"}
    check_keys("config", [k.replace("-", "_") for k in cfg], sorted(valid))
    return {k.replace("-", "_"): v for k, v in cfg.items()}


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)] = False,
):
    if version:
        typer.echo(f"lightning-dlstrat {__version__}")
        raise typer.Exit()
    # Advice that does not apply to this package's runs: in-memory datasets need no worker
    # processes, and the pytree notice is Lightning talking to itself about a torch deprecation.
    for message in (".*does not have many workers.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=message)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def fit(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="Model recipe (see `dlstrat models list`). [default: mlp]")] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset (see `dlstrat data list`). [default: the model's, digits]")] = None,
    accelerator: Annotated[Optional[str], typer.Option(help="Lightning accelerator: cpu, gpu, cuda, mps, auto.")] = None,
    devices: Annotated[Optional[str], typer.Option(help="Lightning devices: a count, a list like 0,1, or auto.")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Lightning precision: 32-true, bf16-mixed, 16-mixed, ...")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Epochs to train. [default: the model's]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for weights, splits and sampling. [default: 0]")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Where downloadable datasets live. [default: data]")] = None,
    out: Annotated[Optional[str], typer.Option(help="Parent folder of run directories. [default: runs]")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file with the same keys as these flags.")] = None,
    genotype: Annotated[Optional[str], typer.Option(help="darts-net: a genotype file or a built-in name (DARTS_V2).")] = None,
    trials: Annotated[Optional[int], typer.Option(help="random-nas: how many genotypes to sample.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Resume from this checkpoint (e.g. RUN/checkpoints/last.ckpt).")] = None,
):
    """Train a model; writes a run directory and prints where it is.

    Any other Trainer argument passes through as --trainer.KEY=VALUE; module and datamodule
    arguments as --model.KEY=VALUE and --data.KEY=VALUE.
    """
    from .registry import MODELS
    from .run import DlstratError, FitContext, fit as run_fit
    from .data import DATAMODULES, DataUnavailableError

    cfg = load_config(config) if config else {}
    extra = parse_pass_through(list(ctx.args))

    def pick(name: str, flag: Any, default: Any = None) -> Any:
        return flag if flag is not None else cfg.get(name, default)

    def name_and_args(value: Any) -> tuple[Optional[str], dict]:
        if isinstance(value, dict):
            value = dict(value)
            return value.pop("name", None), value
        return value, {}

    model_name, model_cfg_args = name_and_args(model if model is not None else cfg.get("model", "mlp"))
    data_name, data_cfg_args = name_and_args(data if data is not None else cfg.get("data"))
    if model_name not in MODELS:
        fail(f"unknown model {model_name!r}; choose one of: {', '.join(MODELS)}")
    if data_name is not None and data_name not in DATAMODULES:
        fail(f"unknown dataset {data_name!r}; choose one of: {', '.join(DATAMODULES)}")

    trainer_args = {**(cfg.get("trainer") or {}), **extra["trainer"]}
    for key, value in (("accelerator", accelerator), ("devices", devices), ("strategy", strategy), ("precision", precision), ("max_epochs", max_epochs)):
        value = pick(key, value)
        if value is not None:
            trainer_args[key] = parse_value(value) if key == "devices" and isinstance(value, str) else value
    check_keys("trainer", trainer_args, trainer_keys())

    model_args = {**model_cfg_args, **extra["model"]}
    for key, value in (("genotype", genotype), ("trials", trials)):
        value = pick(key, value)
        if value is not None:
            model_args[key] = value

    fit_ctx = FitContext(
        model=model_name,
        data=data_name,
        seed=pick("seed", seed, 0),
        data_dir=str(pick("data_dir", data_dir, "data")),
        out=str(pick("out", out, "runs")),
        trainer=trainer_args,
        model_args=model_args,
        data_args={**data_cfg_args, **extra["data"]},
        # main() passes the real argv; under CliRunner (tests, embedding) the flags are rebuilt
        command=shlex.join(["dlstrat", *ctx.obj["argv"]]) if isinstance(ctx.obj, dict) else "",
        resume=str(pick("resume", resume)) if pick("resume", resume) else None,
    )
    if fit_ctx.resume and not Path(fit_ctx.resume).is_file():
        fail(f"--resume checkpoint {fit_ctx.resume} does not exist")
    if not fit_ctx.command:
        fit_ctx.command = "dlstrat " + " ".join(shlex.quote(a) for a in _reconstruct_command(fit_ctx))
    try:
        summary = run_fit(fit_ctx)
    except (DlstratError, DataUnavailableError) as e:
        fail(str(e))
    report(summary)


def _reconstruct_command(c) -> list[str]:
    """The flags that reproduce a run, for summary.json when not called from the shell."""
    args = ["fit", "--model", c.model, "--seed", str(c.seed)]
    if c.data:
        args += ["--data", c.data]
    for k, v in c.trainer.items():
        args.append(f"--trainer.{k}={v}")
    for k, v in c.model_args.items():
        args.append(f"--model.{k}={v}")
    for k, v in c.data_args.items():
        args.append(f"--data.{k}={v}")
    return args


def report(summary: dict) -> None:
    for key in ("test_metrics", "fit_metrics"):
        shown = {k: v for k, v in (summary.get(key) or {}).items()}
        if shown:
            typer.echo(f"{key.replace('_', ' ')}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    for line in summary.get("report", []):
        typer.echo(line)
    typer.echo(f"run directory: {summary['run_dir']}")


@app.command()
def test(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by `dlstrat fit`.")],
    data_dir: Annotated[Optional[str], typer.Option(help="Override where the dataset lives.")] = None,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator.")] = "auto",
    devices: Annotated[str, typer.Option(help="Lightning devices.")] = "1",
):
    """Evaluate a checkpoint on its dataset's test split and print the metrics."""
    import lightning as L
    import torch

    from .data import DataUnavailableError, get_datamodule
    from .registry import get_recipe

    if not checkpoint.is_file():
        fail(f"checkpoint {checkpoint} does not exist")
    try:
        # weights_only: a checkpoint is read as tensors and plain containers, never as arbitrary pickles
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        fail(f"{checkpoint} is not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:300]})")
    info = ckpt.get("dlstrat")
    if not info:
        fail(f"{checkpoint} was not written by `dlstrat fit` (it has no 'dlstrat' entry naming its model and dataset)")
    recipe = get_recipe(info["model"])
    dm_args = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if data_dir is not None:
        dm_args["data_dir"] = data_dir
    module = recipe.module_class.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    try:
        dm = get_datamodule(info["data"], **dm_args)
        trainer = L.Trainer(accelerator=accelerator, devices=parse_value(devices), logger=False, enable_progress_bar=False, enable_model_summary=False)
        metrics = trainer.test(module, datamodule=dm, verbose=False)[0]
    except DataUnavailableError as e:
        fail(str(e))
    typer.echo(", ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items())))


@data_app.command("list")
def data_list():
    """List the datasets."""
    from .data import DATAMODULES

    for name, cls in DATAMODULES.items():
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name:15s} {doc}")


@models_app.command("list")
def models_list():
    """List the model recipes."""
    from .registry import MODELS

    for name, recipe in MODELS.items():
        typer.echo(f"{name:15s} {recipe.summary} (default data: {recipe.default_data})")


zoo_app = typer.Typer(help="The model zoo on the Hugging Face Hub.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")


@app.command()
def push(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `dlstrat fit`.")],
    repo_id: Annotated[str, typer.Option(help="Hub model repo to push to, ORG/NAME (created if missing).")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to commit to (created from main if missing). [default: main]")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also keep the exported folder here.")] = None,
):
    """Export a run's best network with its model card and pictures, and push it to the Hub."""
    from . import zoo
    from .run import DlstratError

    try:
        if out is not None:
            zoo.export_run(run_dir, out, repo_id=repo_id)
            url = zoo.upload(out, repo_id, private=private, revision=revision, message=f"dlstrat push {run_dir.name}")
        else:
            url = zoo.push(run_dir, repo_id, private=private, revision=revision)
    except DlstratError as e:
        fail(str(e))
    typer.echo(f"pushed {run_dir} to {repo_id}" + (f"@{revision}" if revision else "") + f": {url}")


@zoo_app.command("export")
def zoo_export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `dlstrat fit`.")],
    out: Annotated[Path, typer.Option(help="Folder to write (Hub repo layout).")],
    repo_id: Annotated[Optional[str], typer.Option(help="The repo it will be published under, for the card's snippet.")] = None,
):
    """Export a run's best network as a Hub model folder (weights, config.json, card, pictures) without pushing."""
    from . import zoo
    from .run import DlstratError

    try:
        typer.echo(zoo.export_run(run_dir, out, repo_id=repo_id))
    except DlstratError as e:
        fail(str(e))


@zoo_app.command("export-genotype")
def zoo_export_genotype(
    name: Annotated[str, typer.Argument(help="A published cell: DARTS_V2 or PC_DARTS.")],
    out: Annotated[Path, typer.Option(help="Folder to write (Hub repo layout).")],
    repo_id: Annotated[Optional[str], typer.Option(help="The repo it will be published under, for the card's snippet.")] = None,
):
    """Write a genotype card (config.json of the paper's network, card, cell picture; no weights)."""
    from . import zoo
    from .run import DlstratError

    try:
        typer.echo(zoo.export_genotype(name, out, repo_id=repo_id))
    except DlstratError as e:
        fail(str(e))


@zoo_app.command("list")
def zoo_list():
    """List the zoo models, the Hub repo each is published under and its test metric."""
    from . import zoo

    for name, entry in zoo.ZOO.items():
        metric = zoo.headline(name)
        typer.echo(f"{name:18s} {entry.repo_id:36s} {entry.kind:9s} {entry.summary}" + (f" ({metric})" if metric else ""))


@zoo_app.command("pull")
def zoo_pull(
    name: Annotated[str, typer.Argument(help="A zoo model (see `dlstrat zoo list`) or any ORG/NAME repo.")],
    revision: Annotated[Optional[str], typer.Option(help="Branch, tag or commit. [default: main]")] = None,
):
    """Download a zoo model from the Hub into the Hugging Face cache and print its folder."""
    from . import zoo
    from .run import DlstratError

    try:
        typer.echo(zoo.pull(name, revision=revision))
    except DlstratError as e:
        fail(str(e))


@zoo_app.command("publish")
def zoo_publish(
    name: Annotated[str, typer.Argument(help="A zoo model (see `dlstrat zoo list`).")],
    repo_id: Annotated[Optional[str], typer.Option(help="Push here instead of the zoo's repo, ORG/NAME.")] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to commit to. [default: main]")] = None,
):
    """Push the packaged copy of a zoo model to the Hub repo the zoo names for it."""
    from . import zoo
    from .run import DlstratError

    try:
        url = zoo.publish(name, repo_id=repo_id, private=private, revision=revision)
    except DlstratError as e:
        fail(str(e))
    typer.echo(f"published {name}: {url}")


@app.command()
def sample(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by `dlstrat fit --model gan`.")],
    n: Annotated[int, typer.Option("-n", "--num", help="How many samples.")] = 64,
    out: Annotated[Path, typer.Option(help="PNG to write: an image grid, or a scatter plot over the true modes for 2-D data.")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Seed of the latent noise.")] = 0,
):
    """Draw samples from a GAN checkpoint's EMA generator into a PNG."""
    from .run import DlstratError
    from .trainers.gan import sample_checkpoint

    try:
        path = sample_checkpoint(checkpoint, n, out, seed=seed)
    except DlstratError as e:
        fail(str(e))
    typer.echo(f"wrote {n} samples to {path}")


def main() -> None:
    app(obj={"argv": sys.argv[1:]})
