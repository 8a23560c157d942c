"""What every space's supernet shares: the split of parameters between the two optimisers, the
relaxation slot the search methods fill, and the copy between the per-edge (reference) and batched
(fast) forms of one supernet.

Each space keeps two supernets that compute the same function (the papers' per-edge code, and a
batched one that is much faster); tests hold them equal by copying weights across with
:meth:`FastSupernet.load_reference` / :meth:`FastSupernet.store_reference`. A space's fast supernet
says only how its tensors pair with the reference's (``edge_tensor_pairs``) and under which module
names its per-edge parts live (``reference_edge_key``, ``fast_edge_key``).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["FastSupernet", "Supernet"]


class Supernet(nn.Module):
    """A weight-sharing supernet: alpha (``arch_parameters``) and everything else (``weight_parameters``).

    ``relaxation``: how alpha becomes the weights that mix each edge's operations. None is DARTS's
    softmax; a search method sets a :class:`lightning_dlstrat.methods.relaxation.Relaxation` (Fair
    DARTS, GDAS, DrNAS, DARTS-, SDARTS-RS) and, per cell type, the ``relaxation_stream`` its random
    draws are taken from.
    """

    relaxation: Any = None

    def arch_parameters(self) -> list[nn.Parameter]:  # pragma: no cover - every space defines it
        raise NotImplementedError

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter: what the weight optimiser updates."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]


class FastSupernet(Supernet):
    """The batched form of a space's reference supernet; copies weights to and from it."""

    reference_edge_key: str = ".edges."  # module names of the reference's per-edge parts
    fast_edge_key: str = ".sources."  # ... and of this network's batched ones

    def edge_tensor_pairs(self, ref: nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover
        """(slice of one of this network's tensors, the reference tensor it equals), for every per-edge weight and statistic."""
        raise NotImplementedError

    def load_reference(self, ref: nn.Module) -> None:
        """Copy every weight and BatchNorm statistic of a reference supernet into this one."""
        with torch.no_grad():
            for mine, theirs in self.edge_tensor_pairs(ref):
                mine.copy_(theirs)
            shared = {k: v for k, v in ref.state_dict().items() if self.reference_edge_key not in k}
            result = self.load_state_dict(shared, strict=False)
            assert not result.unexpected_keys, result.unexpected_keys

    def store_reference(self, ref: nn.Module) -> None:
        """The inverse of :meth:`load_reference`: write this network's weights into ``ref``."""
        with torch.no_grad():
            for mine, theirs in self.edge_tensor_pairs(ref):
                theirs.copy_(mine)
            ref.load_state_dict({k: v for k, v in self.state_dict().items() if self.fast_edge_key not in k}, strict=False)
