"""timm conventions for every registered classifier (as timm's own tests parametrise over its models).

Pretrained loading with another ``num_classes`` (new head) or ``in_chans`` (adapted first conv),
timm's argument names (``drop_path_rate``, ``global_pool``, ``in_chans``), ``features_only`` with
``feature_info``, ``pretrained_cfg_overlay=dict(file=...)`` and the zoo's pretrained tags.
"""

import pytest
import timm
import torch

import lightning_dlstrat  # noqa: F401  (registers the timm entry points)
from lightning_dlstrat.hub import HubError, architectures
from lightning_dlstrat.timm_models import TAGS
from _helpers import SMALL

CLASSIFIERS = sorted(architectures("classifier"))
CONV = [n for n in CLASSIFIERS if hasattr(architectures()[n], "forward_intermediates")]


def small(name: str, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **{**SMALL[name], **overrides})


def image(net, batch: int = 2) -> torch.Tensor:
    shape = net.in_shape if hasattr(net, "in_shape") else (net.in_chans, 8, 8)
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(1))


def test_every_classifier_is_a_timm_model_and_the_zoo_tags_are_pretrained():
    assert set(CLASSIFIERS) <= set(timm.list_models())
    assert {"darts_net.digits", "dlstrat_mlp.digits"} <= set(TAGS) and set(TAGS) <= set(timm.list_pretrained())
    assert "darts_net.digits" in timm.list_pretrained("darts*")


def test_the_default_config_is_the_papers_network_and_the_zoo_models_are_tags():
    """``create_model("darts_net")`` is the paper's CIFAR-10 network (3x32x32), not the zoo's digits tag."""
    from timm.models import get_pretrained_cfg

    for name in ("darts_net", "nb201_net"):
        cfg = get_pretrained_cfg(name)
        assert cfg.input_size == (3, 32, 32) and cfg.tag is None and not cfg.has_weights
    net = timm.create_model("darts_net", genotype="DARTS_V2")
    assert net.in_chans == 3 and (net.C, net.layers) == (36, 20)
    # the paper's 3.3M: DARTS_V2, 36 channels, 20 cells, without the auxiliary head (Liu et al. 2019, table 1)
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary_head.")) == 3_349_342
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    assert get_pretrained_cfg("darts_net.digits").input_size == (1, 8, 8)
    assert timm.create_model("darts_net.digits", pretrained=True).in_chans == 1


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_pretrained_with_another_num_classes_keeps_the_body_and_resets_the_head(name, tmp_path):
    net = small(name).eval()
    net.save_pretrained(tmp_path / name)
    five = timm.create_model(f"local-dir:{tmp_path / name}", pretrained=True, num_classes=5).eval()
    x = image(net)
    assert five(x).shape == (2, 5) and five.num_classes == 5
    assert torch.equal(five.forward_head(five.forward_features(x), pre_logits=True), net.forward_head(net.forward_features(x), pre_logits=True))
    same = timm.create_model(f"local-dir:{tmp_path / name}", pretrained=True).eval()
    assert torch.equal(same(x), net(x))
    # the file itself, as timm users give it
    direct = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / name / "model.safetensors")), **SMALL[name]).eval()
    assert torch.equal(direct(x), net(x))
    with pytest.raises(HubError, match="safetensors only"):
        (tmp_path / "weights.pth").write_bytes(b"not for unpickling")
        timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "weights.pth")), **SMALL[name])


@pytest.mark.parametrize("name", CONV)
def test_pretrained_with_another_in_chans_adapts_the_first_conv(name, tmp_path):
    net = small(name).eval()  # in_chans=1
    net.save_pretrained(tmp_path / name)
    rgb = timm.create_model(f"local-dir:{tmp_path / name}", pretrained=True, in_chans=3).eval()
    grey = image(net)  # (2, 1, 8, 8)
    # timm repeats a 1-channel filter over 3 channels, scaled by 1/3: a grey RGB image gives the same logits
    assert torch.allclose(rgb(grey.expand(-1, 3, -1, -1)), net(grey), atol=1e-5)


@pytest.mark.parametrize("name", CONV)
def test_timm_names_global_pool_and_drop_path_rate(name):
    net = small(name, global_pool="max").eval()
    x = image(net)
    pooled = net.forward_head(net.forward_features(x), pre_logits=True)  # (B, num_features)
    assert torch.equal(pooled, net.forward_features(x).amax(dim=(2, 3)))
    net.reset_classifier(3, global_pool="avgmax")
    assert net(x).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown global_pool 'sum'"):
        small(name, global_pool="sum")
    if name == "darts_net":  # the only family with drop-path
        assert small(name, drop_path_rate=0.3).drop_path_rate == 0.3


@pytest.mark.parametrize("name", CONV)
def test_features_only_gives_one_map_per_resolution(name):
    net = small(name).eval()
    feats = timm.create_model(name, features_only=True, **SMALL[name]).eval()
    feats.model.load_state_dict(net.state_dict())  # FeatureGetterNet wraps the network as .model
    x = image(net)
    maps = feats(x)
    assert [m.shape[1] for m in maps] == feats.feature_info.channels()
    assert feats.feature_info.reduction() == [1, 2, 4]
    assert [m.shape[-1] for m in maps] == [8, 4, 2]
    assert torch.equal(maps[-1], net.forward_features(x))  # the last map is what the head pools
    last = timm.create_model(name, features_only=True, out_indices=(-1,), **SMALL[name]).eval()
    last.model.load_state_dict(net.state_dict())
    assert len(last(x)) == 1 and torch.equal(last(x)[0], maps[-1])


@pytest.mark.parametrize("tag", sorted(TAGS))
def test_zoo_tags_load_offline_from_the_packaged_files(tag, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lightning_dlstrat import zoo

    name = TAGS[tag][0]
    net = timm.create_model(tag, pretrained=True).eval()
    assert net.pretrained_cfg["hf_hub_id"] == f"lightning-dlstrat/{name}"
    ref = zoo.load(name)
    x = image(ref, batch=4)
    assert torch.equal(net(x), ref(x))
    data = timm.data.resolve_data_config({}, model=net)  # the zoo model's own preprocessing, for timm's transforms
    shipped = TAGS[tag][1]["pretrained_cfg"]
    assert data["input_size"] == tuple(shipped["input_size"]) and data["mean"] == tuple(shipped["mean"])
    head = timm.create_model(tag, pretrained=True, num_classes=3).eval()
    assert head(x).shape == (4, 3)
