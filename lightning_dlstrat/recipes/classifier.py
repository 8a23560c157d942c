"""The classifier recipes: ``mlp``, ``darts-net`` (retraining a DARTS genotype) and ``nb201-net`` (a NAS-Bench-201 cell)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ..core import DlstratError
from ..spaces.darts.genotype import GENOTYPES
from ..spaces import SPACES, get_space
from ..trainers.classifier import MLPClassifier
from ..trainers.darts_net import DARTSNetClassifier
from ..trainers.nb201_net import NB201NetClassifier
from ..spaces.darts.viz import plot_genotype
from .base import Recipe


def prepare_genotype(model_args: dict[str, Any], flags: dict[str, Any], data: str = "", space: str = "darts") -> dict[str, Any]:
    """Resolve ``--genotype`` (genotype text, a file, a run directory, a built-in name) to its text, in ``space``.

    config.yaml then holds the cell itself, so it replays anywhere; what it came from is returned
    for summary.json (``made_from``): the source as given and, when it is a search run's folder
    or genotype.json, that run's directory, which export reads to describe the search. A genotype
    of another space is refused with the recipe that trains it.
    """
    source = model_args.get("genotype")
    try:
        genotype = get_space(space).resolve_genotype(source)
    except ValueError as e:
        hint = other_space_hint(source, space)
        raise DlstratError(f"--genotype: {e}" + (("" if str(e).endswith(".") else ".") + hint if hint else "")) from None
    model_args["genotype"] = str(genotype)
    if not isinstance(source, str) or source.strip() == str(genotype) or source.lstrip().startswith(("{", "Genotype(")):
        return {}  # genotype text: config.yaml's own made_from (if any) still says where it came from
    if source.strip().upper() in GENOTYPES:
        return {"genotype": source.strip().upper()}
    made_from: dict[str, Any] = {"genotype": source}
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    if (folder / "genotype.json").is_file() and (folder / "summary.json").is_file():
        made_from["search_run"] = str(folder.resolve())
    return made_from


def other_space_hint(source: Any, space: str) -> str:
    """A sentence naming the recipe that trains ``source`` when it is a genotype of another space, else ""."""
    for name, cls in SPACES.items():
        if name == space:
            continue
        try:
            cls().resolve_genotype(source)
        except (ValueError, TypeError):
            continue
        return f" It is a genotype of the {name} space: train it with --model {cls.retrain_recipe}."
    return ""


def after_darts_net(module: DARTSNetClassifier, trainer, datamodule, run_dir: Path) -> dict[str, Any]:
    """Write the trained genotype (``genotype.json``) and its picture (``genotype.png``); count parameters."""
    genotype = module.genotype
    if trainer.is_global_zero:
        genotype.save(run_dir / "genotype.json")
        plot_genotype(genotype, run_dir / "genotype.png", title=f"{module.hparams.layers} cells, C={module.hparams.C}")
    params = sum(p.numel() for name, p in module.model.named_parameters() if not name.startswith("auxiliary_head."))
    return {
        "genotype": str(genotype),
        "params": params,  # without the auxiliary head, which is dropped at test time (as the paper counts)
        "report": [f"genotype: {genotype}", f"parameters (without the auxiliary head): {params:,}"],
    }


MLP = Recipe("mlp", MLPClassifier)
DARTS_NET = Recipe("darts-net", DARTSNetClassifier, prepare=prepare_genotype, after_fit=after_darts_net)


def after_nb201_net(module: NB201NetClassifier, trainer, datamodule, run_dir: Path) -> dict[str, Any]:
    """Write the cell (``genotype.txt``, the benchmark's string, to look up in its tables) and count parameters."""
    genotype = str(module.genotype)
    if trainer.is_global_zero:
        (run_dir / "genotype.txt").write_text(genotype + "\n")
    params = sum(p.numel() for p in module.model.parameters())
    return {"genotype": genotype, "params": params, "report": [f"cell: {genotype}", f"parameters: {params:,}"]}


NB201_NET = Recipe("nb201-net", NB201NetClassifier, prepare=partial(prepare_genotype, space="nb201"), after_fit=after_nb201_net)
