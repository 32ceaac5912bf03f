"""Reference implementations of the custom ops against independent formulations.

Everything runs in float64 on tiny tensors. Each op is compared with a naive version written
here (explicit formulas, NumPy loops, the unfused sequence of simpler ops), and checked with
gradcheck / gradgradcheck since R1 and path-length regularisation differentiate through it.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import bias_act, conv2d_resample, fma, grid_sample_gradfix, upfirdn2d

DT = torch.float64

# ----------------------------------------------------------------------------
# bias_act

SELU_SCALE = 1.0507009873554804942
SELU_ALPHA = 1.6732632423543772848


def _naive_act(name, v, alpha):
    """Textbook formulas in NumPy, independent of torch.nn.functional."""
    if name == 'linear':
        return v
    if name == 'relu':
        return np.maximum(v, 0)
    if name == 'lrelu':
        return np.where(v >= 0, v, alpha * v)
    if name == 'tanh':
        return np.tanh(v)
    if name == 'sigmoid':
        return 1 / (1 + np.exp(-v))
    if name == 'elu':
        return np.where(v > 0, v, np.expm1(v))
    if name == 'selu':
        return SELU_SCALE * np.where(v > 0, v, SELU_ALPHA * np.expm1(v))
    if name == 'softplus':
        return np.log1p(np.exp(v))
    if name == 'swish':
        return v / (1 + np.exp(-v))
    raise AssertionError(name)


ACTS = ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']


def test_activation_table_matches_the_agreed_constants():
    assert sorted(bias_act.activation_funcs) == sorted(ACTS)
    for idx, name in enumerate(ACTS, start=1):
        spec = bias_act.activation_funcs[name]
        assert spec.cuda_idx == idx
        assert spec.def_gain == pytest.approx(math.sqrt(2) if name in ('relu', 'lrelu', 'swish') else 1)
        assert spec.def_alpha == pytest.approx(0.2 if name == 'lrelu' else 0)
        assert spec.has_2nd_grad == (name not in ('linear', 'relu', 'lrelu'))
        assert spec.ref in ('x', 'y')


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('alpha,gain,clamp', [(None, None, None), (0.3, 0.7, None), (None, 2.5, 1.1)])
def test_bias_act_matches_explicit_formula(act, alpha, gain, clamp):
    x = torch.randn(2, 5, 3, dtype=DT) * 2
    b = torch.randn(5, dtype=DT)
    y = bias_act.bias_act(x, b, dim=1, act=act, alpha=alpha, gain=gain, clamp=clamp, impl='ref')

    spec = bias_act.activation_funcs[act]
    a = spec.def_alpha if alpha is None else alpha
    g = spec.def_gain if gain is None else gain
    expect = _naive_act(act, x.numpy() + b.numpy()[None, :, None], a) * g
    if clamp is not None:
        expect = np.clip(expect, -clamp, clamp)
    assert y.dtype == DT and y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-12, atol=1e-12)
    if clamp is not None:
        assert y.abs().max().item() <= clamp
        assert (y.abs() == clamp).any()  # the test data does reach the bound


def test_bias_act_bias_dimension_and_no_bias():
    x = torch.randn(3, 2, 4, dtype=DT)
    b = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=DT)
    # Bias along the last dimension, addressed both as 2 and as -1.
    for dim in (2, -1):
        y = bias_act.bias_act(x, b, dim=dim, act='linear', impl='ref')
        torch.testing.assert_close(y, x + b.view(1, 1, 4))
    y = bias_act.bias_act(x, None, act='lrelu', alpha=0.1, gain=2.0, impl='ref')
    torch.testing.assert_close(y, torch.where(x >= 0, x, 0.1 * x) * 2.0)


def test_bias_act_cuda_impl_on_cpu_uses_reference():
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    b = torch.randn(3, dtype=DT)
    ref = bias_act.bias_act(x, b, act='swish', clamp=0.5, impl='ref')
    torch.testing.assert_close(bias_act.bias_act(x, b, act='swish', clamp=0.5), ref, rtol=0, atol=0)


@pytest.mark.parametrize('act,clamp', [('lrelu', None), ('lrelu', 1.0), ('tanh', None), ('elu', None),
                                       ('selu', 0.8), ('softplus', None), ('swish', None), ('sigmoid', None)])
def test_bias_act_gradcheck_and_gradgradcheck(act, clamp):
    # Values keep clear of the kinks (0 for lrelu, +-clamp) so finite differences are valid.
    x = torch.randn(2, 3, 2, dtype=DT)
    x = (x + 0.1 * x.sign()).requires_grad_()
    b = (torch.randn(3, dtype=DT) * 0.01).requires_grad_()
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl='ref')  # noqa: E731
    if clamp is not None:
        pre = bias_act.bias_act(x, b, act=act, impl='ref').detach()
        assert ((pre.abs() - clamp).abs() > 1e-3).all()
        assert (pre.abs() > clamp).any() and (pre.abs() < clamp).any()  # both regimes tested
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_errors_name_the_problem():
    x = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match=r"unknown activation 'gelu'.*lrelu.*swish"):
        bias_act.bias_act(x, act='gelu')
    with pytest.raises(ValueError, match=r'b must be 1-D with x.shape\[1\] = 3'):
        bias_act.bias_act(x, torch.zeros(4))
    with pytest.raises(ValueError, match=r'b must be 1-D'):
        bias_act.bias_act(x, torch.zeros(3, 1))
    with pytest.raises(ValueError, match='dim=3 is out of range'):
        bias_act.bias_act(x, dim=3)
    with pytest.raises(ValueError, match='clamp must be None or non-negative'):
        bias_act.bias_act(x, clamp=-2)
    with pytest.raises(ValueError, match="impl must be 'cuda' or 'ref'"):
        bias_act.bias_act(x, impl='triton')

# ----------------------------------------------------------------------------
# upfirdn2d


def _naive_upfirdn2d(x, f, up, down, pad, flip_filter, gain):
    """Loops over pixels: zero insertion, zero padding / cropping, direct 2-D convolution,
    decimation. A 1-D filter means the separable outer product."""
    x = x.numpy()
    f = f.numpy().astype(np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    upx, upy = up
    downx, downy = down
    px0, px1, py0, py1 = pad
    n, c, h, w = x.shape

    u = np.zeros([n, c, h * upy, w * upx])
    u[:, :, ::upy, ::upx] = x

    hp, wp = h * upy + py0 + py1, w * upx + px0 + px1
    p = np.zeros([n, c, hp, wp])
    for i in range(hp):
        for j in range(wp):
            si, sj = i - py0, j - px0
            if 0 <= si < u.shape[2] and 0 <= sj < u.shape[3]:
                p[:, :, i, j] = u[:, :, si, sj]

    # True convolution: out[i, j] = sum_{a, b} p[i + a, j + b] * f[fh - 1 - a, fw - 1 - b].
    fh, fw = f.shape
    k = f if flip_filter else f[::-1, ::-1]
    out = np.zeros([n, c, hp - fh + 1, wp - fw + 1])
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = (p[:, :, i:i + fh, j:j + fw] * k).sum(axis=(2, 3))
    return out[:, :, ::downy, ::downx] * gain


def _as_pair(v):
    return [v, v] if isinstance(v, int) else list(v)


def _as_four(p):
    if isinstance(p, int):
        return [p] * 4
    return [p[0], p[0], p[1], p[1]] if len(p) == 2 else list(p)


UPFIRDN_CASES = [
    # up, down, padding, flip_filter, gain, filter kind
    (1, 1, 0, False, 1.0, '2d'),
    (2, 1, [2, 1, 2, 1], False, 4.0, 'sep'),
    (1, 2, 1, False, 1.0, 'sep'),
    (2, 2, [1, 2], True, 1.5, '2d'),
    ([2, 1], 1, [1, -1], False, 1.0, '2d'),
    (1, [1, 3], [2, 1, 0, 3], True, 0.5, 'sep'),
    (3, 1, [-1, 2, 1, -2], False, 9.0, '2d'),
    ([1, 2], [2, 1], [0, 1, 2, 0], True, 2.0, 'sep'),
    (2, 3, 2, False, 1.0, '2d'),
]


@pytest.mark.parametrize('up,down,padding,flip_filter,gain,kind', UPFIRDN_CASES)
def test_upfirdn2d_matches_naive_loops(up, down, padding, flip_filter, gain, kind):
    x = torch.randn(1, 2, 5, 6, dtype=DT)
    if kind == 'sep':
        f = upfirdn2d.setup_filter([1, 3, 2, 1], separable=True).to(DT)
        assert f.ndim == 1
    else:
        # Non-symmetric, non-square taps catch flips and axis mix-ups.
        f = torch.rand(3, 2, dtype=DT) + 0.1
    y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter,
                            gain=gain, impl='ref')
    expect = _naive_upfirdn2d(x, f, _as_pair(up), _as_pair(down), _as_four(padding), flip_filter, gain)
    assert tuple(y.shape) == expect.shape
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-12, atol=1e-12)


def test_upfirdn2d_separable_equals_its_2d_outer_product():
    x = torch.randn(2, 3, 6, 5, dtype=DT)
    taps = [1, 3, 3, 1]
    f1 = upfirdn2d.setup_filter(taps, separable=True, gain=3.0).to(DT)
    f2 = upfirdn2d.setup_filter(taps, separable=False, gain=3.0).to(DT)
    kw = dict(up=2, down=[1, 2], padding=[2, 1, 1, 2], gain=0.5, impl='ref')
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f1, **kw), upfirdn2d.upfirdn2d(x, f2, **kw))


def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    assert f.sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    # 8 or more taps are kept separable by default; the 1-D filter sums to sqrt(gain).
    f = upfirdn2d.setup_filter([1] * 8, gain=4)
    assert f.ndim == 1 and f.sum().item() == pytest.approx(2.0)
    assert upfirdn2d.setup_filter([1, 2, 1], gain=4).sum().item() == pytest.approx(4.0)
    torch.testing.assert_close(upfirdn2d.setup_filter(None), torch.ones(1, 1))
    # Flipping and no normalization.
    f = upfirdn2d.setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    torch.testing.assert_close(f, torch.tensor([[4., 3], [2, 1]]))
    with pytest.raises(ValueError, match='1-D or 2-D'):
        upfirdn2d.setup_filter(np.ones([2, 2, 2]))
    with pytest.raises(ValueError, match='sum to zero'):
        upfirdn2d.setup_filter([1, -1])


def test_box_filter_gives_nearest_upsampling_and_average_pooling():
    # Pins the pixel alignment of the helpers to the established convention.
    x = torch.randn(1, 2, 4, 6, dtype=DT)
    box = upfirdn2d.setup_filter([1, 1]).to(DT)
    up = upfirdn2d.upsample2d(x, box, impl='ref')
    torch.testing.assert_close(up, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))
    down = upfirdn2d.downsample2d(x, box, impl='ref')
    torch.testing.assert_close(down, F.avg_pool2d(x, 2))


@pytest.mark.parametrize('taps', [[1], [1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1]])
@pytest.mark.parametrize('factor', [2, 3])
def test_helpers_output_sizes_and_dc_gain(taps, factor):
    f = upfirdn2d.setup_filter(taps).to(DT)
    x = torch.full([1, 1, 6, 6], 2.0, dtype=DT)
    up = upfirdn2d.upsample2d(x, f, up=factor, impl='ref')
    assert up.shape == (1, 1, 6 * factor, 6 * factor)
    down = upfirdn2d.downsample2d(x, f, down=factor, impl='ref')
    assert down.shape == (1, 1, 6 // factor, 6 // factor)
    same = upfirdn2d.filter2d(x, f, padding=[1, 0, 2, 0], impl='ref')
    assert same.shape == (1, 1, 8, 7)
    # Away from the zero-padded border a normalized filter keeps the constant level. The
    # upsampling gain up**2 makes up for the inserted zeros; the level is exactly constant
    # when every polyphase component of the taps has the same sum (e.g. [1, 3, 3, 1] for 2).
    m = len(taps)
    np.testing.assert_allclose(same[0, 0, 2 + m:-m, 1 + m:-m].numpy(), 2.0, rtol=1e-12)
    phase_sums = [sum(taps[r::factor]) for r in range(factor)]
    if max(phase_sums) == min(phase_sums):
        np.testing.assert_allclose(up[0, 0, m:-m, m:-m].numpy(), 2.0, rtol=1e-12)
    if 6 // factor > 2:
        np.testing.assert_allclose(down[0, 0, 1:-1, 1:-1].numpy(), 2.0, rtol=1e-12)


def test_upfirdn2d_cuda_impl_on_cpu_uses_reference():
    x = torch.randn(1, 2, 5, 5, dtype=DT)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(DT)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f, up=2, padding=1),
                               upfirdn2d.upfirdn2d(x, f, up=2, padding=1, impl='ref'), rtol=0, atol=0)


@pytest.mark.parametrize('kind', ['sep', '2d'])
def test_upfirdn2d_gradcheck_and_gradgradcheck(kind):
    x = torch.randn(1, 1, 3, 4, dtype=DT, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 2, 1], separable=(kind == 'sep')).to(DT)
    fns = [
        lambda x: upfirdn2d.upfirdn2d(x, f, up=2, down=[1, 2], padding=[1, 2, -1, 1], gain=2.0, impl='ref'),
        lambda x: upfirdn2d.upsample2d(x, f, flip_filter=True, impl='ref'),
        lambda x: upfirdn2d.downsample2d(x, f, padding=1, impl='ref'),
        lambda x: upfirdn2d.filter2d(x, f, impl='ref'),
    ]
    for fn in fns:
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_errors_name_the_problem():
    x = torch.randn(1, 1, 4, 4)
    f = upfirdn2d.setup_filter([1, 1])
    with pytest.raises(ValueError, match=r'x must be a 4-D tensor'):
        upfirdn2d.upfirdn2d(x[0], f)
    with pytest.raises(ValueError, match='padding must be'):
        upfirdn2d.upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match='up factors must be >= 1'):
        upfirdn2d.upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError, match='down must be an int or a pair'):
        upfirdn2d.upfirdn2d(x, f, down=1.5)
    with pytest.raises(ValueError, match='empty output'):
        upfirdn2d.upfirdn2d(x, f, padding=-3)
    with pytest.raises(ValueError, match='1-D or 2-D tensor'):
        upfirdn2d.upfirdn2d(x, torch.ones(1, 2, 2))

# ----------------------------------------------------------------------------
# conv2d_resample


def _corr(x, w, flip_weight):
    return F.conv2d(x, w if flip_weight else w.flip([2, 3]))


@pytest.mark.parametrize('flip_weight', [True, False])
@pytest.mark.parametrize('padding', [1, [0, 2], [2, 0, 1, 3]])
def test_conv2d_resample_up_equals_upsample_then_conv(flip_weight, padding):
    # The padding of conv2d_resample is that of the upsampled image: it matches upsample2d's.
    x = torch.randn(2, 3, 4, 5, dtype=DT)
    w = torch.randn(4, 3, 3, 3, dtype=DT)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(DT)
    y = conv2d_resample.conv2d_resample(x, w, f, up=2, padding=padding, flip_weight=flip_weight)
    expect = _corr(upfirdn2d.upsample2d(x, f, up=2, padding=padding, impl='ref'), w, flip_weight)
    torch.testing.assert_close(y, expect)


@pytest.mark.parametrize('flip_filter', [False, True])
def test_conv2d_resample_down_equals_pad_conv_then_filter_and_decimate(flip_filter):
    # Downsampling convention: all padding (the user's plus downsample2d's centring pads
    # a0, a1) is applied before the convolution; the filter then runs without padding.
    x = torch.randn(2, 3, 8, 6, dtype=DT)
    w = torch.randn(5, 3, 3, 3, dtype=DT)
    f = torch.rand(4, 4, dtype=DT)  # non-symmetric, so a flip would show
    fw, d = 4, 2
    a0, a1 = (fw - d + 1) // 2, (fw - d) // 2
    y = conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1, flip_filter=flip_filter)
    z = F.conv2d(F.pad(x, [1 + a0, 1 + a1, 1 + a0, 1 + a1]), w)
    expect = upfirdn2d.upfirdn2d(z, f, down=2, flip_filter=flip_filter, impl='ref')
    torch.testing.assert_close(y, expect)


@pytest.mark.parametrize('up,down', [(2, 1), (1, 2), (2, 2)])
def test_conv2d_resample_matches_unfused_layers_in_the_interior(up, down):
    # The StyleGAN2 layer as three separate steps: upsample2d -> conv2d(padding=1) ->
    # downsample2d. Only the border rows differ (there the fused op pads once, before the
    # convolution).
    x = torch.randn(1, 2, 8, 8, dtype=DT)
    w = torch.randn(3, 2, 3, 3, dtype=DT)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(DT)
    y = conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=1)
    z = upfirdn2d.upsample2d(x, f, up=up, impl='ref') if up > 1 else x
    z = F.conv2d(z, w, padding=1)
    if down > 1:
        z = upfirdn2d.downsample2d(z, f, down=down, impl='ref')
    assert y.shape == z.shape == (1, 3, 8 * up // down, 8 * up // down)
    torch.testing.assert_close(y[:, :, 2:-2, 2:-2], z[:, :, 2:-2, 2:-2])


CONV_CASES = [
    # up, down, kernel, padding, groups
    (1, 1, 3, 1, 1), (1, 1, 3, [0, 1, 2, 0], 1), (1, 1, 1, 0, 2),
    (2, 1, 3, 1, 1), (2, 1, 1, 0, 1), (2, 1, 3, [2, 0, -1, 1], 2), (2, 1, 2, 0, 1),
    (1, 2, 3, 1, 1), (1, 2, 1, 0, 1), (1, 2, 3, [0, 2, 1, 1], 2),
    (2, 2, 3, 1, 1), (2, 2, 1, [1, 0], 1), (3, 1, 3, 1, 1), (1, 3, 3, 2, 1),
]


@pytest.mark.parametrize('up,down,k,padding,groups', CONV_CASES)
@pytest.mark.parametrize('flip_weight,flip_filter', [(True, False), (False, True)])
def test_conv2d_resample_fast_paths_equal_definition(up, down, k, padding, groups, flip_weight, flip_filter):
    x = torch.randn(2, 4, 6, 6, dtype=DT)
    w = torch.randn(6, 4 // groups, k, k, dtype=DT)
    f = torch.rand(4, 3, dtype=DT) + 0.1  # non-square, non-symmetric
    kw = dict(f=f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight,
              flip_filter=flip_filter)
    y = conv2d_resample.conv2d_resample(x, w, **kw)
    expect = conv2d_resample.conv2d_resample_generic(x, w, **kw)
    assert y.shape == expect.shape
    torch.testing.assert_close(y, expect)


def test_conv2d_resample_shapes_and_plain_conv_semantics():
    x = torch.randn(2, 4, 8, 8, dtype=DT)
    w = torch.randn(5, 4, 3, 3, dtype=DT)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(DT)
    assert conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1).shape == (2, 5, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1).shape == (2, 5, 4, 4)
    assert conv2d_resample.conv2d_resample(x, w[:, :, :1, :1], f, down=2).shape == (2, 5, 4, 4)
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, padding=1), F.conv2d(x, w, padding=1))
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, padding=1, flip_weight=False),
                               F.conv2d(x, w.flip([2, 3]), padding=1))


@pytest.mark.parametrize('up,down', [(2, 1), (1, 2), (2, 2)])
def test_conv2d_resample_gradcheck_and_gradgradcheck(up, down):
    x = torch.randn(1, 2, 3, 3, dtype=DT, requires_grad=True)
    w = torch.randn(1, 2, 3, 3, dtype=DT, requires_grad=True)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).to(DT)
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_conv2d_resample_errors_name_the_problem():
    x = torch.randn(1, 4, 4, 4)
    with pytest.raises(ValueError, match=r'x has 4 channels, w has shape \(2, 3, 3, 3\)'):
        conv2d_resample.conv2d_resample(x, torch.randn(2, 3, 3, 3))
    with pytest.raises(ValueError, match='w must be a 4-D tensor'):
        conv2d_resample.conv2d_resample(x, torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match='up must be an int >= 1'):
        conv2d_resample.conv2d_resample(x, torch.randn(2, 4, 3, 3), up=0)

# ----------------------------------------------------------------------------
# fma


@pytest.mark.parametrize('shapes', [([2, 3, 4], [2, 3, 4], [2, 3, 4]), ([2, 1, 4], [3, 1], [4]),
                                    ([1], [2, 3], [2, 1])])
def test_fma_values_and_broadcast_gradients(shapes):
    a, b, c = (torch.randn(s, dtype=DT, requires_grad=True) for s in shapes)
    y = fma.fma(a, b, c)
    expect = a * b + c
    torch.testing.assert_close(y, expect)
    gy = torch.randn_like(expect)
    got = torch.autograd.grad(y, (a, b, c), gy)
    want = torch.autograd.grad(expect, (a, b, c), gy)
    for g, w, t in zip(got, want, (a, b, c)):
        assert g.shape == t.shape
        torch.testing.assert_close(g, w)
    assert torch.autograd.gradcheck(fma.fma, (a, b, c))
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))


def test_fma_broadcast_check_agrees_with_torch():
    # The cheap shape check against torch.broadcast_shapes on every triple of small shapes.
    shapes = [(), (1,), (3,), (2,), (1, 3), (2, 1), (2, 3), (3, 2), (4, 1, 3), (4, 2, 1), (1, 1, 1)]
    checked = 0
    for a in shapes:
        for b in shapes:
            for c in shapes:
                try:
                    torch.broadcast_shapes(a, b, c)
                    want = True
                except RuntimeError:
                    want = False
                assert fma._broadcastable(torch.Size(a), torch.Size(b), torch.Size(c)) == want, (a, b, c)
                checked += want
    assert 0 < checked < len(shapes) ** 3


def test_fma_errors():
    with pytest.raises(ValueError, match=r'do not broadcast'):
        fma.fma(torch.ones(2, 3), torch.ones(4), torch.ones(1))
    with pytest.raises(TypeError, match='b must be a torch.Tensor'):
        fma.fma(torch.ones(2), 2.0, torch.ones(2))

# ----------------------------------------------------------------------------
# grid_sample


def _naive_bilinear(img, grid):
    """Bilinear sampling with zero padding and align_corners=False from gathers; every op is
    an ordinary autograd op, so it is differentiable to any order on any torch version."""
    n, c, h, w = img.shape
    gx = ((grid[..., 0] + 1) * w - 1) / 2
    gy = ((grid[..., 1] + 1) * h - 1) / 2
    x0, y0 = gx.floor(), gy.floor()
    out = 0
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (gx - xi).abs()) * (1 - (gy - yi).abs())
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            idx = (yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)).long().reshape(n, 1, -1).expand(n, c, -1)
            vals = img.reshape(n, c, h * w).gather(2, idx).reshape(n, c, *grid.shape[1:3])
            out = out + vals * (weight * inside)[:, None]
    return out


def _random_grid(n, h, w):
    # Reaches a little outside [-1, 1] so the zero padding is exercised.
    return torch.rand(n, h, w, 2, dtype=DT) * 2.4 - 1.2


def test_grid_sample_forward_and_first_order_match_torch():
    x = torch.randn(2, 3, 5, 4, dtype=DT, requires_grad=True)
    grid = _random_grid(2, 3, 6).requires_grad_()
    y = grid_sample_gradfix.grid_sample(x, grid)
    expect = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    torch.testing.assert_close(y, expect)
    torch.testing.assert_close(y, _naive_bilinear(x, grid))
    gy = torch.randn_like(y)
    for got, want in zip(torch.autograd.grad(y, (x, grid), gy), torch.autograd.grad(expect, (x, grid), gy)):
        torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))


def test_grid_sample_gradgradcheck_wrt_input():
    x = torch.randn(1, 2, 4, 5, dtype=DT, requires_grad=True)
    grid = _random_grid(1, 3, 3)
    fn = lambda x: grid_sample_gradfix.grid_sample(x, grid)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), gen_non_contig_grad_outputs=True)


def test_grid_sample_input_gradient_is_differentiable_wrt_grid():
    x = torch.randn(1, 2, 4, 5, dtype=DT)
    gy = torch.randn(1, 2, 3, 3, dtype=DT)

    def input_grad(grid):
        leaf = x.clone().requires_grad_()
        return torch.autograd.grad(grid_sample_gradfix.grid_sample(leaf, grid), leaf, gy, create_graph=True)[0]

    assert torch.autograd.gradcheck(input_grad, (_random_grid(1, 3, 3).requires_grad_(),))


def test_grid_sample_r1_through_augmentation_matches_naive_sampler():
    # R1 as in training: grad of D(aug(x)) wrt x, squared, then differentiated wrt D's weights.
    x = torch.randn(2, 1, 6, 6, dtype=DT)
    grid = _random_grid(2, 6, 6)
    w = torch.randn(3, 1, 3, 3, dtype=DT, requires_grad=True)

    def r1_grad(sampler):
        leaf = x.clone().requires_grad_()
        logits = F.conv2d(torch.tanh(sampler(leaf, grid)), w).square().sum()
        g, = torch.autograd.grad(logits, leaf, create_graph=True)
        return torch.autograd.grad(g.square().sum(), w)[0]

    got = r1_grad(grid_sample_gradfix.grid_sample)
    want = r1_grad(_naive_bilinear)
    assert got.abs().max() > 1e-3
    torch.testing.assert_close(got, want)


def test_grid_sample_second_order_through_grid_raises_clearly():
    x = torch.randn(1, 1, 3, 3, dtype=DT, requires_grad=True)
    grid = _random_grid(1, 2, 2).requires_grad_()
    y = grid_sample_gradfix.grid_sample(x, grid)
    _, g_grid = torch.autograd.grad(y.sum(), (x, grid), create_graph=True)
    with pytest.raises(NotImplementedError, match='second-order gradients through the sampling grid'):
        torch.autograd.grad(g_grid.square().sum(), x)


def test_grid_sample_errors():
    with pytest.raises(ValueError, match=r'grid must be a tensor \[N, H_out, W_out, 2\]'):
        grid_sample_gradfix.grid_sample(torch.randn(1, 1, 3, 3), torch.randn(1, 2, 2, 3))
    with pytest.raises(ValueError, match='batch size 2 but grid has 1'):
        grid_sample_gradfix.grid_sample(torch.randn(2, 1, 3, 3), torch.randn(1, 2, 2, 2))
