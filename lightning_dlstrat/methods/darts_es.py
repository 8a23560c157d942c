"""DARTS-ES, the R-DARTS early stop: stop the search when the dominant eigenvalue of the Hessian of
L_val w.r.t. alpha grows, and roll alpha back to before the growth.

Zela, Elsken, Saikia, Marrakchi, Brox, Hutter, "Understanding and Robustifying Differentiable
Architecture Search", ICLR 2020; automl/RobustDARTS (commit 3dec3fe) ``src/utils.py``
(``EVLocalAvg``) and ``src/search/train_search.py``, with the published scripts' flags
(``--report_freq_hessian 2``):

- the eigenvalue is computed after every ``f``-th epoch (epochs 0, f, 2f, ...) and after the last
  (``eigen_every`` is f; the search module's collapse monitor computes it, of the Hessian of L_val
  plus alpha's weight decay, as ``analyze.py``);
- from the third evaluation on, a local average: the mean of the last ``w`` evaluations (of all
  of them while fewer), dated at the centre of its window, ``t - f * (w // 2)``;
- at an evaluated epoch ``t`` other than the last, once the local average ``d`` averages back is
  dated at or after the start epoch (``t - f * (w // 2) - f * d >= start``): stop if the newest
  local average over that one exceeds ``factor``, and roll back to the epoch the earlier one is
  dated at, the centre of the earlier window.

With f = 2, w = 5, d = 4, start 10, factor 1.3 (RobustDARTS's values): checks at even t >= 22,
stop if mean(e[t-8..t]) / mean(e[t-16..t-8]) > 1.3, roll back to t - 12.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import SearchMethod


class DARTSES(SearchMethod):
    name = "darts-es"
    citation = 'Zela et al., "Understanding and Robustifying Differentiable Architecture Search", ICLR 2020'
    code = "automl/RobustDARTS"
    keys = ("eigen_stop",)
    selectable = False  # an option on top of any method, with the collapse monitor's settings

    @classmethod
    def check(cls, hp, operations) -> None:
        if hp.get("eigen_stop") and not hp.get("eigen_every"):
            raise ValueError("eigen_stop=True stops on the eigenvalue's growth: it needs the monitor on, eigen_every >= 1")

    def decide(self, evaluated: Sequence[dict[str, Any]], last_epoch: int) -> dict[str, Any] | None:
        """``evaluated``: the per-epoch records that hold an eigenvalue, oldest first, the newest just
        evaluated; ``last_epoch``: the search's last epoch (no stop there). Returns ``{"ratio",
        "epoch"}`` (the epoch to roll back to) or None to go on."""
        hp = self.hp
        f, w, d = hp["eigen_every"], hp["eigen_stop_window"], hp["eigen_stop_delta"]
        t = evaluated[-1]["epoch"] if evaluated else None
        if t is None or t >= last_epoch:
            return None
        values = [r["eigenvalue"] for r in evaluated]
        # the local average after each evaluation n = 3, 4, ...: the mean of the last w (all while fewer)
        averages = [sum(values[max(0, n - w) : n]) / min(n, w) for n in range(3, len(values) + 1)]
        back = t - f * (w // 2) - f * d  # the date of the local average d back: the centre of the earlier window
        if back < hp["eigen_stop_start"] or len(averages) < d + 1:
            return None
        now, before = averages[-1], averages[-1 - d]
        if before > 0 and now / before > hp["eigen_stop_factor"]:
            return {"ratio": now / before, "epoch": back}
        return None
