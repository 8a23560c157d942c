"""GAN evaluation metrics: mode coverage on 2-D mixtures, classifier metrics on digits, Inception FID.

- **2-D mixtures** (:func:`mode_metrics`), with the definitions of VEEGAN (Srivastava et al.,
  NeurIPS 2017) and PacGAN (Lin et al., NeurIPS 2018): draw 2,500 samples and assign each to its
  nearest mode; a sample is *high quality* if it lies within 3 standard deviations of that mode;
  a mode is *captured* if at least one high-quality sample is assigned to it; the reverse KL
  divergence KL(q || p) compares the histogram q of high-quality samples over the modes with the
  true, uniform p.
- **8x8 digits** (:func:`digits_metrics`): a Frechet distance on the hidden features of a
  classifier this package trained on real digits (``scripts/train_digits_classifier.py``; the
  "Frechet LeNet distance" practice for small grey-scale images, where Inception features are a
  poor fit), computed with torchmetrics' ``FrechetInceptionDistance`` and a custom feature
  extractor, and reported beside the same distance between two sets of *real* digits; plus the
  share of samples the classifier labels with confidence >= 0.9 and the class histogram.
- **Other images** (:func:`inception_fid`): torchmetrics' Inception FID (torch-fidelity's
  TF-ported InceptionV3), from a local weights file or the torch hub cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .models.mlp import MLP

DIGITS_CLASSIFIER_PATH = Path(__file__).parent / "assets" / "digits_classifier.safetensors"
CONFIDENCE = 0.9  # a sample is "confidently labelled" at a top softmax probability >= this
HIGH_QUALITY_SIGMAS = 3.0  # VEEGAN / PacGAN: high quality within 3 standard deviations of a mode
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's InceptionV3
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"


# --- 2-D mixtures --------------------------------------------------------------------------------
@torch.no_grad()
def mode_metrics(samples: torch.Tensor, modes: torch.Tensor, sigma: float) -> dict[str, float | int | None]:
    """Modes captured, % high-quality samples and reverse KL of the mode histogram.

    ``samples``: (N, 2) generated points; ``modes``: (K, 2) mixture centres; ``sigma``: the
    mixture's isotropic standard deviation. ``reverse_kl`` is None when no sample is high quality.
    """
    samples, modes = samples.double(), modes.double().to(samples.device)
    dist = torch.cdist(samples, modes)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)  # (N,), (N,)
    high = nearest_dist < HIGH_QUALITY_SIGMAS * sigma  # (N,) isotropic: Mahalanobis = distance / sigma
    counts = torch.bincount(nearest[high], minlength=len(modes)).double()  # (K,)
    n_high = int(high.sum())
    reverse_kl = None
    if n_high:
        q = counts / n_high
        present = q > 0  # 0 * log 0 = 0
        reverse_kl = float((q[present] * (q[present] * len(modes)).log()).sum())
    return {
        "modes_captured": int((counts > 0).sum()),
        "num_modes": len(modes),
        "high_quality_pct": 100.0 * n_high / len(samples),
        "reverse_kl": reverse_kl,
        "num_samples": len(samples),
    }


# --- digits --------------------------------------------------------------------------------------
class DigitsClassifier(nn.Module):
    """The shipped MLP digits classifier, fed [0, 1] pixels (it standardises them itself)."""

    def __init__(self, net: MLP, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        self.num_features = net.num_features  # read by torchmetrics instead of probing a dummy image

    def train(self, mode: bool = True) -> "DigitsClassifier":
        return super().train(False)  # a fixed metric network: never dropout, whatever the caller does

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std  # (B, 1, 8, 8)
        return self.net.forward_features(x)  # (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_head(self.forward_features(x))  # (B, 10) logits


class _Features(nn.Module):
    """``DigitsClassifier.forward_features`` as a module, the form torchmetrics' FID takes."""

    def __init__(self, clf: DigitsClassifier):
        super().__init__()
        self.clf = clf
        self.num_features = clf.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.forward_features(x)  # (B, num_features)


def load_digits_classifier(path: str | Path = DIGITS_CLASSIFIER_PATH) -> DigitsClassifier:
    """Rebuild the classifier from its safetensors file (tensors and string metadata only)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"the digits classifier {path} is missing; recreate it with `python scripts/train_digits_classifier.py`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    net = MLP(json.loads(meta["in_shape"]), 10, json.loads(meta["hidden"]), meta["activation"])
    net.load_state_dict(state)
    return DigitsClassifier(net, json.loads(meta["mean"]), json.loads(meta["std"]))


def frechet_distance(features: nn.Module, real: torch.Tensor, fake: torch.Tensor, batch_size: int = 500) -> float:
    """torchmetrics' Frechet distance between ``real`` and ``fake`` on ``features`` (both in [0, 1])."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=features, normalize=True).to(real.device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            fid.update(chunk, real=is_real)
    return float(fid.compute())


@torch.no_grad()
def digits_metrics(fake: torch.Tensor, real: torch.Tensor, real_reference: torch.Tensor, clf: DigitsClassifier | None = None) -> dict:
    """Classifier metrics for generated 8x8 digits; all images (B, 1, 8, 8) in [0, 1].

    ``real``: the training images the distance is measured to; ``real_reference``: other real
    images (the test split), whose distance to ``real`` is the floor a perfect generator reaches
    with this many samples (``fd_real_baseline``).
    """
    clf = (clf or load_digits_classifier()).to(fake.device)
    features = _Features(clf)
    probs = clf(fake).softmax(dim=1)  # (N, 10)
    conf, label = probs.max(dim=1)  # (N,), (N,)
    hist = torch.bincount(label, minlength=10).double() / len(fake)  # (10,)
    return {
        "fd": frechet_distance(features, real, fake),
        "fd_real_baseline": frechet_distance(features, real, real_reference),
        "confident_pct": 100.0 * float((conf >= CONFIDENCE).double().mean()),
        "class_pct": [round(100.0 * float(h), 2) for h in hist],
        "num_samples": len(fake),
        "num_real": len(real),
        "num_real_reference": len(real_reference),
    }


# --- Inception FID -------------------------------------------------------------------------------
def inception_weights(path: str | None = None) -> str:
    """A verified local path to torch-fidelity's InceptionV3 weights, or a clear error.

    ``path`` None: the torch hub cache (``$TORCH_HOME/hub/checkpoints``), downloading into it when
    online. The file is opened with ``torch.load(weights_only=True)`` first, so only a plain
    state dict of tensors is accepted (torch-fidelity itself loads it with full unpickling).
    """
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise RuntimeError("Inception FID needs torch-fidelity: `pip install torch-fidelity` (or pass --model.fid=none)") from None
    if path is None:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        if not cached.is_file():
            try:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(INCEPTION_URL, str(cached), progress=False)
            except Exception as e:
                raise RuntimeError(
                    f"Inception FID needs the InceptionV3 weights {INCEPTION_FILE}, which are not in {cached.parent} and "
                    f"could not be downloaded ({type(e).__name__}: {' '.join(str(e).split())[:200]}). Download {INCEPTION_URL} "
                    f"on a machine that is online and pass --model.inception_weights=PATH (or copy it to {cached}), "
                    f"or skip the metric with --model.fid=none"
                ) from None
        path = str(cached)
    if not Path(path).is_file():
        raise RuntimeError(f"--model.inception_weights={path}: no such file (expected {INCEPTION_FILE} from {INCEPTION_URL})")
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path} is not a plain InceptionV3 state dict ({type(e).__name__}); expected {INCEPTION_FILE} from {INCEPTION_URL}") from None
    return path


@torch.no_grad()
def inception_fid(fake: torch.Tensor, real: torch.Tensor, weights: str, batch_size: int = 100) -> float:
    """torchmetrics' Inception FID (2048-d pool features) between images in [0, 1], (B, C, H, W).

    Grey-scale images are repeated to three channels; torch-fidelity resizes to 299x299.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=weights).to(fake.device)
    for images, is_real in ((real, True), (fake, False)):
        for chunk in images.split(batch_size):
            fid.update(chunk.expand(-1, 3, -1, -1) if chunk.shape[1] == 1 else chunk, real=is_real)
    return float(fid.compute())
