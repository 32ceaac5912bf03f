"""CUDA kernels against the PyTorch references, through the public op functions.

The reference runs in float64 on the same (rounded) inputs, so the tolerances measure the
kernels' own error: float32 close to rounding, float16 to about its 3 significant digits.
Every test first requires the CUDA path to be in use, so that a failed build cannot turn
these into comparisons of the reference with itself.
"""

import pytest
import torch

from torch_utils.ops import bias_act as bias_act_mod
from torch_utils.ops import bias_act_cuda, upfirdn2d_cuda
from torch_utils.ops import upfirdn2d as upfirdn2d_mod

pytestmark = pytest.mark.gpu

# Relative (to the largest reference value) error allowed per dtype, for values and for
# first/second-order gradients (which pass through more rounding steps).
_TOL = {torch.float32: (2e-5, 2e-4), torch.float16: (1e-2, 3e-2)}


@pytest.fixture(scope='module')
def cuda():
    assert bias_act_cuda.available(), 'bias_act CUDA extension did not build (see the warning above)'
    assert upfirdn2d_cuda.available(), 'upfirdn2d CUDA extension did not build (see the warning above)'
    return torch.device('cuda')


def _close(actual, expected, tol, mask=None, what=''):
    """Max abs error within `tol` times the largest |expected| (over `mask` when given)."""
    a = actual.detach().double()
    e = expected.detach().double()
    assert a.shape == e.shape, f'{what}: shape {tuple(a.shape)} != {tuple(e.shape)}'
    assert torch.isfinite(a).all(), f'{what}: non-finite values'
    if mask is not None:
        a, e = a[mask], e[mask]
    scale = e.abs().max().item() if e.numel() else 0.0
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol * max(scale, 1e-3), f'{what}: max error {err:.3g} > {tol:g} x {scale:.3g}'


# ----------------------------------------------------------------------------
# bias_act


def _bias_act_grads(x, b, dy, w, **kwargs):
    """Output, first-order grads (x, b) and second-order grads (x, b) of a weighted loss."""
    y = bias_act_mod.bias_act(x, b, **kwargs)
    params = [x] if b is None else [x, b]
    g = torch.autograd.grad(y, params, dy, create_graph=True)
    loss2 = (g[0] * w).sum() + (g[1].sum() if b is not None else 0)
    if loss2.requires_grad:
        h = torch.autograd.grad(loss2, params, allow_unused=True)
        h = [torch.zeros_like(p) if t is None else t for p, t in zip(params, h)]
    else:
        h = [torch.zeros_like(p) for p in params]  # Piecewise-linear: no second order.
    return y, g, h


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('clamp', [None, 0.7])
@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('act', sorted(bias_act_mod.activation_funcs))
def test_bias_act_matches_reference(cuda, act, use_bias, clamp, dtype):
    tol_val, tol_grad = _TOL[dtype]
    x = torch.randn(4, 8, 5, 6, device=cuda).to(dtype)
    b = (torch.randn(8, device=cuda) * 0.3).to(dtype) if use_bias else None
    alpha = 0.25 if act == 'lrelu' else None
    gain = 1.3
    dy = torch.randn_like(x)
    w = torch.randn_like(x)
    kw = dict(dim=1, act=act, alpha=alpha, gain=gain, clamp=clamp)

    x_c = x.clone().requires_grad_(True)
    b_c = b.clone().requires_grad_(True) if use_bias else None
    y_c, g_c, h_c = _bias_act_grads(x_c, b_c, dy, w, impl='cuda', **kw)
    x_r = x.double().requires_grad_(True)
    b_r = b.double().requires_grad_(True) if use_bias else None
    y_r, g_r, h_r = _bias_act_grads(x_r, b_r, dy.double(), w.double(), impl='ref', **kw)

    assert y_c.dtype == dtype
    _close(y_c, y_r, tol_val, what='forward')
    # Gradients jump at the kinks of relu/lrelu/elu/selu (v = 0) and at the clamp bound; compare
    # away from both, where rounding cannot move an element across.
    v = (x_r + (b_r.reshape(1, -1, 1, 1) if use_bias else 0)).detach()
    safe = v.abs() > 0.02
    if clamp is not None:
        safe &= (y_r.detach().abs() - clamp).abs() > 0.02
    _close(g_c[0], g_r[0], tol_grad, mask=safe, what='dx')
    _close(h_c[0], h_r[0], tol_grad, mask=safe, what='second-order dx')
    if use_bias:
        # Bias gradients sum over the whole batch: only exact where every element is safe.
        rows = safe.permute(1, 0, 2, 3).reshape(8, -1).all(dim=1)
        _close(g_c[1], g_r[1], tol_grad * 4, mask=rows, what='db')
        _close(h_c[1], h_r[1], tol_grad * 4, mask=rows, what='second-order db')


@pytest.mark.parametrize('shape,dim', [((6, 7), 1), ((6, 7), 0), ((3, 5, 4, 4), 1), ((2, 3, 4), 2)])
def test_bias_act_other_dims(cuda, shape, dim):
    x = torch.randn(*shape, device=cuda, requires_grad=True)
    b = torch.randn(shape[dim], device=cuda, requires_grad=True)
    y_c = bias_act_mod.bias_act(x, b, dim=dim, act='swish', impl='cuda')
    y_r = bias_act_mod.bias_act(x, b, dim=dim, act='swish', impl='ref')
    _close(y_c, y_r, 2e-5, what='forward')
    g_c = torch.autograd.grad(y_c.square().sum(), [x, b])
    g_r = torch.autograd.grad(y_r.square().sum(), [x, b])
    for a, e in zip(g_c, g_r):
        _close(a, e, 1e-4, what='grad')


def test_bias_act_channels_last(cuda):
    x = torch.randn(2, 6, 5, 7, device=cuda).to(memory_format=torch.channels_last).requires_grad_(True)
    b = torch.randn(6, device=cuda, requires_grad=True)
    kw = dict(act='lrelu', clamp=1.0)
    y_c = bias_act_mod.bias_act(x, b, impl='cuda', **kw)
    y_r = bias_act_mod.bias_act(x, b, impl='ref', **kw)
    assert y_c.is_contiguous(memory_format=torch.channels_last)
    _close(y_c, y_r, 1e-6, what='forward')
    dy = torch.randn(2, 6, 5, 7, device=cuda)  # A contiguous gradient for a channels_last tensor.
    g_c = torch.autograd.grad(y_c, [x, b], dy)
    g_r = torch.autograd.grad(y_r, [x, b], dy)
    for a, e in zip(g_c, g_r):
        _close(a, e, 1e-5, what='grad')


def test_bias_act_noncontiguous_input(cuda):
    base = torch.randn(4, 10, 6, device=cuda)
    x = base[:, ::2, :]  # Not dense: made contiguous by the binding.
    b = torch.randn(5, device=cuda)
    _close(bias_act_mod.bias_act(x, b, act='tanh', impl='cuda'),
           bias_act_mod.bias_act(x, b, act='tanh', impl='ref'), 2e-6, what='forward')


# ----------------------------------------------------------------------------
# upfirdn2d

# (up, down, padding [x0, x1, y0, y1], flip_filter, gain, filter kind)
_UFD_CASES = [
    (1, 1, [1, 2, 1, 2], False, 1.0, '2d'),
    (2, 1, [2, 1, 2, 1], False, 4.0, '2d'),        # upsample2d, 4x4 filter.
    (1, 2, [1, 1, 1, 1], False, 1.0, '2d'),        # downsample2d, 4x4 filter.
    (2, 1, [5, 4, 5, 4], False, 4.0, 'sep'),       # upsample2d, 12-tap separable.
    (1, 2, [5, 5, 5, 5], True, 1.0, 'sep'),
    ([2, 1], [1, 3], [3, -1, 0, 2], True, 0.5, '2d'),
    (3, 2, [-2, 4, 1, -1], False, 2.0, 'asym'),
    (1, 1, [0, 0, 0, 0], False, 1.0, 'identity'),
]


def _filter(kind, device):
    if kind == 'sep':
        return upfirdn2d_mod.setup_filter([1, 3, 5, 7, 9, 11, 11, 9, 7, 5, 3, 1], device=device, separable=True)
    if kind == 'asym':
        return upfirdn2d_mod.setup_filter(torch.rand(3, 5) + 0.1, device=device)
    if kind == 'identity':
        return None
    return upfirdn2d_mod.setup_filter([1, 3, 3, 1], device=device, separable=False)


def _ufd_grads(x, f, w, **kw):
    """Output, first-order grad and second-order grad of a loss that is quadratic in the output."""
    y = upfirdn2d_mod.upfirdn2d(x, f, **kw)
    g, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    h, = torch.autograd.grad((g * w).sum(), x)
    return y, g, h


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('case', range(len(_UFD_CASES)))
def test_upfirdn2d_matches_reference(cuda, case, dtype):
    up, down, padding, flip, gain, kind = _UFD_CASES[case]
    tol_val, tol_grad = _TOL[dtype]
    f = _filter(kind, cuda)
    x = torch.randn(2, 3, 9, 10, device=cuda).to(dtype)
    w = torch.randn_like(x)
    kw = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    y_c, g_c, h_c = _ufd_grads(x.clone().requires_grad_(True), f, w, impl='cuda', **kw)
    y_r, g_r, h_r = _ufd_grads(x.double().requires_grad_(True), f, w.double(), impl='ref', **kw)
    assert y_c.dtype == dtype
    _close(y_c, y_r, tol_val, what='forward')
    _close(g_c, g_r, tol_grad, what='grad')
    _close(h_c, h_r, tol_grad, what='second-order grad')


def test_upfirdn2d_layouts(cuda):
    f = _filter('2d', cuda)
    x = torch.randn(2, 5, 8, 8, device=cuda)
    ref = upfirdn2d_mod.upfirdn2d(x, f, up=2, padding=[2, 1, 2, 1], gain=4, impl='ref')
    # channels_last in, channels_last out.
    y = upfirdn2d_mod.upfirdn2d(x.to(memory_format=torch.channels_last), f, up=2, padding=[2, 1, 2, 1],
                                gain=4, impl='cuda')
    assert y.is_contiguous(memory_format=torch.channels_last)
    _close(y, ref, 2e-6, what='channels_last')
    # A strided view is read in place.
    big = torch.randn(2, 10, 8, 16, device=cuda)
    xs = big[:, ::2, :, ::2]
    _close(upfirdn2d_mod.upfirdn2d(xs, f, down=2, padding=1, impl='cuda'),
           upfirdn2d_mod.upfirdn2d(xs, f, down=2, padding=1, impl='ref'), 2e-6, what='strided')


def test_upfirdn2d_typical_stylegan_shape(cuda):
    # Many blocks of threads: a 4x upsample of a 64-channel 32x32 batch and its gradient.
    f = _filter('2d', cuda)
    x = torch.randn(4, 64, 32, 32, device=cuda, requires_grad=True)
    kw = dict(up=2, padding=[2, 1, 2, 1], gain=4)
    y_c = upfirdn2d_mod.upfirdn2d(x, f, impl='cuda', **kw)
    y_r = upfirdn2d_mod.upfirdn2d(x, f, impl='ref', **kw)
    _close(y_c, y_r, 2e-6, what='forward')
    dy = torch.randn_like(y_c)
    _close(torch.autograd.grad(y_c, x, dy)[0], torch.autograd.grad(y_r, x, dy)[0], 2e-6, what='grad')


def test_upfirdn2d_gradgradcheck_float64(cuda):
    f = _filter('asym', cuda).double()
    x = torch.randn(1, 2, 5, 4, device=cuda, dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d_mod.upfirdn2d(x, f, up=[1, 2], down=[2, 1], padding=[1, 2, 0, 3], gain=1.5, impl='cuda')
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
