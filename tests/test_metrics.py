"""FD / KID / IS via torchmetrics on the digits classifier and on InceptionV3 (metrics.image_metrics)."""

import math

import pytest
import torch
from torch import nn

from lightning_dlstrat import metrics
from lightning_dlstrat.data import DigitsDataModule
from lightning_dlstrat.metrics import (
    ImageFeatures,
    extract_features,
    feature_metrics,
    image_metrics,
    inception_weights,
    digits_label_agreement,
)


@pytest.fixture(scope="module")
def digits():
    dm = DigitsDataModule(normalization="none")
    dm.setup("fit")
    train = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])  # (1294, 1, 8, 8) in [0, 1]
    return train, dm.test_set.tensors[0]  # (359, 1, 8, 8)


# --- formulas ------------------------------------------------------------------------------------
def test_feature_metrics_match_the_papers_formulas():
    """With one subset of every sample and one split, torchmetrics' numbers are the closed forms."""
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 5, generator=g, dtype=torch.float64)
    fake = 0.5 + 1.5 * torch.randn(30, 5, generator=g, dtype=torch.float64)
    logits = 3 * torch.randn(30, 4, generator=g, dtype=torch.float64)
    m = feature_metrics(ImageFeatures(fake, logits, "x"), ImageFeatures(real, torch.zeros(40, 4), "x"), kid_subsets=1, kid_subset_size=1000, is_splits=1)
    assert m["kid_subset_size"] == 30  # capped at the smaller set

    # Frechet distance (Heusel et al. 2017), via the eigenvalues of S_r S_f for the trace of the root.
    mu_r, mu_f, s_r, s_f = real.mean(0), fake.mean(0), real.T.cov(), fake.T.cov()
    root_trace = torch.linalg.eigvals(s_r @ s_f).sqrt().real.sum()
    assert m["fd"] == pytest.approx(float((mu_r - mu_f).square().sum() + s_r.trace() + s_f.trace() - 2 * root_trace), rel=1e-9)

    # KID (Binkowski et al. 2018): unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, on the 30 fakes and 30 of the reals.
    def k(a, b):
        return (a @ b.T / 5 + 1) ** 3

    torch.manual_seed(0)  # feature_metrics seeds its own forked RNG with seed=0: the same real subset
    sub = real[torch.randperm(40)[:30]]
    kxx, kyy, kxy = k(sub, sub), k(fake, fake), k(sub, fake)
    off = ~torch.eye(30, dtype=torch.bool)
    mmd = kxx[off].mean() + kyy[off].mean() - 2 * kxy.mean()
    assert m["kid"] == pytest.approx(float(mmd), rel=1e-9) and m["kid_std"] == 0.0  # one subset: no spread

    # Inception score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))).
    p = logits.softmax(1)
    kl = (p * (p.log() - p.mean(0, keepdim=True).log())).sum(1)
    assert m["is"] == pytest.approx(math.exp(float(kl.mean())), rel=1e-9)


def test_seeded_and_leaves_the_callers_rng_alone(digits):
    train, test = digits
    a = image_metrics(test, train, kid_subsets=20, seed=1)
    state = torch.get_rng_state()
    b = image_metrics(test, train, kid_subsets=20, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == b
    c = image_metrics(test, train, kid_subsets=20, seed=2)
    assert c["classifier_kid"] != a["classifier_kid"] and c["classifier_fd"] == a["classifier_fd"]  # FD has no randomness


# --- the digits classifier -----------------------------------------------------------------------
def test_classifier_metrics_real_vs_real_and_noise(digits):
    train, test = digits
    half = len(train) // 2
    real = image_metrics(train[:half], train[half:], kid_subsets=30)  # two disjoint sets of real digits
    noise = image_metrics(torch.rand(half, 1, 8, 8, generator=torch.Generator().manual_seed(0)), train[half:], kid_subsets=30)
    assert set(real) >= {"classifier_fd", "classifier_kid", "classifier_kid_std", "classifier_is", "classifier_is_std"}
    assert not {"fid", "kid", "is"} & set(real)  # never reported as the Inception metrics
    assert real["num_fake"] == real["num_real"] == half and real["extractor"] == "classifier"
    assert real["kid_subset_size"] == half // 2 and real["kid_subsets"] == 30  # halves: a std that means something
    assert abs(real["classifier_kid"]) < 0.01 * noise["classifier_kid"]  # unbiased: ~0 for two real sets
    assert abs(real["classifier_kid"]) < real["classifier_kid_std"]  # within its own spread of 0
    assert noise["classifier_kid"] > 10 * noise["classifier_kid_std"]
    assert noise["classifier_fd"] > 50 * real["classifier_fd"]
    # Real digits: confident and balanced over 10 classes -> IS near 10; noise: few classes -> low.
    assert real["classifier_is"] > 8.5 and noise["classifier_is"] < 4.0
    on_test = image_metrics(test, train, kid_subsets=10)
    assert on_test["classifier_is"] > 2 * noise["classifier_is"]


def test_classifier_metrics_grow_with_corruption(digits):
    """The Frechet-LeNet-distance property: FD and KID rise, IS falls, as real digits get noisier."""
    train, test = digits
    g = torch.Generator().manual_seed(0)
    runs = [image_metrics((test + s * torch.randn(test.shape, generator=g)).clamp(0, 1), train, kid_subsets=10) for s in (0.0, 0.1, 0.2, 0.4)]
    for key, sign in (("classifier_fd", 1), ("classifier_kid", 1), ("classifier_is", -1)):
        values = [sign * r[key] for r in runs]
        assert values == sorted(values), (key, values)
    assert runs[-1]["classifier_fd"] > 10 * runs[0]["classifier_fd"]


def test_label_agreement(digits):
    train, test = digits
    dm = DigitsDataModule(normalization="none")
    dm.setup("fit")
    labels = dm.test_set.tensors[1]
    right = digits_label_agreement(test, labels)
    assert right["label_agreement_pct"] > 95.0 and right["num_samples"] == len(test)  # the classifier's 98% test accuracy
    wrong = digits_label_agreement(test, (labels + 1) % 10)  # a generator that draws the wrong class
    assert wrong["label_agreement_pct"] < 3.0
    only_zeros = digits_label_agreement(test[labels == 0], torch.zeros(int((labels == 0).sum())))
    assert only_zeros["label_agreement_per_class_pct"][0] > 90.0 and math.isnan(only_zeros["label_agreement_per_class_pct"][1])


def test_cached_real_features_give_the_same_numbers(digits):
    train, test = digits
    cached = extract_features(train)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as inside a bf16-mixed Lightning loop
        assert torch.equal(extract_features(train).features, cached.features)  # autocast is switched off
    assert cached.features.shape == (len(train), 256) and cached.logits.shape == (len(train), 10)
    assert cached.features.dtype == torch.float64 and cached.features.device.type == "cpu"
    assert image_metrics(test, cached, kid_subsets=10) == image_metrics(test, train, kid_subsets=10)
    with pytest.raises(ValueError, match="features from 'classifier' passed for extractor 'inception'"):
        image_metrics(test, cached, extractor="inception")


def test_input_errors(digits):
    train, test = digits
    with pytest.raises(ValueError, match="unknown extractor 'lenet'"):
        image_metrics(test, train, extractor="lenet")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\].*\(x \+ 1\) / 2"):
        image_metrics(test * 2 - 1, train)  # generator outputs in [-1, 1], not mapped
    with pytest.raises(ValueError, match=r"\(1, 8, 8\) images.*extractor='inception'"):
        image_metrics(torch.rand(30, 3, 32, 32), torch.rand(30, 3, 32, 32))
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_metrics(torch.full((30, 1, 8, 8), float("nan")), train)
    with pytest.raises(ValueError, match="at least 20 fake images"):
        image_metrics(test[:10], train)


# --- Inception: weights file and wiring ----------------------------------------------------------
def test_missing_inception_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    pytest.importorskip("torch_fidelity")
    with pytest.raises(RuntimeError, match=f"{tmp_path / 'nope.pth'}: no such file.*{metrics.INCEPTION_FILE}"):
        image_metrics(torch.rand(20, 3, 8, 8), torch.rand(20, 3, 8, 8), extractor="inception", weights=str(tmp_path / "nope.pth"))

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(RuntimeError, match=f"{metrics.INCEPTION_FILE}, which are not in {cache}.*--model.inception_weights=PATH"):
        inception_weights(None)


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A weights file of the real InceptionV3 architecture with random weights (none can be downloaded here).

    torch-fidelity loads weights inside its constructor, so loading is stubbed out while one net is
    built; convolutions get He init so the random features neither vanish nor explode over ~95 layers.
    """
    fe = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    from torchmetrics.image.fid import NoTrainInceptionV3

    mp = pytest.MonkeyPatch()
    mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
    mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state, *a, **k: None)
    try:
        torch.manual_seed(0)
        net = NoTrainInceptionV3("inception-v3-compat", ["2048"])
    finally:
        mp.undo()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    path = tmp_path_factory.mktemp("inception") / metrics.INCEPTION_FILE
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Metric .* will save all extracted features")
@pytest.mark.filterwarnings("ignore:.*degrees of freedom")
def test_inception_path_matches_torchmetrics_own_wiring(random_inception_weights):
    from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(0)
    real = torch.rand(3, 3, 16, 16, generator=g)
    fake = (real + 0.3 * torch.randn(3, 3, 16, 16, generator=g)).clamp(0, 1)
    ours = image_metrics(fake, real, extractor="inception", weights=random_inception_weights, kid_subsets=2, kid_subset_size=3, is_splits=1)
    assert set(ours) >= {"fid", "kid", "kid_std", "is", "is_std"} and ours["extractor"] == "inception"
    assert ours["kid_subset_size"] == 3 and all(math.isfinite(ours[k]) for k in ("fid", "kid", "is"))

    # torchmetrics' own InceptionV3 from the same file, given to its FID / KID / IS (the metrics' weights-path
    # keyword is newer than the lowest torchmetrics declared; subset = all 3, one split: no randomness)
    pool = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=random_inception_weights)
    fid = FrechetInceptionDistance(feature=pool)  # a custom network takes uint8 itself, as normalize=True would make
    fid.update((real * 255).byte(), real=True)
    fid.update((fake * 255).byte(), real=False)
    assert ours["fid"] == pytest.approx(float(fid.compute()), rel=1e-5)
    assert ours["fid"] > 0
    kid = KernelInceptionDistance(feature=pool, subsets=1, subset_size=3)
    kid.update((real * 255).byte(), real=True)
    kid.update((fake * 255).byte(), real=False)
    assert ours["kid"] == pytest.approx(float(kid.compute()[0]), rel=1e-4)
    logits = NoTrainInceptionV3("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=random_inception_weights)
    score = InceptionScore(feature=logits, splits=1, normalize=True)
    score.update(fake)
    assert ours["is"] == pytest.approx(float(score.compute()[0]), rel=1e-4)


def test_inception_takes_grey_images_and_caches_the_network(random_inception_weights):
    grey = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = extract_features(grey, "inception", random_inception_weights)
    b = extract_features(grey.expand(-1, 3, -1, -1), "inception", random_inception_weights)
    assert a.features.shape == (2, 2048) and a.logits.shape == (2, 1008)
    assert torch.equal(a.features, b.features)  # grey = the same value in R, G and B
    assert a.features.std() > 1e-3  # the random weights give live features: the test above compares something
    assert metrics.inception_network(random_inception_weights) is metrics.inception_network(random_inception_weights)
    with pytest.raises(ValueError, match="1- or 3-channel"):
        extract_features(torch.rand(2, 4, 8, 8), "inception", random_inception_weights)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Metric .* will save all extracted features")
def test_gan_evaluation_reports_inception_fid_kid_is(random_inception_weights):
    """The GAN recipe's Inception path end to end (random weights: the wiring, not the values)."""
    from lightning_dlstrat.recipes.gan import evaluate, report_lines
    from lightning_dlstrat.trainers.gan import GAN

    dm = DigitsDataModule(normalization="tanh")
    gan = GAN(in_shape=dm.dims, fid="inception", inception_weights=random_inception_weights, conditional=True, num_classes=10)
    result = evaluate(gan, dm, n=20)
    assert result["kind"] == "inception" and result["num_fake"] == result["num_real"] == result["num_samples"] == 20
    assert all(math.isfinite(result[k]) for k in ("fid", "kid", "kid_std", "is", "is_std"))
    assert not any(k.startswith("classifier") or k.startswith("label_") for k in result)  # no digits classifier here
    (line,) = report_lines(result)
    assert line.startswith(f"Inception FID {result['fid']:.2f}, KID ") and "20 samples vs 20 training images" in line
