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
