"""DARTS architecture search as a LightningModule: the bilevel optimisation of weights and alpha.

References:
1) Liu, Simonyan, Yang, "DARTS: Differentiable Architecture Search", ICLR 2019, Sec. 2.3 and
   App. A.1.1; the code this follows is quark0/darts ``cnn/train_search.py`` and ``architect.py``.
2) Xu et al., "PC-DARTS", ICLR 2020 (partial channels and edge normalisation, in the supernet).
3) Dong & Yang, "NAS-Bench-201", ICLR 2020: DARTS in the benchmark's cell space (``space="nb201"``;
   its code of record is D-X-Y/AutoDL-Projects ``exps/NATS-algos/search-cell.py``).
4) Zela et al., "Understanding and Robustifying Differentiable Architecture Search", ICLR 2020
   (R-DARTS; automl/RobustDARTS): the dominant eigenvalue of the Hessian of L_val w.r.t. alpha
   tracks the collapse to parameter-free cells; the collapse monitor (``eigen_every``) and the
   early stop on its growth (``eigen_stop``) follow it (:meth:`DARTSSearch.dominant_eigenvalue`).
5) The search methods (``method=``; one file each in :mod:`lightning_dlstrat.methods`, with its
   paper and official code): DARTS, DARTS-, beta-DARTS, SDARTS-RS, Fair DARTS, GDAS, DrNAS,
   PC-DARTS, and the options the P-DARTS skip cap (``max_skips``) and the R-DARTS early stop
   (``eigen_stop``). What a method changes reaches this module only through its hooks: how alpha
   mixes the operations (a :class:`~lightning_dlstrat.methods.Relaxation` the supernet calls), the
   per-epoch schedule, a regulariser of L_val in alpha, the genotype rule.

The search space is a part (``space``: a name from :data:`lightning_dlstrat.spaces.SPACES`): it
builds the supernet from the arguments it reads (``SearchSpace.search_args``), says which cell
types alpha has and which operations a genotype keeps, and draws the pictures. This module holds
only what every space shares: the bilevel optimisation, the logging and the checkpoints.

Every training batch is ``{"train": (x, y), "val": (x, y)}`` from two disjoint halves of the
training split (the datamodule's ``bilevel=True``). One search step (:meth:`DARTSSearch.search_step`):

1. architecture step: alpha <- Adam(grad_alpha L_val), where the gradient is
   - ``order=1``: grad_alpha L_val(w, alpha) at the current weights, or
   - ``order=2``: the gradient through one virtual SGD step of the weights,
     w' = w - xi (mu * momentum + grad_w L_train(w) + wd * w), xi the current weight lr:
     grad_alpha L_val(w', alpha) - xi * H v, v = grad_w' L_val(w', alpha), with the mixed
     Hessian-vector product H v = grad^2_{alpha,w} L_train(w) v taken
     - ``hessian="fd"`` (the paper's method, the default): by central differences,
       (grad_alpha L_train(w + eps v) - grad_alpha L_train(w - eps v)) / (2 eps), eps = 0.01 / |v|.
       This is an approximation, not the exact gradient: ReLU and max-pooling are piecewise linear
       in w, and at the paper's radius many units change sign between w - eps v and w + eps v
       (docs/darts.md, "What the second-order options compute");
     - ``hessian="exact"``: by double backward, grad_alpha (grad_w L_train(w) . v) with v held
       constant, the exact mixed second derivative of the network as autograd sees it;
2. weight step: w <- SGD(grad_w L_train(w, alpha)), gradients clipped to norm 5.

The architecture step leaves the weights, BatchNorm statistics and the weight optimiser exactly
as they were; the weight optimiser holds no architecture parameter.

Manual optimisation makes both steps explicit and keeps Lightning's machinery in the loop: every
backward goes through ``manual_backward``, so the precision plugin scales fp16 losses and DDP
all-reduces every gradient (alpha's included: alpha is a registered parameter), which keeps
alpha identical on all ranks. Under DDP each quantity above is the gradient of the global batch,
N ranks x the per-rank batch size: keep the paper's lr for a global batch of 64, or scale ``lr``
(and ``arch_lr``) with the global batch as PC-DARTS did (lr 0.1 for batch 256).
Alpha, its softmax and the finite-difference arithmetic stay in float32 under mixed precision.
With ``nesterov=True`` (the NAS-Bench-201 search config) the weight optimiser uses Nesterov
momentum, while the virtual step of ``order=2`` stays the plain-momentum one above, as in the
DARTS and NAS-Bench-201 code.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from ..core import atomic_write_bytes, destroy_gloo_group_at_exit, mean_over_ranks, planned_epochs
from ..methods import Relaxation, SearchMethod, active_methods, expand, get_method
from ..spaces import SearchSpace, get_space
from .classifier import EvaluatesClassification

Batch = tuple[torch.Tensor, torch.Tensor]  # (x (B, C, H, W), y (B,))


class DARTSSearch(EvaluatesClassification, L.LightningModule):
    """Searches a cell of a search space (DARTS or NAS-Bench-201) on a bilevel datamodule.

    Example::

        dm = DigitsDataModule(bilevel=True)
        search = DARTSSearch(in_shape=dm.dims, num_classes=dm.num_classes, C=8, layers=5, order=1)
        L.Trainer(max_epochs=10).fit(search, datamodule=dm)
        search.genotype()  # Genotype(normal=[('sep_conv_3x3', 0), ...], ...)

        nb201 = DARTSSearch(in_shape=dm.dims, num_classes=dm.num_classes, space="nb201", C=8, N=1, order=1)
        L.Trainer(max_epochs=10).fit(nb201, datamodule=dm)
        str(nb201.genotype())  # '|nor_conv_3x3~0|+|...|', the benchmark's string

    Defaults are the DARTS paper's CIFAR-10 search (C=16, 8 cells, second order, SGD 0.025 cosine
    to 0.001, weight decay 3e-4, Adam 3e-4 for alpha; run it 50 epochs with batch size 64). For
    the NAS-Bench-201 benchmark's DARTS search (C=16, N=5, the same optimisers but weight decay
    5e-4 and Nesterov momentum) pass ``space="nb201", weight_decay=5e-4, nesterov=True``;
    ``dlstrat fit --model darts --model.space=nb201`` takes them from its preset
    (``recipes/presets/darts.yaml``). Arguments marked with a space are read by that space's
    supernet only; another space refuses them away from their defaults. The collapse fixes
    (``method="darts-" | "beta-darts" | "sdarts-rs" | "fair-darts" | "gdas" | "drnas" | "pc-darts"``,
    or their keys; ``max_skips`` for the P-DARTS cap), the exact second order (``hessian="exact"``)
    and the collapse monitor (``eigen_every``) are off by default: docs/darts.md. As with any manually
    optimised module, ``trainer.global_step`` counts optimiser steps: two per batch (one during
    ``warmup_epochs``), which ``max_steps`` and ``log_every_n_steps`` refer to.
    """

    # The search result is the architecture at the end of the search (as in the paper), not the
    # epoch with the best supernet accuracy: ModelCheckpoint keeps the latest epoch as "best".
    monitor, mode = None, "max"

    def __init__(
        self,
        in_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        space: str = "darts",  # the search space: "darts" (Liu et al. 2019) or "nb201" (NAS-Bench-201); docs/spaces.md
        C: int = 16,  # channels of the first cells
        layers: int = 8,  # darts: cells in the supernet
        steps: int = 4,  # darts: intermediate nodes per cell
        multiplier: int = 4,  # darts: nodes concatenated into a cell's output
        stem_multiplier: int = 3,  # darts: the stem's channels, times C
        N: int = 5,  # nb201: cells per stage (5 in the benchmark)
        primitives: Sequence[str] | None = None,  # candidate operations (alpha's columns); None: the space's own (8 DARTS, 5 NAS-Bench-201)
        partial_channels: int = 1,  # darts: PC-DARTS k (4 in PC-DARTS); 1 turns partial channels off
        order: int = 2,  # 1: first-order approximation; 2: the unrolled (second-order) gradient
        lr: float = 0.025,  # weight SGD learning rate, cosine-annealed per epoch ...
        lr_min: float = 0.001,  # ... down to this at max_epochs
        momentum: float = 0.9,
        nesterov: bool = False,  # Nesterov momentum for the weights (the NAS-Bench-201 search config: True)
        weight_decay: float = 3e-4,
        grad_clip: float = 5.0,  # max gradient norm of the weights (alpha is never clipped)
        arch_lr: float = 3e-4,  # Adam for alpha
        arch_betas: Sequence[float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        warmup_epochs: int = 0,  # epochs that train only the weights, alpha frozen (PC-DARTS: 15)
        fd_radius: float = 0.01,  # finite-difference step for order=2: eps = fd_radius / |v|
        hessian: str = "fd",  # order=2's mixed Hessian-vector product: "fd" (central differences, the paper's) or "exact" (double backward)
        method: str = "darts",  # a search method (lightning_dlstrat.methods); it sets those of its settings below not given
        relaxation: str | None = None,  # alpha -> mixing weights: softmax (DARTS), sigmoid (Fair DARTS), gumbel (GDAS), dirichlet (DrNAS)
        aux_skip: bool | None = None,  # DARTS-: an auxiliary skip on every edge, weight beta decaying linearly 1 -> 0
        beta_decay: float | None = None,  # beta-DARTS: weight of mean(logsumexp(alpha)) in L_val, growing by this per epoch (code: 0.5)
        beta_decay_unrolled: bool | None = None,  # beta-DARTS: add the term with order=2 too (the code: first order only)
        sdarts_epsilon: float | None = None,  # SDARTS-RS: uniform noise in [-eps, eps] on the mixing weights in the weight step (0.03) ...
        sdarts_epsilon_max: float | None = None,  # ... eps ramped linearly to this over the search (SDARTS code: 0.3)
        zero_one_weight: float | None = None,  # Fair DARTS: w01 of the zero-one loss -mean((sigmoid(alpha) - 0.5)^2) (10)
        fair_threshold: float | None = None,  # Fair DARTS: keep an edge in the genotype only if its sigmoid reaches this (0.85); None: top-2 edges
        gumbel_tau: Sequence[float] | None = None,  # GDAS: Gumbel temperature annealed linearly (start, end) = (10, 0.1)
        dirichlet_reg: str | None = None,  # DrNAS's reg_type: "l2" (alpha's weight decay, the code's default) or "kl" (the KL term instead)
        dirichlet_kl: float | None = None,  # DrNAS, dirichlet_reg="kl": weight of KL(Dir(ELU(alpha) + 1) || Dir(1)) in L_val (1e-3)
        max_skips: int | None = None,  # P-DARTS: at most this many skip_connect in the discretised (normal) cell (2)
        eigen_every: int = 0,  # collapse monitor (R-DARTS): the dominant eigenvalue of d2 L_val / d alpha2 every this many epochs; 0: off
        eigen_iters: int = 20,  # power-iteration steps (Hessian-vector products) per eigenvalue
        eigen_stop: bool = False,  # R-DARTS early stop (DARTS-ES): stop when the eigenvalue's local average grows by eigen_stop_factor
        eigen_stop_factor: float = 1.3,  # ... the ratio of the local average now over eigen_stop_delta evaluations earlier (RobustDARTS code: 1.3)
        eigen_stop_window: int = 5,  # evaluations averaged into one local average (RobustDARTS: 5)
        eigen_stop_delta: int = 4,  # evaluations between the two local averages compared (RobustDARTS: 4)
        eigen_stop_start: int = 10,  # no early stop back to an epoch before this (RobustDARTS: 10)
        latency_target: float | None = None,  # a latency budget (ms) for the derived network, held by a Lagrange multiplier (methods/latency_budget.py)
        latency_table: str | None = None,  # ... the measured lookup table it predicts from (`dlstrat fit` finds or profiles it)
        latency_lr: float = 0.05,  # ... the multiplier's dual ascent step per architecture step
        latency_project: bool = True,  # ... derive within the budget: a cell that does not connect connected, then cheaper operations on the kept edges, least-weight first, until predicted <= target
        implementation: str = "fast",  # "fast": edges batched per node; "reference": per edge, as the papers' code
        channels_last: bool = True,  # darts, fast implementation only: NHWC memory (much faster on CPU)
    ):
        super().__init__()
        get_method(method)  # ValueError naming the methods for an unknown one
        self.space: SearchSpace = get_space(space)  # ValueError naming the spaces for an unknown one
        space = self.space.name  # the canonical name ("NAS-Bench-201" -> "nb201") is what hparams keep (save_hyperparameters reads it)
        if order not in (1, 2):
            raise ValueError(f"order must be 1 (first-order DARTS) or 2 (second order, unrolled), not {order!r}")
        if warmup_epochs < 0 or fd_radius <= 0 or grad_clip <= 0:
            raise ValueError(f"need warmup_epochs >= 0, fd_radius > 0 and grad_clip > 0, got {warmup_epochs}, {fd_radius}, {grad_clip}")
        if nesterov and momentum <= 0:
            raise ValueError(f"nesterov=True needs momentum > 0, got momentum={momentum}")
        if eigen_every < 0 or eigen_iters < 1 or eigen_stop_window < 1 or eigen_stop_delta < 1 or eigen_stop_factor <= 0:
            raise ValueError(
                "need eigen_every >= 0 (0: off), eigen_iters >= 1, eigen_stop_window >= 1, eigen_stop_delta >= 1 and eigen_stop_factor > 0, "
                f"got {eigen_every}, {eigen_iters}, {eigen_stop_window}, {eigen_stop_delta}, {eigen_stop_factor}"
            )
        if hessian not in ("fd", "exact"):
            raise ValueError(f"hessian must be 'fd' (finite differences, the paper's) or 'exact' (double backward), not {hessian!r}")
        if implementation not in ("fast", "reference"):
            raise ValueError(f"implementation must be 'fast' or 'reference', not {implementation!r}")
        self.save_hyperparameters()
        # method=NAME fills the settings not given with its official ones (methods.expand). A run's
        # configuration is expanded already when it is resolved (config.yaml holds what ran); a
        # Python user's DARTSSearch(method="gdas") is expanded here, the same way.
        self.hparams.update(expand(method, self.hparams))
        if self.hparams.relaxation not in (None, "softmax", "sigmoid", "gumbel", "dirichlet"):
            raise ValueError(f"relaxation must be softmax, sigmoid (Fair DARTS), gumbel (GDAS) or dirichlet (DrNAS), not {self.hparams.relaxation!r}")
        self.automatic_optimization = False
        # both compute the same function (tests/test_darts_fast.py, tests/test_spaces.py); the fast one batches the edges
        self.net = self.space.search_supernet(implementation, in_shape, num_classes, **self.space.supernet_args(self.hparams, defaults=_DEFAULTS))
        # the methods these settings turn on (each checks its own), and how alpha mixes the ops
        self.methods: list[SearchMethod] = active_methods(self.hparams, self.net.operations)
        for m in self.methods:
            m.on_build(self.net)
        relaxation = Relaxation(self.methods)
        if relaxation.mixer is not None or relaxation.perturbers:
            self.net.relaxation = relaxation
        self.epoch_start(0, 1)
        # the random stream of sampled relaxations and noise: this seed and a step counter (both checkpointed)
        self._sample_seed = int(torch.initial_seed() % 2**31)
        self._sample_step = 0
        self.configure_metrics(num_classes)
        self.history: list[dict[str, Any]] = []  # one record per epoch; kept in checkpoints
        self._monitor_batch: Batch | None = None  # the epoch's first validation batch (collapse monitor)

    # --- the search methods' hooks ------------------------------------------------------------
    def method(self, name: str) -> SearchMethod | None:
        """The active method named ``name`` (e.g. ``"gdas"``), or None when its settings are off."""
        return next((m for m in self.methods if m.name == name), None)

    def epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        """Every method's schedule for ``epoch`` of ``epochs``; what they log."""
        logged: dict[str, float] = {}
        for m in self.methods:
            logged.update(m.on_epoch_start(epoch, epochs))
        return logged

    def _epochs(self) -> tuple[int, int]:
        """(this epoch, the run's planned epochs); (0, 1) outside a Trainer."""
        if self._trainer is None:
            return 0, 1
        return self.current_epoch, planned_epochs(self.trainer, steps_per_batch=2)

    def arch_regulariser(self) -> torch.Tensor | None:
        """The terms the methods add to L_val (beta-DARTS, Fair DARTS, DrNAS), in alpha alone; None when there are none."""
        alphas = [a for a in self.net.arch_parameters() if a.dim() == 2]  # (E, O) op alphas, not PC-DARTS's edge betas
        epoch, epochs = self._epochs()
        with torch.autocast(device_type=alphas[0].device.type, enabled=False):
            stacked = torch.cat([a.to(torch.promote_types(a.dtype, torch.float32)) for a in alphas])  # (E_total, O)
            terms = [term for m in self.methods if (term := m.regulariser(stacked, epoch, epochs)) is not None]
        return sum(terms) if terms else None

    def _regulariser_gradients(self) -> list[torch.Tensor] | None:
        reg = self.arch_regulariser()
        if reg is None:
            return None
        alphas = self.net.arch_parameters()
        grads = torch.autograd.grad(reg, alphas, allow_unused=True)
        return [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]

    def _set_sample_seed(self, phase: int) -> None:
        """A fresh, reproducible random stream for this step's phase (0: architecture, 1: weights) and rank."""
        relax = self.net.relaxation
        if relax is not None:
            rank = self.global_rank if (self._trainer is not None or self._fabric is not None) else 0
            relax.seed = (self._sample_seed * 1_000_003 + 4 * self._sample_step + phase + 2 * (rank + 1) * 7_919) % 2**62

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, num_classes)

    def genotype(self) -> Any:
        """The space's genotype of the current alpha (``Genotype`` for darts, ``NB201Genotype`` for nb201).

        With ``max_skips`` (P-DARTS), while the cell keeps more ``skip_connect`` than that, the
        kept skip of smallest weight has its weight set to zero and the cell is derived again (the
        P-DARTS code's rule; ``space.cap_skips``), so another operation or edge takes its place.
        """
        genotype = self.net.genotype()
        for m in self.methods:
            genotype = m.genotype(self.net, self.space, genotype)
        return genotype

    def export_network(self) -> None:
        """A search publishes its genotype, not a network: retrain it (``space.retrain_recipe``) and export that."""
        return None

    @staticmethod
    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # float32 under autocast (fp16 / bf16 logits); float64 stays float64 for exact checks
        return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), y)

    # --- optimisers ----------------------------------------------------------------------------
    def make_optimizers(self) -> tuple[torch.optim.SGD, torch.optim.Adam]:
        """(weight SGD, alpha Adam) over disjoint parameter sets; usable without a Trainer."""
        hp = self.hparams
        w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.nesterov)
        a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=hp.arch_lr, betas=tuple(hp.arch_betas), weight_decay=self.arch_weight_decay())
        return w_opt, a_opt

    def arch_weight_decay(self) -> float:
        """Alpha's weight decay: the module's, unless a method replaces it (DrNAS's reg_type=kl: 0)."""
        weight_decay = self.hparams.arch_weight_decay
        for m in self.methods:
            weight_decay = m.arch_weight_decay(weight_decay)
        return weight_decay

    def setup(self, stage: str) -> None:
        destroy_gloo_group_at_exit()

    def configure_optimizers(self):
        w_opt, a_opt = self.make_optimizers()
        # the run's real length: max_steps may end it before max_epochs (two optimiser steps a batch)
        epochs = planned_epochs(self.trainer, steps_per_batch=2)
        # stepped by hand at the end of every epoch (manual optimisation)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(w_opt, T_max=epochs, eta_min=self.hparams.lr_min)
        # resumed with another length: the saved schedule continues over this one (not at lr_min)
        from ..core import replan_cosine

        replan_cosine(self.__dict__.pop("_resumed_from", None), schedule)
        return [w_opt, a_opt], [schedule]

    # --- the search step (usable without a Trainer: benchmarks call it directly) -----------------
    def _backward(self, loss: torch.Tensor) -> None:
        """``manual_backward`` (loss scaling, DDP all-reduce) when run by a Trainer or Fabric."""
        if self._trainer is None and self._fabric is None:
            loss.backward()
        else:
            self.manual_backward(loss)

    def _loss_scale(self) -> float:
        """The fp16 GradScaler's current scale (gradients come out multiplied by it), else 1."""
        if self._fabric is not None:
            plugin = self._fabric.strategy.precision
        elif self._trainer is not None:
            plugin = self.trainer.precision_plugin
        else:
            return 1.0
        scaler = getattr(plugin, "scaler", None)
        return 1.0 if scaler is None else float(scaler.get_scale())

    def _gradients(self, loss: torch.Tensor, params: Sequence[nn.Parameter]) -> list[torch.Tensor]:
        """Backward ``loss`` from zeroed gradients; return those of ``params``, unscaled."""
        for p in self.net.parameters():
            p.grad = None
        self._backward(loss)
        scale = self._loss_scale()
        # parameters stay float32 (or float64) under mixed precision, and so do their gradients;
        # a parameter the loss does not reach (alphas_normal with fewer than 3 cells) gets zeros
        return [torch.zeros_like(p) if p.grad is None else p.grad / scale for p in params]

    def _alpha_gradients(self, loss: torch.Tensor) -> list[torch.Tensor]:
        """grad_alpha of ``loss`` alone, unscaled and averaged over DDP ranks.

        ``torch.autograd.grad`` with alpha as its only inputs lets every convolution's backward
        skip the weight gradient that a plain ``backward`` would compute and throw away (its
        effect on speed: docs/benchmarks.md). It bypasses DDP's gradient hooks, so the ranks'
        gradients are averaged here, in one collective.
        """
        alphas = self.net.arch_parameters()
        scale = self._loss_scale()  # as the precision plugin's backward would scale the loss
        grads = torch.autograd.grad(loss * scale, alphas, allow_unused=True)
        return mean_over_ranks(self, [torch.zeros_like(p) if g is None else g / scale for p, g in zip(alphas, grads)])

    def architecture_gradient(self, train: Batch, val: Batch, w_opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        """The hypergradient dL_val/dalpha (order 1 or 2), one tensor per architecture parameter.

        Leaves weights and BatchNorm buffers bit-for-bit unchanged (saved and restored), so the
        forward passes taken here are side-effect free.
        """
        net, hp = self.net, self.hparams
        alphas, weights = net.arch_parameters(), net.weight_parameters()
        buffers = [b.detach().clone() for b in net.buffers()]
        (x_train, y_train), (x_val, y_val) = train, val
        if hp.order == 1:
            grads = self._alpha_gradients(self.loss(net(x_val), y_val))
        else:
            group = w_opt.param_groups[0]
            xi, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            w0 = [p.detach().clone() for p in weights]
            # virtual step w' = w - xi (mu * momentum buffer + grad_w L_train + wd * w): what the
            # weight optimiser's next step would do without alpha changing (architect.py)
            g_train = self._gradients(self.loss(net(x_train), y_train), weights)
            with torch.no_grad():
                for p, g in zip(weights, g_train):
                    step = g + wd * p
                    buf = w_opt.state.get(p, {}).get("momentum_buffer")
                    if buf is not None:
                        step = step + mu * buf
                    p.sub_(xi * step)
            grads_and_v = self._gradients(self.loss(net(x_val), y_val), alphas + weights)
            grads, v = grads_and_v[: len(alphas)], grads_and_v[len(alphas) :]  # v = grad_w' L_val(w')
            with torch.no_grad():
                for p, p0 in zip(weights, w0):
                    p.copy_(p0)
            hv, denominator = self._mixed_hvp_parts(train, v)
            grads = [g - xi * h / denominator for g, h in zip(grads, hv)]
        with torch.no_grad():
            for b, b0 in zip(net.buffers(), buffers):
                b.copy_(b0)
        for p in net.parameters():
            p.grad = None
        return grads

    def mixed_hessian_vector_product(self, train: Batch, v: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """grad^2_{alpha,w} L_train(w, alpha) v at the current weights, one tensor per architecture parameter.

        ``hessian="fd"``: central differences of grad_alpha L_train along v with eps = fd_radius / |v|
        (the paper's approximation, Liu et al. 2019 eq. 8; exact only where the loss is smooth
        within the radius). ``hessian="exact"``: double backward, grad_alpha (grad_w L_train . v).
        Either way averaged over DDP ranks; weights are left as they were (BatchNorm buffers are
        the caller's to restore).
        """
        hv, denominator = self._mixed_hvp_parts(train, v)
        return [h / denominator for h in hv]

    def _mixed_hvp_parts(self, train: Batch, v: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], Any]:
        """(H v times denominator, denominator): the finite difference's 2 eps is divided last, as it always was."""
        net, hp = self.net, self.hparams
        alphas, weights = net.arch_parameters(), net.weight_parameters()
        x_train, y_train = train
        if hp.hessian == "exact":
            scale = self._loss_scale()  # the fp16 loss scale, as in _alpha_gradients
            loss = self.loss(net(x_train), y_train) * scale
            g_w = torch.autograd.grad(loss, weights, create_graph=True, allow_unused=True)
            # v is a constant (detached); g . v is linear in v, so one more backward gives H v
            dot = sum((g * t.detach().to(g.dtype)).sum() for g, t in zip(g_w, v) if g is not None)
            hv = torch.autograd.grad(dot, alphas, allow_unused=True)
            return mean_over_ranks(self, [torch.zeros_like(p) if h is None else h / scale for p, h in zip(alphas, hv)]), 1.0
        w0 = [p.detach().clone() for p in weights]
        # central differences of grad_alpha L_train along v, at w (not w'): the mixed
        # Hessian-vector product; eps = r / |v| makes the perturbation |eps v| = r
        v_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v]))
        eps = hp.fd_radius / v_norm.clamp_min(1e-12)
        g_pm = []
        for sign in (1.0, -1.0):
            with torch.no_grad():
                for p, p0, t in zip(weights, w0, v):
                    p.copy_(p0 + sign * eps * t)
            g_pm.append(self._alpha_gradients(self.loss(net(x_train), y_train)))
        with torch.no_grad():
            for p, p0 in zip(weights, w0):
                p.copy_(p0)
        # to be divided by 2 * eps (the widely copied "/ 2 * eps" multiplies instead)
        return [gp - gm for gp, gm in zip(*g_pm)], 2 * eps

    def dominant_eigenvalue(self, val: Batch, iters: int | None = None, seed: int = 0) -> float:
        """The dominant eigenvalue of the Hessian of L_val(w, alpha) w.r.t. all of alpha (R-DARTS, Zela et al. 2020).

        R-DARTS builds the full Hessian on a validation batch and logs the largest of its
        eigenvalues (``np.max``); here power iteration on exact Hessian-vector products (double
        backward) does it without the matrix: ``iters`` products (default ``eigen_iters``) from a
        random start drawn from its own generator (``seed``), so the search's random streams are
        untouched, and the Rayleigh quotient v . H v of the last iterate. Should the eigenvalue of
        largest magnitude come out negative, a second run on H - lambda I finds the largest one
        (twice the products). R-DARTS's Hessian also holds alpha's weight decay (+ wd I); this one
        is of the loss alone. The network stays in training mode (batch statistics, as in the
        search); weights, BatchNorm buffers and gradients are left as they were. Under DDP each
        product is averaged over the ranks, so every rank computes the same number, the
        eigenvalue of the Hessian of the ranks' mean loss. Float32 (float64 for a float64 module).
        """
        net = self.net
        alphas = net.arch_parameters()
        buffers = [b.detach().clone() for b in net.buffers()]
        x, y = val
        loss = self.loss(net(x), y)
        grads = torch.autograd.grad(loss, alphas, create_graph=True, allow_unused=True)
        pairs = [(a, g) for a, g in zip(alphas, grads) if g is not None]  # alpha the loss reaches
        inputs = [a for a, _ in pairs]
        iters = iters or self.hparams.eigen_iters

        def power(shift: float) -> float:
            """The eigenvalue of largest magnitude of H - shift I, plus shift."""
            generator = torch.Generator().manual_seed(seed)
            v = [torch.randn(a.shape, generator=generator, dtype=a.dtype).to(a.device) for a in inputs]
            eigenvalue = 0.0
            for _ in range(iters):
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in v])).clamp_min(1e-30)
                v = [t / norm for t in v]
                dot = sum((g * t).sum() for (_, g), t in zip(pairs, v))
                hv = mean_over_ranks(self, [h.detach() for h in torch.autograd.grad(dot, inputs, retain_graph=True)])
                hv = [h - shift * t for h, t in zip(hv, v)]
                eigenvalue = float(sum((h * t).sum() for h, t in zip(hv, v)))  # Rayleigh quotient, |v| = 1
                v = hv
            return eigenvalue + shift

        eigenvalue = power(0.0)
        if eigenvalue < 0:  # the largest in magnitude is negative: the top one is that much above it
            eigenvalue = power(eigenvalue)
        with torch.no_grad():
            for b, b0 in zip(net.buffers(), buffers):
                b.copy_(b0)
        return eigenvalue

    def search_step(self, train: Batch, val: Batch, w_opt, a_opt, update_arch: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """One architecture step (unless ``update_arch`` is False) and one weight step, in that order
        (DARTS's), or the weight step first when a method says so (GDAS).

        ``w_opt``/``a_opt``: the optimisers of :meth:`make_optimizers` (or Lightning's wrappers
        of them). Returns the training loss and logits of the weight step.
        """
        weights_first = any(m.weight_step_first for m in self.methods)
        if update_arch and not weights_first:
            self._architecture_step(train, val, w_opt, a_opt)
        loss, logits = self._weight_step(train, w_opt)
        if update_arch and weights_first:
            self._architecture_step(train, val, w_opt, a_opt)
        self._sample_step += 1
        return loss, logits

    def _architecture_step(self, train: Batch, val: Batch, w_opt, a_opt) -> None:
        """alpha <- Adam(hypergradient + the methods' regulariser gradients)."""
        self._set_sample_seed(0)
        grads = self.architecture_gradient(train, val, w_opt)
        extra = self._regulariser_gradients()  # beta-DARTS, Fair DARTS, DrNAS: terms of L_val in alpha alone
        if extra is not None:
            grads = [g + e for g, e in zip(grads, extra)]
        scale = self._loss_scale()
        for p, g in zip(self.net.arch_parameters(), grads):
            # in the units the precision plugin expects: it unscales, and skips the step on inf/nan
            p.grad = (g * scale).to(p.dtype)
        a_opt.step()

    def _weight_step(self, train: Batch, w_opt) -> tuple[torch.Tensor, torch.Tensor]:
        """w <- SGD(grad_w L_train), gradients clipped; the training loss and logits."""
        relax = self.net.relaxation
        x, y = train
        for p in self.net.parameters():
            p.grad = None
        if relax is not None:
            self._set_sample_seed(1)
            relax.phase = "weights"  # SDARTS-RS perturbs the weight step only
        logits = self.net(x)  # (B, num_classes)
        if relax is not None:
            relax.phase = "arch"
        loss = self.loss(logits, y)
        self._backward(loss)
        # clip the (possibly loss-scaled) weight gradients at grad_clip * scale: the same as
        # clipping the unscaled ones at grad_clip, without unscaling before the plugin does
        nn.utils.clip_grad_norm_(self.net.weight_parameters(), self.hparams.grad_clip * self._loss_scale())
        w_opt.step()
        for p in self.net.parameters():
            p.grad = None
        return loss.detach(), logits.detach()

    # --- Lightning hooks -----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        if not isinstance(batch, dict) or set(batch) != {"train", "val"}:
            raise ValueError(
                "DARTSSearch needs bilevel batches {'train': (x, y), 'val': (x, y)}: create the datamodule with bilevel=True"
            )
        w_opt, a_opt = self.optimizers()
        if batch_idx == 0 and self.hparams.eigen_every:
            self._monitor_batch = tuple(t.detach() for t in batch["val"])  # the collapse monitor's batch this epoch
        update_arch = self.current_epoch >= self.hparams.warmup_epochs
        loss, logits = self.search_step(tuple(batch["train"]), tuple(batch["val"]), w_opt, a_opt, update_arch)
        self.train_acc(logits, batch["train"][1])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_epoch_start(self) -> None:
        for name, value in self.epoch_start(*self._epochs()).items():
            self.log(name, value)

    def on_train_epoch_end(self) -> None:
        self.log("lr", self.optimizers()[0].param_groups[0]["lr"], sync_dist=True)
        self.lr_schedulers().step()
        eigen = self._monitor_collapse()
        self._record_architecture(eigen)
        if eigen is not None and self.hparams.eigen_stop:
            self._maybe_stop_early()

    def _monitor_collapse(self) -> float | None:
        """R-DARTS's eigenvalue after epochs 0, ``eigen_every``, 2 ``eigen_every``, ... and the last (else None).

        As RobustDARTS (``train_search.py``, ``analyze.py``): the dominant eigenvalue of the Hessian
        of L_val plus alpha's weight decay (so of H + wd I: the loss's, plus wd). Deliberate
        difference: on this epoch's first validation batch (RobustDARTS: its last), so the batch
        is known before the epoch's weights change it.
        """
        every = self.hparams.eigen_every
        epoch, epochs = self._epochs()
        if not every or self._monitor_batch is None or (epoch % every and epoch != epochs - 1):
            return None
        eigen = self.dominant_eigenvalue(self._monitor_batch) + self.arch_weight_decay()
        self._monitor_batch = None
        # the same on every rank (rank-averaged products), so the logged value needs no sync
        self.log("arch/eigenvalue", eigen)
        return eigen

    def _maybe_stop_early(self) -> None:
        """R-DARTS early stop (DARTS-ES, :mod:`lightning_dlstrat.methods.darts_es` decides): stop, and roll
        alpha back to the epoch it names. Every rank sees the same eigenvalues, so all of them decide alike."""
        stop = self.method("darts-es").decide([r for r in self.history if "eigenvalue" in r], self._epochs()[1] - 1)
        if stop is None:
            return
        back = next(r for r in self.history if r["epoch"] == stop["epoch"] and "raw_alpha" in r)  # an evaluated epoch
        with torch.no_grad():
            for p, value in zip(self.net.arch_parameters(), back["raw_alpha"]):
                p.copy_(torch.as_tensor(value, dtype=p.dtype, device=p.device))
        record = self.history[-1]
        record["early_stop"] = {"ratio": stop["ratio"], "rolled_back_to_epoch": back["epoch"], "genotype": str(self.genotype())}
        self.trainer.should_stop = True  # every rank decides alike
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a collective call under DDP
        if self.trainer.is_global_zero:
            self.write_history(log_dir)
        rank_zero_info(
            f"R-DARTS early stop after epoch {self.current_epoch + 1}: the eigenvalue's local average grew {stop['ratio']:.2f}x "
            f"over {self.hparams.eigen_stop_delta} evaluations; alpha rolled back to epoch {back['epoch'] + 1} (genotype_history.jsonl)"
        )

    def _record_architecture(self, eigen: float | None = None) -> None:
        """Log alpha and the genotype; append them to ``genotype_history.jsonl`` (rank zero).

        Per cell type of the space (darts: normal, reduce; nb201: cell): the mean per-edge entropy
        of softmax(alpha), the skip connections the genotype keeps, and every (edge, op) weight.
        """
        weights = self.space.cell_weights(self.net)  # {cell type: (E, O)}
        genotype = self.genotype()
        kept = self.space.chosen_ops(genotype)
        for cell, w in weights.items():
            entropy = -(w * w.clamp_min(1e-12).log()).sum(1).mean()  # mean per-edge entropy (nats)
            self.log(f"alpha/{cell}_entropy", entropy, sync_dist=True)
            # skip connections taking over the cell is DARTS's known failure mode (on NAS-Bench-201:
            # the all-skip cell, 54.30 % on CIFAR-10)
            self.log(f"arch/{cell}_skips", float(sum(op == "skip_connect" for op in kept[cell])), sync_dist=True)
        record = {
            "epoch": self.current_epoch,
            "step": self.global_step,
            "genotype": str(genotype),
            **genotype.to_dict(),
            **{f"alpha_{cell}": w.tolist() for cell, w in weights.items()},
            "primitives": list(self.net.operations),
            "space": self.space.name,
        }
        if "val/acc" in self.trainer.callback_metrics:
            record["val_acc"] = float(self.trainer.callback_metrics["val/acc"])
        if eigen is not None:
            record["eigenvalue"] = eigen
            record["skips"] = {cell: sum(op == "skip_connect" for op in kept[cell]) for cell in kept}
            if self.hparams.eigen_stop:  # what an early stop rolls back to
                record["raw_alpha"] = [p.detach().cpu().tolist() for p in self.net.arch_parameters()]
        self.history.append(record)
        # all E x O weights of every cell type go straight to the loggers (metrics.csv), on
        # Lightning's step axis, from rank zero: they are the same on every rank (alpha is kept
        # identical), so they need no sync, and kept out of callback_metrics they neither flood the
        # console with sync_dist advice nor swell what ddp_spawn sends back through its pipe (a
        # few hundred tensors there blocked the worker and hung the run)
        if self.trainer.is_global_zero and self.trainer.loggers:
            per_edge = {f"alpha/{cell}/e{i}/{op}": float(w[i, o]) for cell, w in weights.items() for i in range(w.shape[0]) for o, op in enumerate(self.net.operations)}
            # the step Lightning logs epoch-end metrics at: its batch counter less one (fit_loop.on_advance_end)
            step = max(self.trainer.fit_loop.epoch_loop._batches_that_stepped - 1, 0)
            for logger in self.trainer.loggers:
                logger.log_metrics(per_edge, step=step)
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # a collective call under DDP
        if not self.trainer.is_global_zero:
            return
        self.write_history(log_dir)
        rank_zero_info(f"epoch {self.current_epoch + 1} cell ops: " + "; ".join(f"{cell} " + " ".join(op.replace("_conv_", "").replace("_pool_", "").replace("_connect", "") for op in ops) for cell, ops in kept.items()) + " (genotype_history.jsonl)")

    def write_history(self, directory: Path) -> Path:
        """Write every epoch's record as one JSON line to ``directory/genotype_history.jsonl``."""
        path = Path(directory) / "genotype_history.jsonl"
        atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in self.history).encode())
        return path

    # --- checkpoints: the per-epoch history travels with them, so a resumed run keeps all of it ---
    # (Alpha, both optimisers and the schedule are checkpointed by Lightning; the search draws no
    # random numbers after construction and the datamodule shuffles by (seed, epoch), so a
    # resumed search continues exactly as the uninterrupted one.)
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["darts_search_history"] = self.history
        if self.net.relaxation is not None:  # where the sampled relaxations' random stream stands
            checkpoint["darts_search_sampling"] = [self._sample_seed, self._sample_step]
        states = {m.name: m.state_dict() for m in self.methods if m.state_dict()}
        if states:
            checkpoint["search_methods"] = states

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._trainer is not None:  # resuming a fit: configure_optimizers, next, re-plans the schedule (core.replan_cosine)
            self._resumed_from = checkpoint
        self.history = list(checkpoint.get("darts_search_history", []))
        if "darts_search_sampling" in checkpoint:
            self._sample_seed, self._sample_step = (int(v) for v in checkpoint["darts_search_sampling"])
        for m in self.methods:
            if m.name in checkpoint.get("search_methods", {}):
                m.load_state_dict(checkpoint["search_methods"][m.name])


# the module's defaults, against which a space tells whether another space's argument was set
_DEFAULTS = {name: p.default for name, p in inspect.signature(DARTSSearch.__init__).parameters.items()}
