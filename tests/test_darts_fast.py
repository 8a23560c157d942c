"""The fast (batched) DARTS supernet computes the same function as the per-edge reference.

Both are built with the same configuration, the reference's weights and BatchNorm statistics are
copied into the fast one, and then outputs, the gradients of every weight and of alpha (and the
PC-DARTS betas), the updated BatchNorm running statistics and eval-mode outputs are compared.
Tolerances: float64 runs agree to ~1e-14 (only the order of floating-point additions differs:
grouped vs separate convolutions, weighted sums accumulated per state instead of per node), so
1e-10 is asserted; float32 gets 1e-4 relative for the same reason at ~1e-7 machine precision
accumulated over eight cells.
"""

import pytest
import torch

from lightning_dlstrat.spaces.darts.search import SearchNetwork
from lightning_dlstrat.spaces.darts.search_fast import FastSearchNetwork, _polyphase, _unpolyphase, depthwise_conv, edge_tensor_pairs
from lightning_dlstrat.trainers.darts_search import DARTSSearch

CONFIGS = [
    dict(C=4, layers=5, in_shape=(1, 8, 8)),  # digits-sized: reductions at cells 1 and 3
    dict(C=4, layers=3, in_shape=(3, 12, 12), steps=3, multiplier=2),
    dict(C=4, layers=5, in_shape=(1, 8, 8), partial_channels=2),  # PC-DARTS: partial channels + edge norm
    dict(C=4, layers=4, in_shape=(3, 7, 7), primitives=["none", "max_pool_3x3", "skip_connect", "dil_conv_3x3", "sep_conv_5x5"]),
]


def pair(cfg, dtype, channels_last):
    torch.manual_seed(0)
    ref = SearchNetwork(**cfg).to(dtype)
    fast = FastSearchNetwork(**cfg, channels_last=channels_last).to(dtype)
    with torch.no_grad():  # non-uniform alpha, so every operation's weight matters
        for a in ref.arch_parameters():
            a.normal_()
    fast.load_reference(ref)
    return ref, fast


@pytest.mark.parametrize("cfg", CONFIGS, ids=["digits", "steps3", "pc-darts", "odd-size-subset"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_fast_supernet_equals_reference_float64(cfg, channels_last):
    ref, fast = pair(cfg, torch.float64, channels_last)
    x = torch.randn(6, *cfg["in_shape"], dtype=torch.float64)
    target = torch.randint(0, 10, (6,))
    out_ref, out_fast = ref(x), fast(x)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-10, atol=1e-10)
    torch.nn.functional.cross_entropy(out_ref, target).backward()
    torch.nn.functional.cross_entropy(out_fast, target).backward()
    # alpha (and betas): same parameters in both networks
    for a_ref, a_fast in zip(ref.arch_parameters(), fast.arch_parameters(), strict=True):
        torch.testing.assert_close(a_fast.grad, a_ref.grad, rtol=1e-10, atol=1e-12)
    # per-edge weights: each reference tensor against its slice of a batched fast tensor
    n_pairs = 0
    fast_params = {id(p): p for p in fast.parameters()}
    for mine, theirs in edge_tensor_pairs(fast, ref):
        if theirs.requires_grad:  # weights (BatchNorm statistics have no gradient)
            owner = fast_params[id(mine._base)]  # the batched parameter this slice views
            # gradients follow their parameter's layout, so the same view of .grad is this edge's
            grad_slice = owner.grad.as_strided(mine.shape, mine.stride(), mine.storage_offset())
            torch.testing.assert_close(grad_slice, theirs.grad, rtol=1e-10, atol=1e-12)
            n_pairs += 1
        else:  # the running statistics the forward pass just updated
            torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-12)
    assert n_pairs > 0
    # shared weights (stem, preprocessing, classifier) by name
    ref_named = dict(ref.named_parameters())
    for name, p in fast.named_parameters():
        if ".sources." not in name:
            torch.testing.assert_close(p.grad, ref_named[name].grad, rtol=1e-10, atol=1e-12)
    ref.eval(), fast.eval()
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-10, atol=1e-10)
    # and the genotypes agree
    assert fast.genotype() == ref.genotype()


def test_fast_supernet_float32_close_to_reference():
    cfg = dict(C=8, layers=5, in_shape=(1, 8, 8))
    ref, fast = pair(cfg, torch.float32, True)
    x = torch.randn(16, 1, 8, 8)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-4, atol=1e-4)


def test_fast_supernet_runs_under_bf16_autocast_close_to_reference():
    """Mixing weights enter BatchNorm as its scale: it must stay float32 beside bf16 activations."""
    ref, fast = pair(dict(C=4, layers=5, in_shape=(1, 8, 8)), torch.float32, True)
    x = torch.randn(8, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_fast, out_ref = fast(x), ref(x)
    assert out_fast.dtype == torch.bfloat16
    torch.testing.assert_close(out_fast.float(), out_ref.float(), rtol=0.05, atol=0.1)
    out_fast.float().sum().backward()
    assert fast.alphas_normal.grad.abs().sum() > 0


def test_weights_round_trip_between_layouts():
    cfg = dict(C=4, layers=5, in_shape=(1, 8, 8))
    ref, fast = pair(cfg, torch.float64, True)
    back = SearchNetwork(**cfg).double()
    fast.store_reference(back)
    for (name, a), b in zip(ref.state_dict().items(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("size,kernel,stride", [(8, 3, 1), (8, 5, 1), (8, 5, 2), (7, 3, 1), (7, 3, 2), (2, 5, 1), (2, 3, 2), (4, 5, 1), (1, 5, 1)])
def test_polyphase_dilated_depthwise_conv_is_exact(size, kernel, stride):
    x = torch.randn(3, 5, size, size, dtype=torch.float64)
    w = torch.randn(5, 1, kernel, kernel, dtype=torch.float64)
    expected = torch.nn.functional.conv2d(x, w, stride=stride, padding=kernel - 1, dilation=2, groups=5)
    torch.testing.assert_close(depthwise_conv(x, w, stride, 2), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("kernel,dilation", [(3, 1), (5, 1), (3, 2), (5, 2)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_depthwise_conv_on_small_maps_equals_full_kernel_with_gradients(size, kernel, dilation, stride, channels_last):
    """Cropping taps that only see padding, the 1x1 shortcut and the polyphase form change neither the
    output nor the gradients (the dropped taps' gradient is exactly zero in the full convolution too)."""
    x = torch.randn(4, 6, size, size, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 1, kernel, kernel, dtype=torch.float64)
    pad = dilation * (kernel - 1) // 2
    grads = []
    for fn in (lambda x, w: depthwise_conv(x, w, stride, dilation), lambda x, w: torch.nn.functional.conv2d(x, w, stride=stride, padding=pad, dilation=dilation, groups=6)):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        out = fn(xg, wg)
        out.backward(torch.arange(out.numel(), dtype=torch.float64).view_as(out).sin())
        grads.append((out.detach(), xg.grad, wg.grad))
    for mine, full in zip(*grads):
        torch.testing.assert_close(mine, full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels_last", [True, False], ids=["nhwc", "nchw"])
def test_polyphase_split_matches_pixel_unshuffle_up_to_channel_order(channels_last):
    x = torch.randn(2, 3, 4, 6)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    phases = _polyphase(x, 2)  # (B, 4 * 2 * 3, 2, 3), phase-major
    expected = torch.nn.functional.pixel_unshuffle(x.repeat(1, 2, 1, 1), 2)  # channel-major: 4 (r C + c) + phase
    assert torch.equal(phases.view(2, 4, 6, 2, 3).transpose(1, 2).reshape(2, 24, 2, 3), expected)
    assert torch.equal(_unpolyphase(_polyphase(x, 1)), x)


def test_search_module_uses_the_fast_network_by_default():
    assert isinstance(DARTSSearch(in_shape=(1, 8, 8), C=4, layers=5).net, FastSearchNetwork)
    ref = DARTSSearch(in_shape=(1, 8, 8), C=4, layers=5, implementation="reference").net
    assert type(ref) is SearchNetwork
    with pytest.raises(ValueError, match="implementation must be 'fast' or 'reference'"):
        DARTSSearch(implementation="turbo")


# --- the capture-ready search step (lightning_dlstrat.cuda_graph) --------------------------------------
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes  # noqa: E402

from lightning_dlstrat.cuda_graph import GraphedSearchStep  # noqa: E402

_HOST_READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default}


class NoHostReads(TorchDispatchMode):
    """Fails on any op that hands a tensor's value to Python (.item(), float(t), bool(t), .tolist()).

    On a GPU each of those is a host synchronisation, which a captured CUDA graph cannot contain.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            raise AssertionError(f"host read of a tensor value ({func}) inside the search step")
        return func(*args, **(kwargs or {}))


class OutsideCheck:
    """An optimiser whose step() runs outside :class:`NoHostReads`.

    CPU optimisers keep Adam's step count on the host; on CUDA the graphed step makes Adam
    ``capturable`` (step count on the device), which the GPU test below exercises.
    """

    def __init__(self, opt):
        self.opt = opt

    def __getattr__(self, name):
        return getattr(self.opt, name)

    def step(self):
        with _disable_current_modes():
            self.opt.step()


def _search(order, **kw):
    torch.manual_seed(0)
    # small (3 cells of 2 nodes) but with both reduction cells and every operation
    search = DARTSSearch(in_shape=(1, 8, 8), C=4, layers=3, steps=2, multiplier=2, order=order, **kw)
    return search, *search.make_optimizers()


def _batches(n, device="cpu"):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        pair = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(2)]
        out.append([(x.to(device), y.to(device)) for x, y in pair])
    return out


def _state(search, w_opt, a_opt):
    tensors = [t.detach().clone() for t in search.state_dict().values()]
    for opt in (w_opt, a_opt):
        for s in opt.state.values():
            tensors += [v.detach().clone() for v in s.values() if torch.is_tensor(v)]
    return tensors


@pytest.mark.parametrize("order", [1, 2])
def test_search_step_reads_no_tensor_value_on_the_host(order):
    """The step outside the optimisers never synchronises: it can be captured as a CUDA graph."""
    search, w_opt, a_opt = _search(order)
    (train, val), (train2, val2) = _batches(2)
    search.search_step(train, val, w_opt, a_opt)  # eager: creates the optimiser state
    with NoHostReads():
        loss, _ = search.search_step(train2, val2, OutsideCheck(w_opt), OutsideCheck(a_opt))
    assert torch.isfinite(loss)
    with pytest.raises(AssertionError, match="host read"):  # the check itself does catch a sync
        with NoHostReads():
            float(loss)


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("enabled", [True, False], ids=["graph-ready", "switched-off"])
def test_static_buffer_step_equals_eager_steps(order, enabled):
    """Through its static input buffers (eager on CPU) the wrapped step is the plain step, bit for bit,
    also across an lr change (which on CUDA makes it capture a new graph)."""
    a = _search(order)
    b = _search(order)
    step = GraphedSearchStep(b[0], b[1], b[2], warmup=1, enabled=enabled)
    for i, (train, val) in enumerate(_batches(3)):
        if i == 2:
            for opt in (a[1], b[1]):
                opt.param_groups[0]["lr"] *= 0.5
        loss_a, logits_a = a[0].search_step(train, val, a[1], a[2])
        loss_b, logits_b = step(train, val)
        assert torch.equal(loss_a, loss_b) and torch.equal(logits_a, logits_b)
    for ta, tb in zip(_state(*a), _state(*b), strict=True):
        assert torch.equal(ta, tb)
    assert step.calls == 3 and step.captures == 0  # no CUDA here: nothing is captured


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graphed_step_refuses_fp16_grad_scaler_on_gpu():
    import lightning as L

    fabric = L.Fabric(accelerator="cuda", devices=1, precision="16-mixed")
    search, w_opt, a_opt = _search(1)
    _, w_opt, a_opt = fabric.setup(search, w_opt, a_opt)
    with pytest.raises(ValueError, match="GradScaler"):
        GraphedSearchStep(search, w_opt, a_opt)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("order", [1, 2])
def test_cuda_graph_replay_equals_eager_steps(order):
    """Replayed graphs take the same steps as eager execution (to float32 rounding: cuDNN may
    pick other algorithms inside a capture), recapturing when the lr changes."""
    a, b = _search(order), _search(order)
    for s in (a, b):
        s[0].cuda()
    a = (a[0], *a[0].make_optimizers())  # optimisers over the CUDA parameters
    b = (b[0], *b[0].make_optimizers())
    eager = GraphedSearchStep(*a, enabled=False)
    graphed = GraphedSearchStep(*b, warmup=2)
    for i, (train, val) in enumerate(_batches(6, "cuda")):
        if i == 4:
            for opt in (a[1], b[1]):
                opt.param_groups[0]["lr"] *= 0.5
        loss_a, _ = eager(train, val)
        loss_b, _ = graphed(train, val)
        torch.testing.assert_close(loss_b, loss_a, rtol=1e-4, atol=1e-5)
    assert graphed.captures == 2  # after the warm-up, and again for the new lr
    for ta, tb in zip(_state(*a), _state(*b), strict=True):
        torch.testing.assert_close(tb.float().cpu(), ta.float().cpu(), rtol=1e-3, atol=1e-4)
