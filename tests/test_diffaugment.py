"""DiffAugment (Zhao et al., NeurIPS 2020): policies, geometry, colour, determinism, gradients (diffaugment.py)."""

import pytest
import torch

from lightning_dlstrat.diffaugment import (
    DiffAugment,
    brightness,
    contrast,
    cutout,
    cutout_mask,
    diff_augment,
    parse_policy,
    saturation,
    translate,
    translation,
)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


# --- policies ------------------------------------------------------------------------------------
def test_policy_parsing():
    assert parse_policy("color,translation,cutout") == ("color", "translation", "cutout")
    assert parse_policy(" Translation , cutout ") == ("translation", "cutout")
    assert parse_policy(["cutout", "color"]) == ("cutout", "color")
    assert parse_policy("") == parse_policy(None) == parse_policy("none") == ()
    with pytest.raises(ValueError, match=r"unknown DiffAugment policy 'flip'.*color, brightness, saturation, contrast, translation, cutout"):
        parse_policy("color,flip")
    with pytest.raises(ValueError, match=r"policies 'rotate', 'zoom'"):
        DiffAugment("rotate,translation,zoom")  # fails when built, before any training
    x = torch.rand(2, 3, 8, 8)
    assert diff_augment(x, "") is x  # no policy: untouched
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        diff_augment(torch.rand(2, 64))


# --- geometry on hand-made images ----------------------------------------------------------------
def test_translate_moves_content_and_fills_zeros():
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).repeat(3, 1, 1, 1)  # pixel values 1..16, no zeros
    out = translate(x, torch.tensor([1, 0, -2]), torch.tensor([0, -1, 2]))
    # sample 0: down 1 -> the first row is zero, row i is the old row i-1
    assert torch.equal(out[0, 0, 0], torch.zeros(4)) and torch.equal(out[0, 0, 1:], x[0, 0, :3])
    # sample 1: left 1 -> the last column is zero
    assert torch.equal(out[1, 0, :, 3], torch.zeros(4)) and torch.equal(out[1, 0, :, :3], x[1, 0, :, 1:])
    # sample 2: up 2, right 2 -> only the old bottom-left 2x2 block survives, at the top right
    expected = torch.zeros(4, 4)
    expected[:2, 2:] = x[2, 0, 2:, :2]
    assert torch.equal(out[2, 0], expected)


def test_translation_shifts_by_at_most_one_eighth():
    # A single bright pixel in the middle of 32x32 images: its displacement is the shift.
    x = torch.zeros(400, 1, 32, 32)
    x[:, :, 16, 16] = 1.0
    out = translation(x, seeded())
    pos = out.flatten(1).argmax(dim=1)  # (400,)
    dy, dx = pos // 32 - 16, pos % 32 - 16
    assert out.flatten(1).sum(dim=1).eq(1.0).all()  # the pixel is moved, never lost (shift <= 4 < 16)
    assert dy.abs().max() == 4 and dx.abs().max() == 4  # round(32 / 8) = 4, reached
    assert set(dy.tolist()) == set(range(-4, 5))  # every shift in [-4, 4] is drawn
    assert (dy != dx).any()  # the two axes are drawn independently


def test_cutout_mask_geometry_and_clipping():
    # 8x8 image, side 4: centre (4, 4) covers rows/cols 2..5; centre (0, 7) is clipped to rows 0..1, cols 5..7.
    m = cutout_mask((2, 1, 8, 8), torch.tensor([4, 0]), torch.tensor([4, 7]), (4, 4))
    assert m.shape == (2, 1, 8, 8)
    assert torch.equal(m[0, 0, 2:6, 2:6], torch.zeros(4, 4)) and m[0].sum() == 64 - 16
    assert torch.equal(m[1, 0, 0:2, 5:8], torch.zeros(2, 3)) and m[1].sum() == 64 - 6
    odd = cutout_mask((1, 1, 7, 7), torch.tensor([3]), torch.tensor([3]), (3, 3))
    assert torch.equal(odd[0, 0, 2:5, 2:5], torch.zeros(3, 3)) and odd.sum() == 49 - 9  # odd side: symmetric


def test_cutout_zeroes_at_most_half_side_squares():
    x = torch.ones(500, 3, 32, 32)
    out = cutout(x, seeded())
    zeros = (out == 0).all(dim=1)  # (500, 32, 32): the same pixels in every channel
    assert torch.equal((out == 0).any(dim=1), zeros)
    rows, cols = zeros.any(dim=2).sum(dim=1), zeros.any(dim=1).sum(dim=1)  # (500,) extent of the cut
    assert rows.max() == 16 and cols.max() == 16  # the full 16x16 square when it lies inside
    assert rows.min() >= 8 and cols.min() >= 8  # a centre inside the image keeps at least half of each side
    assert torch.equal(zeros.sum(dim=(1, 2)), rows * cols)  # a rectangle, no other pixel touched
    assert (rows < 16).any()  # some are clipped at the borders


# --- colour --------------------------------------------------------------------------------------
def test_colour_ranges_and_means():
    torch.manual_seed(0)
    x = torch.rand(2000, 3, 4, 4) * 2 - 1
    shift = (brightness(x, seeded()) - x)[:, 0, 0, 0]  # (2000,) one offset per image
    assert torch.allclose(brightness(x, seeded()) - x, shift.view(-1, 1, 1, 1).expand_as(x), atol=1e-6)
    assert -0.5 <= shift.min() < -0.45 and 0.45 < shift.max() < 0.5
    sat = saturation(x, seeded())
    assert torch.allclose(sat.mean(dim=1), x.mean(dim=1), atol=1e-5)  # the per-pixel grey level is kept
    ratio = ((sat - sat.mean(1, keepdim=True)) / (x - x.mean(1, keepdim=True))).flatten(1)[:, 0]  # (2000,)
    assert 0.0 <= ratio.min() < 0.05 and 1.95 < ratio.max() < 2.0
    con = contrast(x, seeded())
    assert torch.allclose(con.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)  # the image mean is kept
    scale = con.flatten(1).std(dim=1) / x.flatten(1).std(dim=1)  # (2000,)
    assert 0.5 <= scale.min() < 0.55 and 1.45 < scale.max() < 1.5


def test_grayscale_saturation_is_identity():
    x = torch.rand(8, 1, 8, 8)
    g = seeded()
    state = g.get_state()
    assert torch.equal(saturation(x, g), x)
    assert torch.equal(g.get_state(), state)  # draws nothing
    out = diff_augment(x, "color,translation,cutout", seeded())
    assert out.shape == x.shape and torch.isfinite(out).all()


# --- determinism, gradients, dtype ---------------------------------------------------------------
def test_deterministic_under_a_seeded_generator():
    x = torch.rand(16, 3, 32, 32)
    a = diff_augment(x, generator=seeded(7))
    assert torch.equal(a, diff_augment(x, generator=seeded(7)))
    assert not torch.equal(a, diff_augment(x, generator=seeded(8)))
    torch.manual_seed(1)
    b = diff_augment(x)  # None: the global RNG
    torch.manual_seed(1)
    assert torch.equal(b, diff_augment(x))
    assert torch.equal(DiffAugment()(x, seeded(7)), a)
    g = seeded(3)
    first, second = diff_augment(x, generator=g), diff_augment(x, generator=g)
    assert not torch.equal(first, second)  # consecutive batches (reals, fakes) get fresh draws


def test_gradients_pass_through_to_the_images():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, generator=seeded())
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # Translation alone: the gradient is 1 on pixels that stay in the picture, 0 on those pushed out.
    y = torch.rand(1, 1, 4, 4, requires_grad=True)
    translate(y, torch.tensor([1]), torch.tensor([0])).sum().backward()
    assert torch.equal(y.grad[0, 0, :3], torch.ones(3, 4)) and torch.equal(y.grad[0, 0, 3], torch.zeros(4))
    # Cutout: zero gradient exactly under the patch.
    w = torch.rand(1, 1, 8, 8, requires_grad=True)
    mask = cutout_mask(w.shape, torch.tensor([4]), torch.tensor([4]), (4, 4))
    (w * mask).sum().backward()
    assert torch.equal(w.grad, mask)
    # The gradient reaches a generator's parameters through the augmentation.
    net = torch.nn.Conv2d(3, 3, 3, padding=1)
    diff_augment(net(torch.rand(2, 3, 8, 8)), generator=seeded()).pow(2).sum().backward()
    assert net.weight.grad.abs().sum() > 0


def test_bf16_input_keeps_dtype():
    x = torch.rand(4, 3, 8, 8).bfloat16()
    out = diff_augment(x, generator=seeded())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape
    assert diff_augment(torch.rand(0, 3, 8, 8), generator=seeded()).shape == (0, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_with_a_cpu_generator():
    x = torch.rand(4, 3, 16, 16)
    on_cpu = diff_augment(x, generator=seeded(5))
    on_gpu = diff_augment(x.cuda(), generator=seeded(5))  # the draws are made on the generator's device, then moved
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), on_cpu, atol=1e-6)  # the same augmentation wherever the images live
