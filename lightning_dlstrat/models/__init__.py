"""Plain ``nn.Module`` networks that belong to no search space: the MLP and the GAN pairs.

(The DARTS and NAS-Bench-201 supernets and evaluation networks live with their space, in
``spaces/<name>/``.) Nothing here imports training code. Each deployable network declares
``architecture=`` and ``kind=`` in its class statement, which registers it in
:data:`lightning_dlstrat.hub.ARCHITECTURES`, and is listed by module and class name in
:data:`lightning_dlstrat.hub.BUILTIN_ARCHITECTURES` (and pyproject.toml's entry points) so that
the registry imports it when a config.json names it.
"""

from .gan import DCGANGenerator, DenseGenerator, MLPGenerator
from .gan_conditional import ConditionalDCGANGenerator, ConditionalDenseGenerator
from .mlp import MLP

__all__ = ["ConditionalDCGANGenerator", "ConditionalDenseGenerator", "DCGANGenerator", "DenseGenerator", "MLP", "MLPGenerator"]
