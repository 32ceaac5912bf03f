"""DiffAugment: each policy operation exactly as specified, order, gradients, R1 through it."""

import itertools

import pytest
import torch

from training.augment import diffaugment
from training.augment.diffaugment import DiffAugment


def test_color_is_brightness_then_saturation_then_contrast():
    x = torch.rand(5, 3, 8, 8) * 2 - 1
    torch.manual_seed(1)
    out = DiffAugment('color')(x)
    # The same draws, applied by hand in the specified order.
    torch.manual_seed(1)
    b = torch.rand(5, 1, 1, 1) - 0.5
    y = x + b
    s = torch.rand(5, 1, 1, 1) * 2
    m = y.mean(dim=1, keepdim=True)
    y = (y - m) * s + m
    c = torch.rand(5, 1, 1, 1) + 0.5
    m = y.mean(dim=[1, 2, 3], keepdim=True)
    y = (y - m) * c + m
    assert torch.allclose(out, y, atol=1e-6)


def test_color_parameter_ranges():
    torch.manual_seed(2)
    n = 4000
    # Constant grey images: saturation and contrast act on deviations (zero), so only the
    # brightness offset remains: U(-0.5, 0.5).
    offset = (diffaugment.color(torch.zeros(n, 3, 2, 2)))[:, 0, 0, 0]
    assert float(offset.min()) >= -0.5 and float(offset.max()) < 0.5
    assert abs(float(offset.mean())) < 0.02 and abs(float(offset.std()) - (1 / 12) ** 0.5) < 0.01
    # Pure chroma at zero mean: brightness moves the mean, saturation scales the chroma by
    # U(0, 2), contrast scales deviations from the image mean by U(0.5, 1.5).
    chroma = torch.tensor([1.0, -1.0, 0.0]).reshape(1, 3, 1, 1).repeat(n, 1, 2, 2)
    y = diffaugment.color(chroma)
    scale = (y[:, 0] - y[:, 1]).mean(dim=[1, 2]) / 2     # = saturation * contrast
    assert float(scale.min()) >= 0 and float(scale.max()) < 3.0
    assert abs(float(scale.mean()) - 1.0) < 0.03           # E[s] E[c] = 1 * 1


def test_translation_range_zero_fill_and_coverage():
    torch.manual_seed(3)
    n, res = 2000, 16
    x = (torch.arange(res * res, dtype=torch.float32) + 1).reshape(1, 1, res, res).repeat(n, 2, 1, 1)
    y = DiffAugment('translation')(x)
    r = int(res / 8 + 0.5)
    seen = set()
    for i in range(n):
        for dy, dx in itertools.product(range(-r, r + 1), repeat=2):
            shifted = torch.zeros(2, res, res)
            ys, xs = slice(max(dy, 0), res + min(dy, 0)), slice(max(dx, 0), res + min(dx, 0))
            shifted[:, ys, xs] = x[i][:, slice(max(-dy, 0), res + min(-dy, 0)), slice(max(-dx, 0), res + min(-dx, 0))]
            if torch.equal(y[i], shifted):
                seen.add((dy, dx))
                break
        else:
            pytest.fail(f'sample {i} is not an integer shift within +-{r} with zero fill')
    assert len(seen) == (2 * r + 1) ** 2  # every shift in the range occurs


def test_cutout_square_size_clipping_and_centre():
    torch.manual_seed(4)
    n, res = 3000, 16
    y = DiffAugment('cutout')(torch.ones(n, 3, res, res))
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])  # shared across channels
    zero = y[:, 0] == 0
    rows, cols = zero.any(dim=2), zero.any(dim=1)
    heights, widths = rows.sum(dim=1), cols.sum(dim=1)
    # The zeroed region is exactly the rectangle rows x cols, side res / 2 where not clipped.
    assert torch.equal(zero, rows[:, :, None] & cols[:, None, :])
    assert int(heights.max()) == res // 2 and int(widths.max()) == res // 2
    assert int(heights.min()) == res // 4 and int(widths.min()) == res // 4   # centre on the border
    # Unclipped squares are the most common (centres in [4, 12] of [0, 16]).
    full = ((heights == res // 2) & (widths == res // 2)).double().mean()
    assert abs(float(full) - (9 / 17) ** 2) < 0.04
    # The centre c is uniform over 0..res: rows [c - res/4, c + res/4) clipped to the image,
    # so c = first row + res/4, or height - res/4 where the square hangs over the top.
    first = rows.float().argmax(dim=1)
    centres = torch.where(first > 0, first + res // 4, heights - res // 4)
    counts = torch.bincount(centres, minlength=res + 1)
    assert len(counts) == res + 1
    expected = n / (res + 1)
    assert float((counts - expected).abs().max()) < 4 * expected ** 0.5


def test_policy_order_parsing_and_errors():
    assert diffaugment.parse_policy('color, translation,cutout') == ['color', 'translation', 'cutout']
    assert diffaugment.parse_policy('') == []
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(DiffAugment('')(x), x)
    with pytest.raises(ValueError, match=r"unknown operation\(s\) flip"):
        DiffAugment('color,flip')
    # Operations apply in the listed order.
    torch.manual_seed(5)
    a = DiffAugment('translation,cutout')(x)
    torch.manual_seed(5)
    b = diffaugment.cutout(diffaugment.translation(x))
    assert torch.equal(a, b)


def test_default_policy_shapes_dtype_and_gradients():
    aug = DiffAugment()
    assert aug.ops == ['color', 'translation', 'cutout'] and aug.name == 'diffaug'
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(4, 3, 16, 16, dtype=dtype, requires_grad=True)
        y = aug(x)
        assert y.shape == x.shape and y.dtype == dtype
        (y * torch.randn_like(y)).sum().backward()
        assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_r1_through_diffaugment_wrt_unaugmented_reals():
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Softplus(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 1))
    reals = torch.randn(4, 3, 8, 8).requires_grad_(True)
    logits = D(DiffAugment()(reals))
    (grad,) = torch.autograd.grad(logits.sum(), [reals], create_graph=True)
    grad.square().sum(dim=[1, 2, 3]).mean().backward()
    assert torch.isfinite(D[0].weight.grad).all() and float(D[0].weight.grad.abs().sum()) > 0
    # Cut-out pixels receive no gradient: they do not reach D.
    torch.manual_seed(6)
    reals = torch.randn(4, 3, 8, 8).requires_grad_(True)
    out = DiffAugment('cutout')(reals)
    out.sum().backward()
    assert torch.equal(reals.grad == 0, out == 0)
