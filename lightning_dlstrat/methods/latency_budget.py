"""Search under a latency budget: the derived network's expected latency, differentiable in alpha,
held to a target by a Lagrange multiplier.

FBNet (Wu et al., CVPR 2019) and ProxylessNAS (Cai et al., ICLR 2019) make latency differentiable
through a lookup table: an edge's expected latency is the op-weighted sum of its operations'
measured latencies (:mod:`lightning_dlstrat.latency` builds the table on the device at hand). Here
the expectation follows the space's genotype rule, so it estimates the network the search will
derive, not the supernet:

- every edge kept, its argmax operation (NAS-Bench-201): ``E = sum_e sum_o p_eo * lat_eo`` with
  ``p = softmax(alpha)`` (``none`` costs nothing);
- each node keeps its ``k`` strongest edges, ``none`` never chosen (DARTS, k = 2): an edge's
  operation distribution is softmax(alpha) without ``none``, renormalised (``q``), and the edge is
  kept with a soft top-k probability ``min(1, k * s_e / sum_{e' into the node} s_e')`` where ``s_e``
  is its strongest non-``none`` weight (the rule's ranking). The approximation: a soft top-k in
  place of the hard one, and a mean over the operation distribution in place of its argmax.

The value the budget is checked against is not that soft expectation but the table's prediction
for the genotype the rule would derive from alpha now (each edge's argmax; each node's k strongest
edges): a straight-through estimate, ``E = soft + (derived - soft).detach()``, whose gradient is
the soft expectation's. Without it, a spread-out alpha (cheap and expensive operations sharing the
weight) met a budget its argmax network exceeded by a third (measured on NB201 digits-hard: soft
expectation under 1.1 ms, derived network 1.46 ms). Methods with their own genotype rule (Fair
DARTS's threshold, GDAS's pairs, the P-DARTS cap) are checked against the space's rule. The error
of the whole model against measurement is reported after each search (predicted vs measured).

The table's latency of one network is ``fixed_ms + sum over the cells of the network`` (normal and
reduction cells share alpha, but each cell position has its own entries).

The budget is a constraint on the derived network, so the derivation honours it too
(``latency_project``, on by default): when the rule's network is predicted over the budget at the
end (or at any epoch's genotype), operations on its kept edges are swapped for cheaper ones, the
swap that gives up the least weight per millisecond saved first, until it fits; a dual ascent over
a short search is approached from above and otherwise can end over it (6-41 % in the DARTS
space on digits-hard, docs/latency.md). ``none`` is never
swapped in: it would meet a budget with a cell that does not connect; and a cell the rule left
without a path from input to output (NAS-Bench-201's rule keeps ``none``, which costs nothing, so a
budget pulls towards it) is connected first, along the path predicted fastest.

The constraint ``E <= T`` enters the architecture loss as ``lambda * E / T``; after each
architecture step the multiplier takes a dual ascent step, ``lambda <- max(0, lambda + eta * (E / T - 1))``
(``latency_lr`` = eta), so it grows while the budget is exceeded and decays to 0 when it is met: a
user gives the budget, not a penalty weight. The expectation is computed in float32 from alpha,
which every DDP rank holds identically, so lambda is the same on every rank; it is checkpointed
with the search (``state_dict``) and resumed. Composes with every method (it is a regulariser of
alpha; with a sampling method the expectation still uses softmax(alpha), the genotype's weights).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .base import SearchMethod


class LatencyBudget(SearchMethod):
    name = "latency"
    citation = 'Wu et al., "FBNet", CVPR 2019; Cai et al., "ProxylessNAS", ICLR 2019 (latency lookup tables)'
    code = "(a lookup table measured here: lightning_dlstrat/latency.py)"
    keys = ("latency_target",)
    selectable = False  # an option every method composes with, not a method of its own

    @classmethod
    def check(cls, hp, operations) -> None:
        target = hp.get("latency_target")
        if target is None:
            return
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise ValueError(f"latency_target must be a positive number of milliseconds, not {target!r}")
        if not hp.get("latency_table"):
            raise ValueError("latency_target needs latency_table, the path of a table `dlstrat latency profile` wrote (dlstrat fit fills it in)")
        lr = hp.get("latency_lr")
        if lr is not None and not lr > 0:
            raise ValueError(f"latency_lr must be positive, not {lr!r}")

    def __init__(self, hp, operations=()):
        super().__init__(hp, operations)
        from ..latency import LatencyTable  # data only: the table file

        self.table = LatencyTable.load(hp["latency_table"])
        if list(self.table.primitives) != list(operations):
            raise ValueError(f"latency table {hp['latency_table']} times the operations {self.table.primitives}, but the search's are {list(operations)}")
        self.target = float(hp["latency_target"])
        self.eta = float(hp.get("latency_lr") or 0.05)
        self.multiplier = 0.0  # lambda
        self.expected_ms = float("nan")  # at the last architecture step
        lat = {cell: torch.tensor(rows, dtype=torch.float32) for cell, rows in self.table.cells.items()}  # (cells, E, O) per type
        self.per_type = {cell: t.sum(0) for cell, t in lat.items()}  # (E, O): every cell of a type shares its alpha
        self.edges = [t.shape[0] for t in self.per_type.values()]

    def expected_latency(self, alphas: torch.Tensor) -> torch.Tensor:
        """The latency of the network the rule derives from ``alphas`` (E_total, O, cell types stacked), with the
        gradient of its soft expectation (a straight-through estimate): its value is the table's prediction
        for the genotype the space's rule would take now, so the budget is checked on that network."""
        soft = self.soft_latency(alphas)
        return soft + (self.derived_latency(alphas) - soft).detach()

    @torch.no_grad()
    def derived_latency(self, alphas: torch.Tensor) -> torch.Tensor:
        """The table's prediction for the genotype the space's rule takes from ``alphas`` (every edge's argmax; or
        each node's k strongest edges, each its argmax, never an excluded operation)."""
        total = torch.tensor(self.table.fixed_ms, dtype=alphas.dtype, device=alphas.device)
        rule = self.table.rule
        for alpha, lat in zip(alphas.split(self.edges), self.per_type.values()):
            lat = lat.to(alphas.device, alphas.dtype)  # (E, O)
            p = F.softmax(alpha, dim=-1)  # (E, O)
            if rule["kind"] == "all":
                total = total + lat.gather(1, p.argmax(-1, keepdim=True)).sum()
                continue
            keep = torch.tensor([op not in rule.get("exclude", ()) for op in self.operations], device=alphas.device)  # (O,)
            u = torch.where(keep, p, torch.full_like(p, -1.0))  # (E, O): excluded operations never win
            strength, best = u.max(-1)  # (E,), (E,)
            for node in rule["nodes"]:
                idx = torch.tensor(node, device=alphas.device)
                top = idx[strength[idx].topk(min(rule["k"], len(node))).indices]  # the node's k strongest edges
                total = total + lat[top, best[top]].sum()
        return total

    def soft_latency(self, alphas: torch.Tensor) -> torch.Tensor:
        """The soft expectation (differentiable): the module docstring's formula."""
        if alphas.shape[0] != sum(self.edges):
            raise ValueError(f"the latency table {self.hp['latency_table']} has {sum(self.edges)} edges over its cell types, the supernet {alphas.shape[0]}: "
                             "profile the table for this space's cell (its steps) with `dlstrat latency profile`")
        total = torch.tensor(self.table.fixed_ms, dtype=alphas.dtype, device=alphas.device)
        rule = self.table.rule
        for alpha, lat in zip(alphas.split(self.edges), self.per_type.values()):
            lat = lat.to(alphas.device, alphas.dtype)  # (E, O)
            p = F.softmax(alpha, dim=-1)  # (E, O)
            if rule["kind"] == "all":
                total = total + (p * lat).sum()
                continue
            keep = torch.tensor([op not in rule.get("exclude", ()) for op in self.operations], device=alphas.device)  # (O,)
            u = p * keep  # (E, O): the operations the rule can choose
            q = u / u.sum(-1, keepdim=True).clamp_min(1e-12)  # (E, O)
            edge_ms = (q * lat).sum(-1)  # (E,)
            strength = u.max(-1).values  # (E,): the rule ranks a node's edges by their strongest operation
            for node in rule["nodes"]:
                idx = torch.tensor(node, device=alphas.device)
                s = strength[idx]  # (n,)
                kept = (rule["k"] * s / s.sum().clamp_min(1e-12)).clamp(max=1.0)  # soft top-k
                total = total + (kept * edge_ms[idx]).sum()
        return total

    def regulariser(self, alphas: torch.Tensor, epoch: int, epochs: int) -> torch.Tensor | None:
        expected = self.expected_latency(alphas)
        term = self.multiplier * expected / self.target
        # dual ascent, once per architecture step (this hook is called once per step): lambda grows
        # while the budget is exceeded and shrinks to 0 once it is met
        self.expected_ms = float(expected.detach())
        self.multiplier = max(0.0, self.multiplier + self.eta * (self.expected_ms / self.target - 1.0))
        return term

    def genotype(self, net, space, genotype):
        """With ``latency_project`` (the default), the derived network is held to the budget and to a cell that
        connects. A cell the rule left with no path from input to output (NAS-Bench-201 keeps ``none`` like any
        operation, and ``none`` costs nothing) is connected first, along the path predicted fastest. Then, while
        the table predicts it over the budget, operations on the kept edges are swapped for cheaper ones (never
        ``none`` or an excluded one), each time the swap that gives up the least architecture weight per
        millisecond saved, until it fits or no cheaper operation is left (then the report says by how much it is over)."""
        if not self.hp.get("latency_project", True):
            return genotype
        weights = space.cell_weights(net)  # {cell type: (E, O)}, the weights the rule ranked by
        genotype = self.reconnect(space, genotype, weights)
        ops = list(self.operations)
        banned = self.table.never_derived()
        while self.table.predict(space, genotype) > self.target:
            best = None  # (weight given up per ms saved, cell type, k, operation)
            for cell, chosen in space.chosen_edges(genotype).items():
                lat, w = self.per_type[cell], weights[cell]  # (E, O) each
                for k, (e, op) in enumerate(chosen):
                    i = ops.index(op)
                    for j, alt in enumerate(ops):
                        saved = float(lat[e, i] - lat[e, j])
                        if alt in banned or saved <= 0:
                            continue
                        score = max(float(w[e, i] - w[e, j]), 0.0) / saved
                        if best is None or score < best[0]:
                            best = (score, cell, k, alt)
            if best is None:
                break
            genotype = space.with_op(genotype, best[1], best[2], best[3])
        return genotype

    def reconnect(self, space, genotype, weights):
        """``genotype`` with every cell connected: of the paths from input to output (``space.reconnections``),
        the one whose ``none`` edges, each given its strongest allowed operation, make the fastest network. A
        budget pushes weight towards ``none`` (it costs nothing), and a cell that carries nothing learns nothing
        (chance, 8.6 %, on NAS-Bench-201 digits at 0.7 ms: docs/latency.md)."""
        paths = space.reconnections(genotype)
        if not paths:
            return genotype
        ops = list(self.operations)
        allowed = [j for j, op in enumerate(ops) if op not in self.table.never_derived()]
        edges = space.chosen_edges(genotype)
        best = None  # (predicted ms, genotype)
        for path in paths:
            candidate = genotype
            for cell, k in path:
                row = edges[cell][k][0]
                j = max(allowed, key=lambda j: float(weights[cell][row, j]))
                candidate = space.with_op(candidate, cell, k, ops[j])
            ms = self.table.predict(space, candidate)
            if best is None or ms < best[0]:
                best = (ms, candidate)
        return best[1]

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        if self.expected_ms != self.expected_ms:  # nan: no architecture step yet
            return {"latency/multiplier": self.multiplier}
        return {"latency/expected_ms": self.expected_ms, "latency/multiplier": self.multiplier}

    def state_dict(self) -> dict[str, Any]:
        return {"multiplier": self.multiplier, "expected_ms": self.expected_ms}

    def load_state_dict(self, state) -> None:
        self.multiplier = float(state["multiplier"])
        self.expected_ms = float(state["expected_ms"])
