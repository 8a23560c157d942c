"""GAN evaluation metrics: mode coverage on 2-D mixtures, FD / KID / IS on images, Inception weights.

- **2-D mixtures** (:func:`mode_metrics`), with the definitions of VEEGAN (Srivastava et al.,
  NeurIPS 2017) and PacGAN (Lin et al., NeurIPS 2018): draw 2,500 samples and assign each to its
  nearest mode; a sample is *high quality* if it lies within 3 standard deviations of that mode;
  a mode is *captured* if at least one high-quality sample is assigned to it; the reverse KL
  divergence KL(q || p) compares the histogram q of high-quality samples over the modes with the
  true, uniform p.
- **Images** (:func:`image_metrics`): the three standard sample-quality metrics, each computed by
  torchmetrics (``torchmetrics.image``) on features extracted once per image set:

  - Frechet distance (Heusel et al., "GANs trained by a two time-scale update rule converge to a
    local Nash equilibrium", NeurIPS 2017): ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``
    between Gaussians fitted to the two feature sets (``FrechetInceptionDistance``);
  - Kernel distance (Binkowski et al., "Demystifying MMD GANs", ICLR 2018): the unbiased estimate
    of the squared MMD with the kernel ``k(a, b) = (a.b / d + 1)^3``, averaged over random
    subsets, reported as mean and standard deviation (``KernelInceptionDistance``). Unlike the
    Frechet distance it has no bias at small sample counts, so it is the one to compare across n;
  - Inception score (Salimans et al., "Improved techniques for training GANs", NeurIPS 2016):
    ``exp(E_x KL(p(y|x) || p(y)))`` over ``splits`` groups, mean and standard deviation
    (``InceptionScore``).

  Two feature extractors. ``"inception"``: torch-fidelity's TF-ported InceptionV3 (2048-d pool
  features; torch-fidelity's ``logits_unbiased``, the 1008-way fc without its bias, for the score),
  as torchmetrics uses it, with weights from a local file: these are the *FID / KID / IS* of the
  literature. ``"classifier"``: the 8x8-digits classifier this package ships (its last hidden
  layer's 256 features, its 10 logits), the "Frechet LeNet distance" practice for small grey-scale
  images, where Inception features are a poor fit; reported as ``classifier_fd`` /
  ``classifier_kid`` / ``classifier_is``, never as FID, since the numbers are not comparable with
  Inception ones.
- **8x8 digits, the trainer's report** (:func:`digits_metrics`): the classifier FD / KID / IS
  beside the FD and KID between two sets of *real* digits, plus the share of samples the
  classifier labels with confidence >= 0.9 and the class histogram; for a conditional generator
  also the share labelled as the class asked for (:func:`digits_label_agreement`).
- :func:`inception_weights` finds the InceptionV3 weights file or says which file is missing and
  where to put it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from .models.mlp import MLP

DIGITS_CLASSIFIER_PATH = Path(__file__).parent / "assets" / "digits_classifier.safetensors"
CONFIDENCE = 0.9  # a sample is "confidently labelled" at a top softmax probability >= this
HIGH_QUALITY_SIGMAS = 3.0  # VEEGAN / PacGAN: high quality within 3 standard deviations of a mode
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's InceptionV3
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
EXTRACTORS = ("classifier", "inception")


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


@torch.no_grad()
def digits_metrics(
    fake: torch.Tensor,
    real: torch.Tensor,
    real_reference: torch.Tensor,
    labels: torch.Tensor | None = None,
    seed: int = 0,
) -> dict:
    """The trainer's report for generated 8x8 digits; all images (N, 1, 8, 8) in [0, 1].

    FD / KID / IS in the shipped classifier's features (:func:`image_metrics`' ``classifier_*``
    names) against ``real``, the training images; the same FD and KID between ``real_reference``
    (other real images, the test split) and ``real``, the floor a perfect generator reaches at
    that sample count (``*_real_baseline``); the share of samples labelled with confidence >= 0.9
    and the histogram of the labels. ``labels``: the classes a conditional generator was asked
    for, adding :func:`digits_label_agreement` and the confident share per requested class.
    """
    fake_f, real_f, ref_f = (extract_features(x, "classifier") for x in (fake, real, real_reference))
    m = feature_metrics(fake_f, real_f, seed=seed)
    base = feature_metrics(ref_f, real_f, seed=seed)
    probs = fake_f.logits.softmax(dim=1)  # (N, 10)
    conf, label = probs.max(dim=1)  # (N,), (N,)
    confident = (conf >= CONFIDENCE).double()  # (N,)
    hist = torch.bincount(label, minlength=10).double() / len(fake)  # (10,)
    out = {
        "classifier_fd": m["fd"],
        "classifier_kid": m["kid"],
        "classifier_kid_std": m["kid_std"],
        "classifier_is": m["is"],
        "classifier_is_std": m["is_std"],
        "classifier_fd_real_baseline": base["fd"],
        "classifier_kid_real_baseline": base["kid"],
        "confident_pct": 100.0 * float(confident.mean()),
        "class_pct": [round(100.0 * float(h), 2) for h in hist],
        "num_samples": len(fake),
        "num_real": len(real),
        "num_real_reference": len(real_reference),
        "kid_subsets": m["kid_subsets"],
        "kid_subset_size": m["kid_subset_size"],
        "is_splits": m["is_splits"],
    }
    if labels is not None:
        agreement = digits_label_agreement(fake, labels)
        labels = labels.long().cpu()  # (N,)
        out["label_agreement_pct"] = agreement["label_agreement_pct"]
        out["label_agreement_per_class_pct"] = [round(v, 2) for v in agreement["label_agreement_per_class_pct"]]
        out["confident_per_class_pct"] = [round(100.0 * float(confident[labels == c].mean()), 2) for c in range(10)]
    return out


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
        raise RuntimeError(
            f"--model.inception_weights={path}: no such file (expected {INCEPTION_FILE}; download {INCEPTION_URL} on a "
            f"machine that is online, copy it here and pass its path)"
        )
    _check_state_dict(str(Path(path).resolve()), Path(path).stat().st_mtime)
    return path


@lru_cache(maxsize=4)
def _check_state_dict(path: str, mtime: float) -> None:
    """Open the ~95 MB file once per version (``mtime`` is in the key), not at every evaluation."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path} is not a plain InceptionV3 state dict ({type(e).__name__}); expected {INCEPTION_FILE} from {INCEPTION_URL}") from None


# --- FD / KID / IS on either extractor -----------------------------------------------------------
@dataclass(frozen=True)
class ImageFeatures:
    """What the metrics need from one image set: ``features`` (N, d) for FD / KID, ``logits`` (N, K) for IS.

    From :func:`extract_features`; pass it to :func:`image_metrics` in place of images to reuse
    the real set's features across evaluations (on CPU, float64).
    """

    features: torch.Tensor
    logits: torch.Tensor
    extractor: str

    def __len__(self) -> int:
        return len(self.features)


class _Precomputed(nn.Module):
    """The identity, as torchmetrics' custom ``feature`` network: the features are already extracted.

    Extracting once and feeding the same features to all three metrics costs one network pass per
    image instead of three (for Inception, ~0.1 s per image on one CPU core).
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features  # read by FrechetInceptionDistance instead of probing a dummy input

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x  # (N, d)


def _check_images01(images: torch.Tensor, name: str) -> None:
    if images.dim() != 4:
        raise ValueError(f"{name} must be (N, C, H, W) images, not a tensor of shape {tuple(images.shape)}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contain NaN or infinite values (a diverged generator?)")
    if len(images) and (images.min() < -1e-6 or images.max() > 1.0 + 1e-6):
        raise ValueError(
            f"{name} must be in [0, 1] (got {float(images.min()):.3g}..{float(images.max()):.3g}); "
            f"map generator outputs with (x + 1) / 2 and clamp"
        )


@lru_cache(maxsize=1)
def _inception_network(path: str, mtime: float) -> nn.Module:
    """torchmetrics' InceptionV3 wrapper (2048-d pool features), weights from ``path``; cached per file version."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    with torch.random.fork_rng(devices=[]):  # its random initialisation (then overwritten) must not move the caller's RNG
        return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path)


def inception_network(weights: str | None = None) -> nn.Module:
    """The InceptionV3 feature network of torchmetrics' FID, from :func:`inception_weights`' file."""
    path = inception_weights(weights)
    return _inception_network(str(Path(path).resolve()), Path(path).stat().st_mtime)


@torch.no_grad()
def extract_features(
    images01: torch.Tensor,
    extractor: str = "classifier",
    weights: str | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> ImageFeatures:
    """Features and logits of ``images01`` (N, C, H, W) in [0, 1], on CPU in float64.

    ``"classifier"``: the shipped digits classifier, for (1, 8, 8) images. ``"inception"``:
    InceptionV3 from the local ``weights`` file (see :func:`inception_weights`); images are turned
    into uint8 exactly as torchmetrics' ``normalize=True`` does (``(x * 255).byte()``), grey ones
    repeated to 3 channels, then resized to 299x299 by the network. ``device``: where the network
    runs (default: the images' device).
    """
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; choose one of: {', '.join(EXTRACTORS)}")
    _check_images01(images01, "images")
    device = torch.device(device) if device is not None else images01.device
    # Full precision whatever the caller runs under (a Lightning loop's bf16-mixed autocast): the
    # metrics must not depend on the training precision.
    with torch.autocast(device_type=device.type, enabled=False):
        feats, logits = _extract(images01, extractor, weights, batch_size, device)
    return ImageFeatures(torch.cat(feats), torch.cat(logits), extractor)  # (N, d), (N, K)


def _extract(images01, extractor, weights, batch_size, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if extractor == "classifier":
        if tuple(images01.shape[1:]) != (1, 8, 8):
            raise ValueError(
                f"the digits classifier takes (1, 8, 8) images, not {tuple(images01.shape[1:])}; use extractor='inception' for other images"
            )
        with torch.random.fork_rng(devices=[]):  # the MLP's random initialisation, overwritten by the file
            clf = load_digits_classifier().to(device)
        feats, logits = [], []
        for chunk in images01.split(batch_size or 1000):
            f = clf.forward_features(chunk.to(device))  # (b, 256)
            feats.append(f.double().cpu())
            logits.append(clf.net.forward_head(f).double().cpu())  # (b, 10)
    else:
        if images01.shape[1] not in (1, 3):
            raise ValueError(f"Inception takes 1- or 3-channel images, not {images01.shape[1]} channels")
        net = inception_network(weights).to(device)
        fc = net.fc.weight.detach().double().cpu()  # (1008, 2048)
        feats, logits = [], []
        for chunk in images01.split(batch_size or 50):
            x = (chunk.to(device) * 255).byte().expand(-1, 3, -1, -1)  # (b, 3, H, W) uint8, as torchmetrics' normalize=True
            f = net(x).double().cpu()  # (b, 2048) pool features
            feats.append(f)
            logits.append(f @ fc.T)  # (b, 1008): torch-fidelity's "logits_unbiased", what torchmetrics' IS uses
    return feats, logits


def feature_metrics(
    fake: ImageFeatures,
    real: ImageFeatures,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    is_splits: int = 10,
    seed: int = 0,
) -> dict[str, float | int | str]:
    """FD, KID (mean, std) and IS (mean, std) of ``fake`` against ``real``, by torchmetrics.

    ``kid_subset_size`` None: 1,000 (Binkowski et al.'s and torchmetrics' default), or half the
    smaller set when that is under 2,000. Subsets of every sample would all be the same set and
    give a standard deviation of 0; halves vary, so the reported std says how much the estimate
    moves with the samples drawn. Each subset's estimate is unbiased, so the mean is too. A given
    size is capped at the smaller set (torchmetrics would raise); the result says what was used. KID's and IS's random subsets and splits are drawn from a CPU
    RNG seeded with ``seed`` inside ``torch.random.fork_rng``, so the numbers are reproducible and
    the caller's RNG is untouched. The metrics never synchronise across processes
    (``sync_on_compute=False``): this function sees one process's features, and a metric that
    all-gathers on one rank only would wait forever (torchmetrics #2684).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    if fake.extractor != real.extractor:
        raise ValueError(f"fake features are from {fake.extractor!r} and real ones from {real.extractor!r}; use one extractor")
    if len(fake) < 2 or len(real) < 2:
        raise ValueError(f"FD / KID need at least 2 fake and 2 real images, not {len(fake)} and {len(real)}")
    if len(fake) < 2 * is_splits:
        raise ValueError(f"the Inception score over {is_splits} splits needs at least {2 * is_splits} fake images, not {len(fake)}")
    smaller = min(len(fake), len(real))
    subset = max(2, min(1000, smaller // 2)) if kid_subset_size is None else min(kid_subset_size, smaller)
    d = fake.features.shape[1]
    opts = {"sync_on_compute": False}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
        fd = FrechetInceptionDistance(feature=_Precomputed(d), **opts)
        kid = KernelInceptionDistance(feature=_Precomputed(d), subsets=kid_subsets, subset_size=subset, **opts)
        score = InceptionScore(feature=_Precomputed(fake.logits.shape[1]), splits=is_splits, **opts)
    for f, is_real in ((real.features, True), (fake.features, False)):
        fd.update(f, real=is_real)
        kid.update(f, real=is_real)
    score.update(fake.logits)
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*degrees of freedom.*")  # one split: the std is NaN, and says so
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
        torch.manual_seed(seed)  # the IS splits do not depend on how many KID subsets were drawn
        is_mean, is_std = score.compute()
    return {
        "fd": float(fd.compute()),
        "kid": float(kid_mean),
        "kid_std": float(kid_std),
        "is": float(is_mean),
        "is_std": float(is_std),
        "kid_subsets": kid_subsets,
        "kid_subset_size": subset,
        "is_splits": is_splits,
    }


def image_metrics(
    fake01: torch.Tensor | ImageFeatures,
    real01: torch.Tensor | ImageFeatures,
    extractor: str = "classifier",
    weights: str | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int | None = None,
    is_splits: int = 10,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
) -> dict[str, float | int | str]:
    """FD / KID / IS of generated images ``fake01`` against real ``real01``, both (N, C, H, W) in [0, 1].

    Either may instead be the :class:`ImageFeatures` of :func:`extract_features` (cache the real
    set's). The IS is the fakes'. Keys, by extractor:

    - ``"inception"`` (``weights``: the local InceptionV3 file, see :func:`inception_weights`):
      ``fid``, ``kid``, ``kid_std``, ``is``, ``is_std``;
    - ``"classifier"`` (8x8 digits): ``classifier_fd``, ``classifier_kid``, ``classifier_kid_std``,
      ``classifier_is``, ``classifier_is_std``;

    plus ``extractor``, ``num_fake``, ``num_real``, ``kid_subsets``, ``kid_subset_size`` and
    ``is_splits``: report n and the protocol with the numbers.
    """
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; choose one of: {', '.join(EXTRACTORS)}")
    for images in (fake01, real01):  # before any (slow) extraction
        if isinstance(images, ImageFeatures) and images.extractor != extractor:
            raise ValueError(f"features from {images.extractor!r} passed for extractor {extractor!r}")
    fake, real = (
        images if isinstance(images, ImageFeatures) else extract_features(images, extractor, weights, batch_size, device)
        for images in (fake01, real01)
    )
    m = feature_metrics(fake, real, kid_subsets, kid_subset_size, is_splits, seed)
    names = {"fd": "fid", "kid": "kid", "kid_std": "kid_std", "is": "is", "is_std": "is_std"}
    if extractor == "classifier":
        names = {k: f"classifier_{k}" for k in names}
    out: dict[str, float | int | str] = {names[k]: m.pop(k) for k in names}
    return {**out, "extractor": extractor, "num_fake": len(fake), "num_real": len(real), **m}


@torch.no_grad()
def digits_label_agreement(fake01: torch.Tensor, labels: torch.Tensor, clf: DigitsClassifier | None = None) -> dict[str, float | int]:
    """For class-conditional digits: % of samples ``G(z, y)`` the classifier labels ``y``, overall and per class.

    ``fake01``: (N, 1, 8, 8) in [0, 1]; ``labels``: (N,) the classes they were generated for. The
    classifier's test accuracy on real digits (98%) is the ceiling. Like the "classification
    accuracy score" family of conditional-GAN checks, it catches a generator that ignores ``y``,
    which FD / KID / IS alone cannot (they never see the labels).
    """
    _check_images01(fake01, "fake01")
    clf = (clf or load_digits_classifier()).to(fake01.device)
    labels = labels.to(fake01.device).long()  # (N,)
    hit = (clf(fake01).argmax(dim=1) == labels).double()  # (N,)
    per_class = [100.0 * float(hit[labels == c].mean()) if (labels == c).any() else float("nan") for c in range(10)]
    return {"label_agreement_pct": 100.0 * float(hit.mean()), "label_agreement_per_class_pct": per_class, "num_samples": len(fake01)}
