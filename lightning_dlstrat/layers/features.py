"""timm's feature-extraction conventions: which intermediate maps ``forward_intermediates`` returns.

A network with ``feature_info`` (one dict per map: ``num_chs``, ``reduction``, ``module``) and
``forward_intermediates(x, indices, ...)`` works with ``timm.create_model(..., features_only=True)``
through timm's ``FeatureGetterNet`` (``feature_cls="getter"``).
"""

from __future__ import annotations


def take_indices(n: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """As timm's ``feature_take_indices``: None -> all ``n`` maps, an int k -> the last k, a list -> those (negative from the end)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"the last-n feature count must be in 1..{n}, not {indices}")
        return list(range(n - indices, n))
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise ValueError(f"feature index {bad[0]} is out of range for {n} feature maps (indices -{n}..{n - 1})")
    return sorted({i % n for i in indices})
