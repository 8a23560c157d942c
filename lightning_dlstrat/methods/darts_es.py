"""DARTS-ES, the R-DARTS early stop: stop the search when the dominant eigenvalue of the Hessian of
L_val w.r.t. alpha grows, and roll alpha back to before the growth.

Zela, Elsken, Saikia, Marrakchi, Brox, Hutter, "Understanding and Robustifying Differentiable
Architecture Search", ICLR 2020; automl/RobustDARTS ``src/utils.py`` (the local averages of the
eigenvalues, their ratio against a factor, the rollback) and ``src/search/analyze.py`` (the
eigenvalue). The search module computes the eigenvalue (its collapse monitor, ``eigen_every``);
this file decides when to stop and where to roll back to.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import SearchMethod


class DARTSES(SearchMethod):
    name = "darts-es"
    citation = 'Zela et al., "Understanding and Robustifying Differentiable Architecture Search", ICLR 2020'
    code = "automl/RobustDARTS"
    keys = ("eigen_stop",)
    selectable = False  # an option on top of any method: it needs the monitor's settings as well

    @classmethod
    def check(cls, hp, operations) -> None:
        if hp.get("eigen_stop") and not hp.get("eigen_every"):
            raise ValueError("eigen_stop=True stops on the eigenvalue's growth: it needs the monitor on, eigen_every >= 1")

    def decide(self, evaluated: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
        """``evaluated``: the search's per-epoch records that hold an eigenvalue, oldest first.

        Local averages of ``eigen_stop_window`` consecutive eigenvalues; stop when the latest one
        exceeds the one ``eigen_stop_delta`` evaluations earlier by ``eigen_stop_factor``, rolling
        back to the epoch that earlier local average ends at, unless that epoch is before
        ``eigen_stop_start``. Returns ``{"ratio", "back"}`` (``back``: the record to roll back
        to) or None to go on.
        """
        hp = self.hp
        window, delta = hp["eigen_stop_window"], hp["eigen_stop_delta"]
        if len(evaluated) < window + delta:
            return None
        values = [r["eigenvalue"] for r in evaluated]
        now = sum(values[-window:]) / window
        before = sum(values[-window - delta : -delta]) / window
        back = evaluated[-1 - delta]  # the last epoch of the earlier window
        if back["epoch"] < hp["eigen_stop_start"] or not (before > 0 and now / before > hp["eigen_stop_factor"]):
            return None
        return {"ratio": now / before, "back": back}
