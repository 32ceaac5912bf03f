"""The depthwise filtering of the upfirdn2d reference against plain grouped convolution."""

import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d


def test_depthwise_matches_grouped_conv_to_second_order():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([2, 5, 9, 8], generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand([5, 1, 4, 3], generator=gen, dtype=torch.float64)
    dy = torch.randn([2, 5, 6, 6], generator=gen, dtype=torch.float64)
    outs = []
    for fn in (lambda t: upfirdn2d._depthwise(t, w, 5), lambda t: F.conv2d(t, w, groups=5)):
        # A non-linearity after the filter, as in D: the gradient then depends on x (R1's case).
        y = fn(x)
        g, = torch.autograd.grad((torch.tanh(y) * dy).sum(), [x], create_graph=True)
        gg, = torch.autograd.grad((g.square() * torch.arange(g.numel(), dtype=g.dtype).view_as(g)).sum(), [x])
        outs.append((y, g, gg))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert outs[0][2].abs().sum() > 0
    assert torch.autograd.gradcheck(lambda t: upfirdn2d._depthwise(t, w, 5), [x])
    assert torch.autograd.gradgradcheck(lambda t: torch.tanh(upfirdn2d._depthwise(t, w, 5)), [x])


def test_float32_forward_is_bit_identical():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([4, 8, 16, 16], generator=gen)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    w = f[None, None].expand(8, 1, 4, 4)
    assert torch.equal(upfirdn2d._depthwise(x, w, 8), F.conv2d(x, w, groups=8))


def _explicit(x, f, down, pads, flip_filter=False, gain=1.0):
    """The definition: pad (negative crops), filter every pixel, keep every down-th."""
    c = x.shape[1]
    w = f * gain
    if not flip_filter:
        w = w.flip([0, 1])
    y = F.conv2d(F.pad(x, pads), w[None, None].expand(c, 1, *f.shape), groups=c)
    return y[:, :, ::down[1], ::down[0]]


# [padx0, padx1, pady0, pady1] and [downx, downy]: within the fast-path limit, beyond it
# (split between the convolution and F.pad), asymmetric, negative (crop), no padding.
CASES = [([1, 1, 1, 1], [2, 2]), ([2, 2, 2, 2], [1, 1]), ([2, 2, 2, 2], [2, 2]), ([3, 1, 0, 2], [2, 1]),
         ([-1, 2, 1, -1], [1, 2]), ([0, 0, 0, 0], [2, 2]), ([1, 1, 1, 1], [1, 1]), ([2, 1, 2, 1], [2, 2])]


def test_strided_padded_filtering_is_the_definition_bit_for_bit():
    # The reference folds padding (up to the fast-path limit) and decimation into one strided
    # convolution; the forward must keep the bits of pad -> filter -> keep every down-th.
    gen = torch.Generator().manual_seed(2)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for size in ((4, 16, 16, 16), (3, 5, 11, 9), (2, 1, 8, 8)):
        x = torch.randn(size, generator=gen)
        for pads, down in CASES:
            got = upfirdn2d.upfirdn2d(x, f, down=down, padding=pads, impl='ref')
            assert torch.equal(got, _explicit(x, f, down, pads)), (size, pads, down)


def test_strided_padded_filtering_gradients_to_second_order():
    # Float64 gradients and R1-style second-order gradients against autograd of the
    # definition (where PyTorch differentiates pad, the grouped conv and the slice itself).
    gen = torch.Generator().manual_seed(3)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    for pads, down in CASES:
        x = torch.randn([2, 3, 10, 9], generator=gen, dtype=torch.float64, requires_grad=True)
        outs = []
        for fn in (lambda t: upfirdn2d.upfirdn2d(t, f, down=down, padding=pads, gain=2, impl='ref'),
                   lambda t: _explicit(t, f, down, pads, gain=2)):
            y = fn(x)
            dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
            g, = torch.autograd.grad((torch.tanh(y) * dy).sum(), [x], create_graph=True)
            gg, = torch.autograd.grad((g.square() * torch.arange(g.numel(), dtype=g.dtype).view_as(g)).sum(), [x])
            outs.append((y, g, gg))
        for a, b in zip(*outs):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-12, atol=1e-12), (pads, down)
        assert outs[0][2].abs().sum() > 0
    x = torch.randn([1, 2, 7, 6], generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(
        lambda t: torch.tanh(upfirdn2d.upfirdn2d(t, f, down=2, padding=[2, 2, 1, 1], impl='ref')), [x])


def test_filter_float32_gradient_is_the_generic_one_bit_for_bit():
    # First-order float32 gradient of the strided, padded filter against PyTorch's own
    # backward of pad -> grouped conv -> slice (what the established code differentiates).
    gen = torch.Generator().manual_seed(5)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for pads, down in CASES:
        x = torch.randn([4, 16, 16, 16], generator=gen, requires_grad=True)
        y1 = upfirdn2d.upfirdn2d(x, f, down=down, padding=pads, impl='ref')
        dy = torch.randn(y1.shape, generator=gen)
        g1, = torch.autograd.grad(y1, [x], dy)
        g2, = torch.autograd.grad(_explicit(x, f, down, pads), [x], dy)
        assert torch.equal(g1, g2), (pads, down)


def _canvas_definition(x, f, up, pads, gain):
    """Zero insertion, pad (negative crops), filter every pixel: the upfirdn2d definition."""
    (upx, upy), (px0, px1, py0, py1) = up, pads
    n, c, h, w = x.shape
    canvas = x.new_zeros([n, c, h * upy, w * upx])
    canvas[:, :, ::upy, ::upx] = x
    f2 = (f if f.ndim == 2 else f[:, None] * f[None, :]) * gain
    weight = f2.flip([0, 1])[None, None].repeat(c, 1, 1, 1).to(x.dtype)
    return F.conv2d(F.pad(canvas, [px0, px1, py0, py1]), weight, groups=c)


UPSAMPLE_CASES = [  # (filter taps, separable, up [x, y], pads [x0, x1, y0, y1])
    ([1, 3, 3, 1], False, [2, 2], [2, 1, 2, 1]),  # upsample2d's pads for G's skip images
    ([1, 3, 3, 1], False, [2, 2], [0, 0, 3, 2]),
    ([1, 3, 3, 1], False, [4, 2], [1, 3, 1, 2]),
    ([1, 2], False, [2, 1], [1, 1, 0, 0]),
    (list(range(1, 13)), True, [2, 2], [6, 5, 6, 5]),  # a 12-tap separable filter (ADA's wavelets)
    ([1, 3, 3, 1], False, [2, 2], [4, 1, 2, 1]),  # leading pad beyond taps - 1: the canvas path
    ([1, 3, 3, 1], False, [2, 2], [-1, 1, 2, -1]),  # a crop: the canvas path
]


def test_upsampling_without_canvas_matches_the_definition_to_second_order():
    gen = torch.Generator().manual_seed(3)
    for taps, separable, up, pads in UPSAMPLE_CASES:
        f = upfirdn2d.setup_filter(taps, separable=separable).double()
        assert f.ndim == (1 if separable else 2)
        x = torch.randn([2, 3, 5, 6], generator=gen, dtype=torch.float64, requires_grad=True)
        got = upfirdn2d.upfirdn2d(x, f, up=up, padding=pads, gain=4, impl='ref')
        want = _canvas_definition(x, f, up, pads, gain=4)
        assert got.shape == want.shape, (taps, up, pads)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-12), (taps, up, pads)
        dy = torch.randn(got.shape, generator=gen, dtype=torch.float64)
        g1, = torch.autograd.grad((got * dy).sum(), [x])
        g2, = torch.autograd.grad((want * dy).sum(), [x])
        assert torch.allclose(g1, g2, rtol=1e-12, atol=1e-12), (taps, up, pads)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    assert torch.autograd.gradgradcheck(
        lambda t: torch.tanh(upfirdn2d.upfirdn2d(t, f, up=2, padding=[2, 1, 2, 1], impl='ref')),
        [torch.randn([1, 2, 4, 4], generator=gen, dtype=torch.float64, requires_grad=True)])


def test_canvas_upsampling_context_gives_the_established_bits():
    # float32: the transposed convolution differs from the canvas by rounding only; inside the
    # context the reference is the canvas computation itself.
    gen = torch.Generator().manual_seed(4)
    x = torch.randn([8, 3, 16, 16], generator=gen)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    fast = upfirdn2d.upsample2d(x, f, impl='ref')
    with upfirdn2d.canvas_upsampling():
        exact = upfirdn2d.upsample2d(x, f, impl='ref')
    assert not upfirdn2d._canvas_upsampling
    assert torch.equal(exact, _canvas_definition(x, f, [2, 2], [2, 1, 2, 1], gain=4))
    assert (fast - exact).abs().max() < 1e-5 * exact.abs().max()
