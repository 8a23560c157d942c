"""The ``dlstrat`` command line (Typer).

    dlstrat fit --model darts                      # search an architecture on the bundled digits
    dlstrat fit --model mlp --data digits --max-epochs 30 --trainer.gradient_clip_val=1.0
    dlstrat fit --model darts --print-config       # the resolved configuration, without training
    dlstrat fit --config runs/.../config.yaml      # replay a run
    dlstrat fit --resume runs/...                  # continue an interrupted run in its directory
    dlstrat test --checkpoint runs/.../checkpoints/best.ckpt      # or validate
    dlstrat predict --zoo mlp-digits digit.png more/ --out predictions.csv
    dlstrat export --zoo mlp-digits --out mlp.onnx                 # or .pt2, .pt (TorchScript)
    dlstrat study show runs/random-nas-...          # a study's trials and plots (or --storage URL --study NAME)
    dlstrat data list | dlstrat models list | dlstrat --version

Trainer flags keep Lightning's names and meanings; ``--trainer.KEY=VALUE``, ``--model.KEY=VALUE``
and ``--data.KEY=VALUE`` pass anything else through, checked against the signatures they feed.
The route from here to ``Trainer.fit`` goes downward: :func:`lightning_dlstrat.config.resolve`,
then :func:`lightning_dlstrat.run.fit`, then the recipe (:mod:`lightning_dlstrat.recipes`).

Bad input prints one clear paragraph and exits with code 2, without a traceback; an unexpected
error prints one line (``--debug`` or ``DLSTRAT_DEBUG=1`` shows its traceback) and exits 1.
Only this module and the commands it runs import torch and Lightning, inside the commands, so
``dlstrat --version`` and ``--help`` start in a fraction of a second.
"""

from __future__ import annotations

import functools
import os
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from . import __version__
from .core import DlstratError, shorten

app = typer.Typer(
    name="dlstrat",
    help="Lightning modules for DARTS architecture search, GANs and classifiers, with a Hub model zoo.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
models_app = typer.Typer(help="Model recipes.", no_args_is_help=True)
zoo_app = typer.Typer(help="The model zoo on the Hugging Face Hub.", no_args_is_help=True)
nb201_app = typer.Typer(help="The NAS-Bench-201 search space and its benchmark.", no_args_is_help=True)
study_app = typer.Typer(help="Optuna studies of random-nas: their trials and plots.", no_args_is_help=True)
hub_app = typer.Typer(help="A local, in-memory Hub to try push / zoo pull offline.", no_args_is_help=True)
latency_app = typer.Typer(help="Latency lookup tables of a search space's operations, measured on this machine (docs/latency.md).", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
app.add_typer(latency_app, name="latency")
app.add_typer(nb201_app, name="nb201")
app.add_typer(study_app, name="study")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(zoo_app, name="zoo")

PASS_THROUGH = ("trainer", "model", "data")
DEBUG = {"on": os.environ.get("DLSTRAT_DEBUG", "") not in ("", "0")}


def fail(message: str, code: int = 2) -> None:
    """Print a one-paragraph error and exit (2: bad input)."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code=code)


def command(fn: Callable) -> Callable:
    """The CLI's edge: bad input exits 2 with its message, Ctrl-C 130, anything unexpected 1 with one line."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .data import DataUnavailableError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except DataUnavailableError as e:
            fail(str(e))
        except DlstratError as e:
            from .run import RunInterrupted

            fail(str(e), code=e.code if isinstance(e, RunInterrupted) else 2)  # 130 after Ctrl-C, 143 after SIGTERM
        except OSError as e:  # a full or read-only disk, a file where a folder should be, ...
            if DEBUG["on"]:
                raise
            where = f" {e.filename}" if e.filename else ""
            fail(f"cannot write or read{where}: {e.strerror or e}. Check the path (--out, --checkpoint), its permissions and the free disk space")
        except Exception as e:
            if DEBUG["on"]:
                raise
            fail(f"unexpected {type(e).__name__}: {shorten(str(e), 300)} (run with --debug or DLSTRAT_DEBUG=1 for the traceback)", code=1)

    return wrapper


def parse_value(text: str, what: str = "a flag's value") -> Any:
    """``--x.k=VALUE`` values are YAML scalars or lists (3, 0.1, 1e-3, true, null, [1, 2]); else strings.

    Numbers read as a user means them (``1e-3`` is a number, as in YAML 1.2), and a value that
    would nest or expand without bound (an alias bomb) is refused (:func:`lightning_dlstrat.core.load_yaml`).
    """
    from .core import MAX_TEXT_BYTES, TooLarge, load_yaml

    if len(text) > MAX_TEXT_BYTES:
        return text  # not parsed; the checks of the setting it is given to name it
    try:
        return load_yaml(text, what)
    except TooLarge:
        raise
    except DlstratError:  # not YAML: the text itself
        return text


def parse_pass_through(args: list[str]) -> dict[str, dict[str, Any]]:
    """``["--trainer.max_steps=5", "--model.lr", "0.1"]`` -> ``{"trainer": {"max_steps": 5}, ...}``."""
    out: dict[str, dict[str, Any]] = {k: {} for k in PASS_THROUGH}
    i = 0
    while i < len(args):
        arg = args[i]
        group, _, rest = arg.removeprefix("--").partition(".")
        if not arg.startswith("--") or group not in PASS_THROUGH or not rest:
            fail(f"unexpected argument {shorten(arg, 80)!r}; extra options take the form --trainer.KEY=VALUE, --model.KEY=VALUE or --data.KEY=VALUE")
        key, eq, value = rest.partition("=")
        if not eq:
            if i + 1 >= len(args):
                fail(f"{shorten(arg, 80)} needs a value: {shorten(arg, 80)}=VALUE")
            value, i = args[i + 1], i + 1
        out[group][key.replace("-", "_")] = parse_value(value, f"--{group}.{shorten(key, 80)}")
        i += 1
    return out


@app.callback(invoke_without_command=True)
def main_callback(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True)] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an unexpected error (or set DLSTRAT_DEBUG=1).")] = False,
):
    if version:
        typer.echo(f"lightning-dlstrat {__version__}")
        raise typer.Exit()
    DEBUG["on"] = DEBUG["on"] or debug
    # Advice that does not apply to this package's runs: in-memory datasets need no worker
    # processes, and the pytree notice is Lightning talking to itself about a torch deprecation.
    for message in (".*does not have many workers.*", ".*treespec.*"):
        warnings.filterwarnings("ignore", message=message)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@command
def fit(
    ctx: typer.Context,
    model: Annotated[Optional[str], typer.Option(help="Model recipe (see `dlstrat models list`); default mlp.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Dataset (see `dlstrat data list`); default: the recipe's, digits.")] = None,
    accelerator: Annotated[Optional[str], typer.Option(help="Lightning accelerator: cpu, gpu, cuda, mps, auto.")] = None,
    devices: Annotated[Optional[str], typer.Option(help="Lightning devices: a count, a list like 0,1, or auto.")] = None,
    strategy: Annotated[Optional[str], typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Lightning precision: 32-true, bf16-mixed, 16-mixed, ...")] = None,
    max_epochs: Annotated[Optional[int], typer.Option(help="Epochs to train; default: the recipe's preset for the dataset.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for weights, splits and sampling; default 0.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Intra-op CPU threads for this run; wins over OMP_NUM_THREADS, which wins over the preset's (1 for the digits presets).")] = None,
    data_dir: Annotated[Optional[str], typer.Option(help="Where downloadable datasets live; default data.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Parent folder of run directories; default runs.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML file in the format of a run's config.yaml (sections model, data, trainer).")] = None,
    genotype: Annotated[Optional[str], typer.Option(help="darts-net / nb201-net: a genotype file, a search run directory, a built-in name (DARTS_V2) or an NB201 string.")] = None,
    trials: Annotated[Optional[int], typer.Option(help="random-nas: how many genotypes the study trains, over all its workers.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue a run in its directory: RUN_DIR or RUN/checkpoints/last.ckpt.")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved configuration (config.yaml) and exit.")] = False,
    retrain: Annotated[bool, typer.Option("--retrain", help="darts / random-nas: after the search, retrain the derived network, test it and export a Hub folder with its card, as stages of one run.", rich_help_panel="Search to published model")] = False,
    retrain_seeds: Annotated[Optional[int], typer.Option(help="With --retrain: retrain with this many seeds (SEED, SEED+1, ...); the card reports mean and std.", rich_help_panel="Search to published model")] = None,
    retrain_epochs: Annotated[Optional[int], typer.Option(help="With --retrain: epochs of the retraining; default the retrain recipe's preset for the dataset.", rich_help_panel="Search to published model")] = None,
    export: Annotated[Optional[str], typer.Option("--export", help="With --retrain: deployment formats to write beside the Hub folder, comma-separated: onnx, pt2, torchscript.", rich_help_panel="Search to published model")] = None,
    push: Annotated[Optional[str], typer.Option(help="With --retrain: push the Hub folder to this repo, ORG/NAME (created if missing).", rich_help_panel="Search to published model")] = None,
    private: Annotated[bool, typer.Option("--private", help="With --push: create the repo private.", rich_help_panel="Search to published model")] = False,
    repo_id: Annotated[Optional[str], typer.Option(help="With --retrain: the Hub repo the exported folder is named for (card, snippets); default --push's, else lightning-dlstrat/RUN_NAME.", rich_help_panel="Search to published model")] = None,
):
    """Train a model; writes a run directory and prints where it is.

    Any other Trainer argument passes through as --trainer.KEY=VALUE; module and datamodule
    arguments as --model.KEY=VALUE and --data.KEY=VALUE. With --retrain (or --retrain-seeds,
    --export, --push) a search goes on to a published model: search, retrain, test, export, push,
    as stages of one resumable run (docs/pipeline.md).
    """
    from . import pipeline
    from .config import read_config_file, resolve
    from .recipes import get_recipe
    from .run import find_resume, fit as run_fit

    argv = ctx.obj["argv"] if isinstance(ctx.obj, dict) else rebuilt_argv(ctx)
    staged = retrain or any(v is not None for v in (retrain_seeds, retrain_epochs, export, push, repo_id))
    if resume is not None and pipeline.is_pipeline(resume):
        given = [a for a in argv if a.startswith("--") and a.split("=")[0] not in ("--resume", "--debug")]
        if given:
            fail(f"--resume {resume} continues a search-to-model run with its own settings (its pipeline.json); drop {' '.join(given)}")
        report(pipeline.resume(resume))
        return
    if private and push is None:
        fail("--private goes with --push ORG/NAME (it makes the pushed repo private)")
    extra = parse_pass_through(list(ctx.args))
    file_cfg = read_config_file(config) if config else {}
    found = None
    if resume is not None:
        # the run's checkpoint is read (once) and checked there; resuming replays the run's own
        # config.yaml (flags may extend it, e.g. --max-epochs)
        found = find_resume(resume, model, get_recipe)
        file_cfg, model = found.config, found.model
    flags: dict[str, Any] = {
        "model": {"name": model, **extra["model"]},
        "data": {"name": data, **extra["data"]},
        "trainer": extra["trainer"],
        **{k: v for k, v in dict(accelerator=accelerator, strategy=strategy, precision=precision, max_epochs=max_epochs,
                                 seed=seed, threads=threads, data_dir=data_dir, out=out, genotype=genotype, trials=trials).items() if v is not None},
    }
    if devices is not None:
        flags["devices"] = parse_value(devices)
    recipe_name = model or layer_name(file_cfg.get("model")) or "mlp"
    recipe = get_recipe(recipe_name)
    cfg = resolve(recipe, file_cfg, flags)
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    cfg.command = shlex.join(["dlstrat", *argv])
    if staged:
        if resume is not None:
            fail(f"--resume {resume} is a single run, not a search-to-model run; resume it without --retrain, --export or --push")
        plan = pipeline.Plan(
            retrain_seeds=1 if retrain_seeds is None else retrain_seeds, retrain_epochs=retrain_epochs, push=push, private=private, repo_id=repo_id,
            export=[f.strip() for f in export.split(",") if f.strip()] if export else [],
            shared={k: v for k, v in dict(accelerator=accelerator, devices=flags.get("devices"), strategy=strategy, precision=precision, threads=threads, data_dir=data_dir).items() if v is not None},
            search_command=shlex.join(["dlstrat", *without_options(argv, PIPELINE_OPTIONS, ("--retrain", "--private"))]), command=cfg.command,
        )
        report(pipeline.start(recipe, cfg, plan))
        return
    report(run_fit(recipe, cfg, resume=found))


PIPELINE_OPTIONS = ("--retrain-seeds", "--retrain-epochs", "--export", "--push", "--repo-id", "--out")  # the pipeline's own options that take a value


def without_options(argv: list[str], with_value: tuple[str, ...], flags: tuple[str, ...]) -> list[str]:
    """``argv`` less the options named (``--name VALUE``, ``--name=VALUE`` and bare ``--flag``)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in flags or (name in with_value and "=" in arg):
            continue
        if arg in with_value:
            skip = True
            continue
        out.append(arg)
    return out


def rebuilt_argv(ctx: typer.Context) -> list[str]:
    """The flags of this command, for summary.json when it was not called from a shell (CliRunner, embedding)."""
    argv = [ctx.command.name]
    for name, value in ctx.params.items():
        if value is True:
            argv.append(f"--{name.replace('_', '-')}")
        elif value not in (None, False):
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv + list(ctx.args)


def layer_name(value: Any) -> str | None:
    return value.get("name") if isinstance(value, dict) else value


def report(summary: dict) -> None:
    from .core import launch_rank

    if launch_rank() != 0:  # one report per run, from global rank 0
        return
    for key in ("test_metrics", "fit_metrics"):
        shown = {k: v for k, v in (summary.get(key) or {}).items() if k.count("/") < 2}
        if shown:
            typer.echo(f"{key.replace('_', ' ')}: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    for line in summary.get("report", []):
        typer.echo(line)
    typer.echo(f"run directory: {summary['run_dir']}")


@app.command()
@command
def test(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by `dlstrat fit`.")],
    data_dir: Annotated[Optional[str], typer.Option(help="Override where the dataset lives.")] = None,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator.")] = "auto",
    devices: Annotated[str, typer.Option(help="Lightning devices.")] = "1",
):
    """Evaluate a classifier checkpoint on its dataset's test split and print the metrics."""
    from .inference import evaluate

    metrics = evaluate(checkpoint, "test", data_dir=data_dir, accelerator=accelerator, devices=parse_value(devices))
    typer.echo(", ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items())))


@app.command()
@command
def validate(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by `dlstrat fit`.")],
    data_dir: Annotated[Optional[str], typer.Option(help="Override where the dataset lives.")] = None,
    accelerator: Annotated[str, typer.Option(help="Lightning accelerator.")] = "auto",
    devices: Annotated[str, typer.Option(help="Lightning devices.")] = "1",
):
    """Evaluate a checkpoint on the validation split its run validated on (Trainer.validate) and print the metrics."""
    from .inference import evaluate

    metrics = evaluate(checkpoint, "validate", data_dir=data_dir, accelerator=accelerator, devices=parse_value(devices))
    typer.echo(", ".join(f"{k}={float(v):.4f}" for k, v in sorted(metrics.items())))


@app.command()
@command
def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Images (.png, .jpg), folders of them, or .npy / .pt tensors of pixels in [0, 1], (N, C, H, W) or (C, H, W).", show_default=False)],
    checkpoint: Annotated[Optional[Path], typer.Option(help="A classifier checkpoint written by `dlstrat fit`.")] = None,
    zoo_name: Annotated[Optional[str], typer.Option("--zoo", help="A zoo classifier (see `dlstrat zoo list`), a model folder or ORG/NAME.")] = None,
    out: Annotated[Path, typer.Option(help="Where to write the class probabilities: .csv or .json.")] = Path("predictions.csv"),
    normalize: Annotated[bool, typer.Option(help="Normalise tensor inputs as the training data (--no-normalize: they already are; images always are).")] = True,
):
    """Class probabilities of a classifier for images or tensors, one row per input, written as CSV or JSON."""
    from .inference import check_out, load, predict as run_predict, write_predictions

    check_out(out)
    loaded = load(checkpoint, zoo_name)
    records = run_predict(loaded, list(inputs), normalize_tensors=normalize)
    write_predictions(records, out)
    counts: dict[str, int] = {}
    for r in records:
        counts[r["top_class"]] = counts.get(r["top_class"], 0) + 1
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])[:10])
    typer.echo(f"wrote {len(records)} prediction{'s' if len(records) != 1 else ''} of {loaded.source} to {out} (top classes {shown})")


@app.command("export")
@command
def export_model(
    out: Annotated[Path, typer.Option(help="File to write: .onnx, .pt2, or .pt / .ts for TorchScript.")],
    checkpoint: Annotated[Optional[Path], typer.Option(help="A checkpoint written by `dlstrat fit`.")] = None,
    zoo_name: Annotated[Optional[str], typer.Option("--zoo", help="A zoo model (see `dlstrat zoo list`), a model folder or ORG/NAME.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="onnx, pt2 (torch.export) or torchscript; default: from the suffix of --out.")] = None,
):
    """Export a classifier or generator to ONNX, a torch.export program (.pt2) or TorchScript, checked against the eager network."""
    from .export_formats import export, target
    from .inference import load

    fmt = target(fmt, out)  # a bad format or suffix fails before anything is loaded
    result = export(load(checkpoint, zoo_name), fmt, out)
    check = f"max |exported - eager| = {result.max_abs_diff:.2g} on a batch of 3" if result.max_abs_diff is not None else "not checked"
    typer.echo(f"wrote {result.path} ({result.format}; {check})" + (f"; {result.note}" if result.note else ""))


def plain_text(doc: str) -> str:
    """The first paragraph of a docstring as one line of plain text: reST markup (``x``, :func:`x`) taken off."""
    import re

    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    paragraph = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: m.group(1).split(".")[-1], paragraph)  # :func:`distort` -> distort
    return paragraph.replace("``", "")


def describe(name: str, doc: str, width: int = 100) -> str:
    """``NAME  description``, the description wrapped under itself (not cut), without a leading repeat of the name."""
    import textwrap

    text = plain_text(doc)
    text = text[len(name) + 1:].lstrip() if text.startswith(f"{name}:") else text  # "digits-hard: the digits ..." -> "the digits ..."
    return textwrap.fill(text, width=width, initial_indent=f"{name:15s} ", subsequent_indent=" " * 16, break_on_hyphens=False)


@data_app.command("list")
def data_list():
    """List the datasets."""
    from .data import DATAMODULES

    for name, cls in DATAMODULES.items():
        typer.echo(describe(name, vars(cls).get("__doc__") or ""))


@data_app.command("samples")
@command
def data_samples(
    out: Annotated[Path, typer.Option(help="Folder to write the images to (created if missing).")],
    data: Annotated[str, typer.Option(help="An image dataset (see `dlstrat data list`).")] = "digits",
    n: Annotated[int, typer.Option("-n", "--num", help="How many images.")] = 16,
    split: Annotated[str, typer.Option(help="test, val or train: which split the images come from.")] = "test",
    data_dir: Annotated[Optional[str], typer.Option(help="Where downloadable datasets live; default data.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits, as `dlstrat fit --seed` (the test split does not depend on it).")] = 0,
):
    """Write sample images of a dataset as PNG files (SPLIT-NNNN-class-K.png), e.g. to try `dlstrat predict` on."""
    from .data.samples import write_samples

    written = write_samples(data, out, n, split=split, data_dir=data_dir, seed=seed)
    hint = f"; try: {shlex.join(['dlstrat', 'predict', '--zoo', 'mlp-digits', str(out), '--out', 'predictions.csv'])}" if data == "digits" else ""
    typer.echo(f"wrote {len(written)} {data} image{'s' if len(written) != 1 else ''} from the {split} split to {out} (the true class is in each name){hint}")


@models_app.command("list")
def models_list():
    """List the model recipes."""
    from .recipes import RECIPES

    for name, recipe in RECIPES.items():
        typer.echo(f"{name:15s} {recipe.summary} (default data: {recipe.default_data})")


@app.command()
@command
def push(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `dlstrat fit`.")],
    repo_id: Annotated[str, typer.Option(help="Hub model repo to push to, ORG/NAME (created if missing).")],
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to commit to (created from main if missing); default main.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also keep the exported folder here.")] = None,
):
    """Export a run's best network with its model card and pictures, and push it to the Hub."""
    from . import export, zoo

    if out is not None:
        export.export_run(run_dir, out, repo_id=repo_id)
        url = zoo.upload(out, repo_id, private=private, revision=revision, message=f"dlstrat push {run_dir.name}")
    else:
        url = export.push(run_dir, repo_id, private=private, revision=revision)
    typer.echo(f"pushed {run_dir} to {repo_id}" + (f"@{revision}" if revision else "") + f": {url}")


@zoo_app.command("export")
@command
def zoo_export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `dlstrat fit`.")],
    out: Annotated[Path, typer.Option(help="Folder to write (Hub repo layout).")],
    repo_id: Annotated[Optional[str], typer.Option(help="The repo it will be published under: the card's name and snippet.")] = None,
    summary: Annotated[Optional[str], typer.Option(help="One line saying what the model is (config.json's summary, `dlstrat zoo list`).")] = None,
):
    """Export a run's best network as a Hub model folder (weights, config.json, card, pictures) without pushing."""
    from . import export

    typer.echo(export.export_run(run_dir, out, repo_id=repo_id, summary_line=summary))


@zoo_app.command("export-genotype")
@command
def zoo_export_genotype(
    name: Annotated[str, typer.Argument(help="A published cell: DARTS_V2 or PC_DARTS.")],
    out: Annotated[Path, typer.Option(help="Folder to write (Hub repo layout).")],
    repo_id: Annotated[Optional[str], typer.Option(help="The repo it will be published under, for the card's snippet.")] = None,
):
    """Write a genotype card (config.json of the paper's network, card, cell picture; no weights)."""
    from . import export

    typer.echo(export.export_genotype(name, out, repo_id=repo_id))


@zoo_app.command("list")
@command
def zoo_list(
    folders: Annotated[Optional[list[Path]], typer.Argument(help="Model folders to list as well (e.g. RUN/export/hub of `dlstrat fit --retrain`).", show_default=False)] = None,
):
    """List the zoo models (and any model folders given), the Hub repo each is published under and its headline metric."""
    from . import zoo

    for entry in [*zoo.entries().values(), *(zoo.folder_entry(f) for f in folders or [])]:
        metric = entry.headline()
        typer.echo(f"{entry.name:18s} {entry.repo_id:36s} {entry.kind:9s} {entry.summary}" + (f" ({metric})" if metric else ""))


@zoo_app.command("pull")
@command
def zoo_pull(
    name: Annotated[str, typer.Argument(help="A zoo model (see `dlstrat zoo list`) or any ORG/NAME repo.")],
    revision: Annotated[Optional[str], typer.Option(help="Branch, tag or commit; default main.")] = None,
):
    """Download a zoo model from the Hub into the Hugging Face cache, verify every file, print its folder."""
    from . import zoo

    typer.echo(zoo.pull(name, revision=revision))


@zoo_app.command("publish")
@command
def zoo_publish(
    name: Annotated[str, typer.Argument(help="A zoo model (see `dlstrat zoo list`).")],
    repo_id: Annotated[Optional[str], typer.Option(help="Push here instead of the zoo's repo, ORG/NAME.")] = None,
    private: Annotated[bool, typer.Option(help="Create the repo private.")] = False,
    revision: Annotated[Optional[str], typer.Option(help="Branch to commit to; default main.")] = None,
):
    """Push the packaged copy of a zoo model to the Hub repo the zoo names for it."""
    from . import zoo

    url = zoo.publish(name, repo_id=repo_id, private=private, revision=revision)
    typer.echo(f"published {name}: {url}")


@hub_app.command("serve")
@command
def hub_serve(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to serve on; 0 picks a free one (printed).")] = 8765,
    token: Annotated[str, typer.Option(help="The token to print for HF_TOKEN (the server takes any non-empty one for writes).")] = "dlstrat-local",
):
    """Serve the bundled Hub-compatible test server on 127.0.0.1 until Ctrl-C: push, zoo pull and from_pretrained work against it.

    Repos live in memory and are gone when it stops. It speaks the part of the Hub's HTTP API that
    huggingface_hub's upload and download use (docs/zoo.md, "Trying the Hub offline").
    """
    import signal

    from .testing.hub_server import HubServer

    if not 0 <= port <= 65535:
        raise DlstratError(f"--port must be in 0..65535, not {port}")
    try:
        server = HubServer("127.0.0.1", port)
    except OSError as e:
        raise DlstratError(f"cannot serve on 127.0.0.1:{port}: {e.strerror or e}; choose another --port (0 picks a free one)") from None
    cache = Path(os.environ.get("TMPDIR", "/tmp")) / f"dlstrat-hub-{server.server_address[1]}-cache"
    typer.echo(f"Hub-compatible test server on {server.url} (in memory; Ctrl-C stops it). In another shell:")
    typer.echo(f"  export HF_ENDPOINT={server.url} HF_TOKEN={token} HF_HUB_DISABLE_XET=1 HF_HUB_CACHE={cache}")
    typer.echo("  dlstrat zoo publish mlp-digits --repo-id me/mlp-digits && dlstrat zoo pull me/mlp-digits")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `kill` stops it as Ctrl-C does
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    typer.echo("Hub test server stopped; its repos are gone")


def latency_space(space: str, threads: int | None):
    """``--space`` as a search space, and ``--threads`` (default: OMP_NUM_THREADS, else torch's choice: None)."""
    from .core import omp_threads
    from .spaces import get_space

    try:
        return get_space(space), threads or omp_threads()
    except ValueError as e:
        raise DlstratError(f"--space: {e}") from None


@latency_app.command("profile")
@command
def latency_profile(
    space: Annotated[str, typer.Option(help="Search space: darts or nb201.")] = "darts",
    data: Annotated[str, typer.Option(help="Dataset: fixes the evaluation network (the retrain recipe's preset for it) and the input size.")] = "digits",
    device: Annotated[str, typer.Option(help="cpu, or cuda / cuda:N (timed with CUDA events).")] = "cpu",
    runtime: Annotated[str, typer.Option(help="torch (eager) or onnxruntime (CPU execution provider).")] = "torch",
    batch_size: Annotated[int, typer.Option(help="Batch the network will run with.")] = 1,
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads; default OMP_NUM_THREADS, else torch's default.")] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again even when a cached table matches.")] = False,
    out: Annotated[Optional[Path], typer.Option(help="Also write the table here (a .json file).")] = None,
):
    """Time every operation of a space at every position of its evaluation network, and the fixed cost; cache the table."""
    from .latency import LatencyTable
    from .recipes.darts import latency_table

    if batch_size < 1 or batch_size > 4096 or (threads is not None and not 1 <= threads <= 1024):
        fail(f"--batch-size must be in 1..4096 and --threads in 1..1024, not {batch_size} and {threads}")
    if runtime not in ("torch", "onnxruntime"):
        fail(f"--runtime must be torch or onnxruntime, not {shorten(runtime, 40)!r}")
    chosen, threads = latency_space(space, threads)
    path = latency_table(chosen, data, device=device, runtime=runtime, batch=batch_size, threads=threads, refresh=refresh, log=lambda line: typer.echo(line, err=True))
    table = LatencyTable.load(path)
    if out is not None:
        table.save(out)
    per_cell = ", ".join(f"{len(rows)} {cell} cell(s)" for cell, rows in table.cells.items())
    typer.echo(f"{chosen.name} on {data} ({per_cell}; {table.key['device_name']}, {table.key['runtime']}, batch {table.key['batch']}, "
               f"{table.key['threads']} thread(s)): fixed cost {table.fixed_ms:.3f} ms; table {path}" + (f", copied to {out}" if out else ""))


@latency_app.command("check")
@command
def latency_check(
    space: Annotated[str, typer.Option(help="Search space: darts or nb201.")] = "darts",
    data: Annotated[str, typer.Option(help="Dataset, as for `latency profile`.")] = "digits",
    samples: Annotated[int, typer.Option(help="Random genotypes to measure (not the table's calibration ones).")] = 50,
    batch_size: Annotated[int, typer.Option(help="Batch, as for `latency profile`.")] = 1,
    runtime: Annotated[str, typer.Option(help="torch or onnxruntime.")] = "torch",
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads; default OMP_NUM_THREADS, else torch's default.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write every sample (genotype, predicted, measured, error) here as JSON.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the random genotypes.")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed forward passes per network (after 10 warm-up passes); the median is taken.")] = 50,
):
    """The table's prediction against measurement on random genotypes: median and worst |error|."""
    from .core import atomic_write_json
    from .latency import LatencyTable, prediction_error
    from .recipes.darts import evaluation_network, latency_table

    if not 1 <= samples <= 10_000 or not 1 <= repeats <= 10_000:
        fail(f"--samples and --repeats must be in 1..10000, not {samples} and {repeats}")
    chosen, threads = latency_space(space, threads)
    table = LatencyTable.load(latency_table(chosen, data, runtime=runtime, batch=batch_size, threads=threads, log=lambda line: typer.echo(line, err=True)))
    build, in_shape, _ = evaluation_network(chosen, data)
    result = prediction_error(table, chosen, build, in_shape, samples=samples, seed=seed, repeats=repeats)
    if out is not None:
        atomic_write_json(out, result)
    measured = [r["measured_ms"] for r in result["samples"]]
    typer.echo(f"{chosen.name} on {data}, {samples} random cells ({table.key['device_name']}, {table.key['runtime']}, batch {table.key['batch']}, "
               f"{table.key['threads']} thread(s)): measured {min(measured):.3f}-{max(measured):.3f} ms; |prediction error| median "
               f"{result['median_abs_error_pct']:.1f} %, worst {result['worst_abs_error_pct']:.1f} %" + (f"; samples in {out}" if out else ""))


@nb201_app.command("lookup")
@command
def nb201_lookup(
    genotype: Annotated[str, typer.Argument(help="A cell in the benchmark's string form, |op~0|+|op~0|op~1|+|op~0|op~1|op~2|.")],
    benchmark: Annotated[Path, typer.Option(help="The NATS-Bench topology file you downloaded (NATS-tss-v1_0-3ffb9.pickle.pbz2 or its -simple/ folder).")],
    unpickle: Annotated[bool, typer.Option("--unpickle", help="Required: the benchmark is a pickle and this command unpickles it (through an allow-list first). Give it only for a file from the benchmark's authors.")] = False,
    dataset: Annotated[str, typer.Option(help="cifar10, cifar100 or ImageNet16-120.")] = "cifar10",
    split: Annotated[str, typer.Option(help="valid or test.")] = "test",
):
    """Print the benchmark's accuracy for a NAS-Bench-201 cell (needs `pip install nats_bench` and the benchmark file)."""
    from .spaces.nb201 import NB201Genotype
    from .spaces.nb201.lookup import NB201Benchmark

    cell = NB201Genotype.parse(genotype)  # checked before anything is opened
    if not unpickle:
        fail(f"{benchmark} is a pickle, and reading it runs whatever it holds; pass --unpickle to confirm it is the benchmark file its authors published")
    accuracy = NB201Benchmark.load(benchmark).accuracy(cell, dataset, split)
    typer.echo(f"{cell}  {dataset} {split} accuracy: {accuracy:.2f} % (NAS-Bench-201, 200 epochs, mean over seeds)")


@study_app.command("show")
@command
def study_show(
    run_dir: Annotated[Optional[Path], typer.Argument(help="A random-nas run directory (it holds study.json).")] = None,
    storage: Annotated[Optional[str], typer.Option(help="Or the study's storage: a database URL or a journal file.")] = None,
    study: Annotated[Optional[str], typer.Option(help="With --storage: the study's name (--model.study of its workers).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the tables and pictures; default the run directory, or ./NAME with --storage.")] = None,
):
    """Print a study's trials and write trials.json / trials.csv and Optuna's plots (PNG)."""
    from .study import format_table, show

    table, written, folder = show(run_dir, storage, study, out)
    for line in format_table(table):
        typer.echo(line)
    typer.echo(f"wrote {', '.join(written)} to {folder}")


@app.command()
@command
def sample(
    checkpoint: Annotated[Optional[Path], typer.Option(help="A checkpoint written by `dlstrat fit --model gan`.")] = None,
    zoo_name: Annotated[Optional[str], typer.Option("--zoo", help="A generator of the zoo instead (see `dlstrat zoo list`).")] = None,
    label: Annotated[Optional[int], typer.Option("--class", help="Class to draw, for a conditional GAN; without it, one row per class.")] = None,
    n: Annotated[int, typer.Option("-n", "--num", help="How many samples (conditional, no --class: ceil(n / classes) per class row).")] = 64,
    out: Annotated[Path, typer.Option(help="PNG to write: an image grid, or a scatter plot over the true modes for 2-D data.")] = Path("samples.png"),
    seed: Annotated[int, typer.Option(help="Seed of the latent noise.")] = 0,
):
    """Draw samples from a GAN's EMA generator (a checkpoint or a zoo model) into a PNG."""
    from .recipes.gan import draw_samples, generator_from_checkpoint

    if (checkpoint is None) == (zoo_name is None):
        raise DlstratError("give exactly one of --checkpoint CKPT (a GAN run's checkpoint) or --zoo NAME (a zoo generator)")
    if checkpoint is not None:
        net, data, about = generator_from_checkpoint(checkpoint)
    else:
        from . import zoo

        entry = zoo.get_entry(zoo_name)
        net = zoo.load(zoo_name)
        if getattr(net, "kind", "") != "generator":
            raise DlstratError(f"zoo model {zoo_name} is not a generator; `dlstrat zoo list` shows which are")
        data, about = entry.training_data(), f"zoo model {zoo_name}"
    what = draw_samples(net, n, out, seed=seed, label=label, data=data, about=about)
    typer.echo(f"wrote {what} to {out}")


def main() -> None:
    app(obj={"argv": sys.argv[1:]})
