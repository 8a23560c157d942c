"""What a differentiable-NAS search method is to the search module: a small object with the paper's
citation, its official settings, and the hooks the bilevel step calls.

The search module (:class:`lightning_dlstrat.trainers.darts_search.DARTSSearch`) runs one bilevel
step for every method (first order, or second order by finite differences or the exact Hessian).
What a collapse fix changes is confined to five places, each a hook here:

- ``mix`` (at most one method per search): how alpha (E, O) becomes the weights that mix each
  edge's operations in a training forward: softmax for DARTS, sigmoid (Fair DARTS), a Gumbel
  sample (GDAS), a Dirichlet sample (DrNAS);
- ``perturb``: what is added to those weights afterwards (DARTS-'s auxiliary skip, SDARTS-RS's
  noise), in the architecture step, the weight step or both;
- ``on_epoch_start``: the per-epoch schedules (GDAS's tau, DARTS-'s beta, SDARTS's epsilon);
- ``regulariser``: a term of L_val in alpha alone (beta-DARTS, Fair DARTS, DrNAS);
- ``genotype``: the discretisation rule, when it is not the space's (Fair DARTS's threshold,
  GDAS's top-2 (op, edge) pairs, the P-DARTS skip cap);
- and three small ones: ``on_build`` (Fair DARTS starts alpha at 0), ``arch_weight_decay``
  (DrNAS's ``reg_type=kl`` drops alpha's weight decay) and ``weight_step_first`` (GDAS takes the
  weight step before the architecture step).

A method is **on** when its settings are (``is_on``); several compose (``method=pc-darts`` with
``relaxation=gumbel`` is GDAS + PC-DARTS; any method with ``max_skips=2``). ``method=NAME`` is a
name for a method's official settings (:attr:`SearchMethod.preset`), expanded once, when a run's
configuration is resolved (:func:`expand`), so ``config.yaml`` holds the settings that ran.

Adding a method: one file in ``methods/`` with a subclass of :class:`SearchMethod` (its ``name``
registers it), its import in ``methods/__init__.py``, and its test in ``tests/test_darts_methods.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Sequence

import torch

__all__ = ["METHODS", "SearchMethod", "active_methods", "expand", "get_method", "selectable"]

# every method, by name, in the order their files are imported (methods/__init__.py)
METHODS: dict[str, type[SearchMethod]] = {}


class SearchMethod:
    """A search method: its settings and the hooks the bilevel step calls. Stateless but for ``hp``.

    Class attributes:
    - ``name``: ``--model.method=NAME``; a subclass with a name registers itself in :data:`METHODS`;
    - ``citation`` / ``code``: the paper, and the official repository whose code this follows;
    - ``preset``: the DARTSSearch arguments ``method=NAME`` sets, the official code's values
      (an argument given explicitly wins);
    - ``keys``: the DARTSSearch arguments this method owns (its settings);
    - ``selectable``: False for an option that is no method of its own (the P-DARTS cap is a part
      of P-DARTS, not P-DARTS), which ``method=`` does not offer.
    """

    name: ClassVar[str] = ""
    citation: ClassVar[str] = ""
    code: ClassVar[str] = ""
    preset: ClassVar[dict[str, Any]] = {}
    keys: ClassVar[tuple[str, ...]] = ()
    selectable: ClassVar[bool] = True
    mixing: ClassVar[str | None] = None  # the relaxation kind of a ``mix`` method ("sigmoid", "gumbel", ...)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            if cls.name in METHODS and METHODS[cls.name].__qualname__ != cls.__qualname__:
                raise TypeError(f"search method {cls.name!r} is registered already by {METHODS[cls.name].__module__}")
            METHODS[cls.name] = cls

    def __init__(self, hp: Mapping[str, Any], operations: Sequence[str] = ()):
        self.hp = hp  # the search module's hyperparameters (read only)
        self.operations = tuple(operations)  # alpha's columns

    # --- which methods a search runs ---------------------------------------------------------------
    @classmethod
    def is_on(cls, hp: Mapping[str, Any]) -> bool:
        """Whether the settings ``hp`` turn this method on (default: one of its keys is truthy)."""
        return any(bool(hp.get(k)) for k in cls.keys)

    @classmethod
    def check(cls, hp: Mapping[str, Any], operations: Sequence[str]) -> None:
        """Refuse settings of this method that cannot work (ValueError saying what to change)."""

    @classmethod
    def fill(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """What ``method=NAME`` sets, given the arguments as they stand: the preset's keys not given (:func:`unset`)."""
        return {k: v for k, v in cls.preset.items() if unset(k, given.get(k))}

    # --- hooks the bilevel step calls ---------------------------------------------------------------
    def mix(self, alpha: torch.Tensor, sample: bool, seed: int) -> torch.Tensor:
        """alpha (E, O) -> mixing weights (E, O); ``sample``: a training forward (draw, if the method
        samples, from the random stream ``seed``); otherwise the deterministic weights the genotype is read from."""
        raise NotImplementedError(f"{self.name} does not change how alpha mixes the operations")

    def perturb(self, weights: torch.Tensor, phase: str, seed: int) -> torch.Tensor:
        """The mixing weights (E, O) of a training forward in ``phase`` ("arch": the architecture step,
        "weights": the weight step), changed (random draws from the stream ``seed``); default: as they are."""
        return weights

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        """Set this epoch's schedule (``epoch`` of ``epochs``, from 0); returns what to log."""
        return {}

    def regulariser(self, alphas: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor | None:
        """A term added to L_val, in alpha alone: ``alphas`` (E_total, O), every cell type's rows stacked."""
        return None

    def genotype(self, net: Any, space: Any, genotype: Any) -> Any:
        """The genotype of ``net``'s alpha under this method's rule, given the space's (``genotype``)."""
        return genotype

    def on_build(self, net: Any) -> None:
        """Called once on the new supernet (e.g. to initialise alpha as the official code does)."""

    def arch_weight_decay(self, weight_decay: float) -> float:
        """The architecture optimiser's weight decay, given the module's ``arch_weight_decay``."""
        return weight_decay

    weight_step_first: ClassVar[bool] = False  # the weight step before the architecture step (GDAS's order)

    # --- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What a resumed search needs of this method beyond alpha and the optimisers (default: nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={self.hp.get(k)!r}' for k in self.keys)})"


def selectable() -> list[str]:
    """The names ``method=`` accepts."""
    return [name for name, cls in METHODS.items() if cls.selectable]


def get_method(name: str) -> type[SearchMethod]:
    if name not in METHODS or not METHODS[name].selectable:
        raise ValueError(f"method must be one of {', '.join(selectable())}, not {name!r}")
    return METHODS[name]


def unset(key: str, value: Any) -> bool:
    """Whether a DARTSSearch argument was left for a method to fill: None, or partial_channels at 1 (off)."""
    return value is None or (key == "partial_channels" and value == 1)


def expand(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments ``method=NAME`` sets that were not given (:func:`unset`): its official settings.

    ``given``: the DARTSSearch arguments as they stand. Returns only the keys to change, so
    ``{**given, **expand(method, given)}`` is what runs; expanding twice changes nothing more.
    """
    return get_method(method).fill(given)


def active_methods(hp: Mapping[str, Any], operations: Sequence[str]) -> list[SearchMethod]:
    """The methods the settings ``hp`` turn on, in registry order, after every method has checked ``hp``."""
    for cls in METHODS.values():
        cls.check(hp, operations)
    return [cls(hp, operations) for cls in METHODS.values() if cls.is_on(hp)]
