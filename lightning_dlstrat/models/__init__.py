"""Plain ``nn.Module`` networks: the MLP, the DARTS supernets and evaluation network, the GAN pairs.

Nothing here imports training code. Importing this package (and :mod:`lightning_dlstrat.spaces`,
for the NAS-Bench-201 network) registers every deployable network in
:data:`lightning_dlstrat.hub.ARCHITECTURES` (each declares ``architecture=`` and ``kind=``).
"""

from .darts_net import DARTSNetwork
from .gan import DCGANGenerator, DenseGenerator, MLPGenerator
from .gan_conditional import ConditionalDCGANGenerator, ConditionalDenseGenerator
from .mlp import MLP

__all__ = ["ConditionalDCGANGenerator", "ConditionalDenseGenerator", "DARTSNetwork", "DCGANGenerator", "DenseGenerator", "MLP", "MLPGenerator"]
