"""Upsample, FIR-filter and downsample 2-D images in one op (upfirdn2d), plus helpers.

The op is the resampling primitive of StyleGAN2: upsampling inserts zeros between pixels,
the FIR filter interpolates (and low-passes), downsampling keeps every n-th pixel. The
conventions (zero insertion after each pixel, true convolution, padding of the upsampled
image, the output sizes of the helpers) are those of the established StyleGAN2 code, so that
published network files give the same images.
"""

import contextlib
from typing import Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import custom_ops

from . import upfirdn2d_cuda

IntOrPair = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]

# ----------------------------------------------------------------------------
# Argument parsing shared with conv2d_resample.


def _parse_scaling(scaling: IntOrPair, name: str = 'scaling') -> Tuple[int, int]:
    """Return (sx, sy) from an int or an [x, y] pair; every factor must be an int >= 1."""
    if isinstance(scaling, (int, np.integer)):
        scaling = [scaling, scaling]
    if (not isinstance(scaling, (list, tuple)) or len(scaling) != 2
            or not all(isinstance(s, (int, np.integer)) for s in scaling)):
        raise ValueError(f'upfirdn2d: {name} must be an int or a pair of ints, got {scaling!r}')
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f'upfirdn2d: {name} factors must be >= 1, got {[sx, sy]}')
    return sx, sy


def _parse_padding(padding: Padding) -> Tuple[int, int, int, int]:
    """Return (padx0, padx1, pady0, pady1) from an int, an [x, y] pair or four ints.

    Negative values crop.
    """
    if isinstance(padding, (int, np.integer)):
        padding = [padding, padding]
    if (not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4)
            or not all(isinstance(p, (int, np.integer)) for p in padding)):
        raise ValueError('upfirdn2d: padding must be an int, [x, y] or [x0, x1, y0, y1] of ints, '
                         f'got {padding!r}')
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    return tuple(int(p) for p in padding)


def _get_filter_size(f: Optional[torch.Tensor]) -> Tuple[int, int]:
    """Return (width, height) of a filter; None stands for the 1x1 identity filter."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError('upfirdn2d: the filter must be a 1-D or 2-D tensor (see setup_filter), got '
                         f'{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}')
    fw = f.shape[-1]
    fh = f.shape[0]
    if fw < 1 or fh < 1:
        raise ValueError(f'upfirdn2d: the filter must not be empty, got shape {tuple(f.shape)}')
    return int(fw), int(fh)


def _upsample_pads(fw: int, fh: int, upx: int, upy: int) -> Tuple[int, int, int, int]:
    """Pads that centre the filter on the upsampled grid; per axis they sum to f - 1."""
    return (fw + upx - 1) // 2, (fw - upx) // 2, (fh + upy - 1) // 2, (fh - upy) // 2


def _downsample_pads(fw: int, fh: int, downx: int, downy: int) -> Tuple[int, int, int, int]:
    """Pads before decimation; per axis they sum to f - down, so the output is exactly 1/down."""
    return (fw - downx + 1) // 2, (fw - downx) // 2, (fh - downy + 1) // 2, (fh - downy) // 2


def _add_pads(a: Sequence[int], b: Sequence[int]) -> Tuple[int, int, int, int]:
    return tuple(p + q for p, q in zip(a, b))

# ----------------------------------------------------------------------------


def setup_filter(f, device: torch.device = torch.device('cpu'), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1,
                 separable: Optional[bool] = None) -> torch.Tensor:
    """Turn filter taps into the float32 tensor that upfirdn2d expects.

    Args:
        f: filter taps: None (identity), a number, a 1-D or 2-D sequence/array/tensor.
        device: device of the result.
        normalize: scale the filter so that its taps sum to 1 (unit DC gain).
        flip_filter: flip the filter (turns true convolution into correlation and back).
        gain: overall gain of the 2-D filter; a separable (1-D) filter is scaled by
            sqrt(gain) since it is applied once along each axis.
        separable: keep a 1-D filter 1-D (applied along x and then y). None chooses
            separable for 1-D filters with at least 8 taps: for long filters two 1-D passes
            are cheaper than one 2-D pass, for short ones a single pass is.

    Returns:
        A float32 tensor on `device`: 1-D for separable filters, 2-D otherwise.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f.reshape(1)
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f'setup_filter: filter taps must be non-empty and 1-D or 2-D, got shape {tuple(f.shape)}')
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if separable and f.ndim != 1:
        raise ValueError('setup_filter: separable=True needs 1-D filter taps')
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)

    if normalize:
        total = f.sum()
        if total == 0:
            raise ValueError('setup_filter: cannot normalize a filter whose taps sum to zero')
        # A separable filter is applied twice, so its own sum must be 1 for a 2-D DC gain of 1.
        f = f / total
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)

# ----------------------------------------------------------------------------


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntOrPair = 1, down: IntOrPair = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1,
              impl: str = 'cuda') -> torch.Tensor:
    """Upsample by zero insertion, pad, convolve with a FIR filter, downsample.

    In order: each pixel is followed by `up - 1` zeros along each axis, the result is padded
    with zeros (negative padding crops), convolved with `f` (a true convolution, i.e. with the
    flipped filter, unless `flip_filter`), every `down`-th pixel is kept and the result is
    multiplied by `gain`. The output is
    `((H * upy + pady0 + pady1 - fh) // downy + 1, (W * upx + padx0 + padx1 - fw) // downx + 1)`.

    Args:
        x: input images [N, C, H, W].
        f: filter from `setup_filter`: 2-D [fh, fw], or 1-D [fw] applied along both axes
            (separable); None is the identity.
        up: upsampling factor, int or [x, y].
        down: downsampling factor, int or [x, y].
        padding: int, [x, y] or [x0, x1, y0, y1], relative to the upsampled image.
        flip_filter: use correlation instead of convolution.
        gain: overall gain of the 2-D operation (a 1-D filter contributes sqrt(gain) per axis).
        impl: 'cuda' to use the CUDA kernel for CUDA tensors when available, 'ref' to force
            the reference.

    Returns:
        Tensor [N, C, H_out, W_out] with the dtype of `x`.
    """
    if impl not in ('cuda', 'ref'):
        raise ValueError(f"upfirdn2d: impl must be 'cuda' or 'ref', got {impl!r}")
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('upfirdn2d: x must be a 4-D tensor [N, C, H, W], got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = _get_filter_size(f)
    upx, upy = _parse_scaling(up, 'up')
    downx, downy = _parse_scaling(down, 'down')
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    out_w = (x.shape[3] * upx + padx0 + padx1 - fw) // downx + 1
    out_h = (x.shape[2] * upy + pady0 + pady1 - fh) // downy + 1
    if out_w < 1 or out_h < 1:
        raise ValueError(f'upfirdn2d: input {tuple(x.shape)} with up={[upx, upy]}, down={[downx, downy]}, '
                         f'padding={[padx0, padx1, pady0, pady1]} and a {fh}x{fw} filter gives an '
                         'empty output')

    # The extension is built on first use; when it cannot be, available() is False.
    if impl == 'cuda' and _use_kernel(x.device):
        return upfirdn2d_cuda.upfirdn2d_cuda(x, f, upx, upy, downx, downy, padx0, padx1,
                                             pady0, pady1, flip_filter, float(gain))
    return _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1,
                          flip_filter, gain)


def _use_kernel(device: torch.device) -> bool:
    """The kernel runs only on CUDA, when it built, and after it passed its self-check."""
    return device.type == 'cuda' and upfirdn2d_cuda.available() and self_check.passed(device)


def _check_kernel(device: torch.device) -> dict:
    """Relative errors of the kernel against the reference on small random inputs (outputs and
    gradients; the kernel's gradient is again the kernel, in the transposed configuration), for
    upsampling, downsampling and plain filtering."""
    gen = torch.Generator().manual_seed(321)
    errors = {}
    f = setup_filter([1, 3, 3, 1]).to(device)
    cases = {'up2': (2, 1, (2, 1, 2, 1)), 'down2': (1, 2, (1, 1, 1, 1)), 'filter': (1, 1, (2, 1, 1, 2))}
    for name, (up, down, (px0, px1, py0, py1)) in cases.items():
        x0 = torch.randn([2, 3, 7, 9], generator=gen).to(device)
        outs = []
        for kernel in (True, False):
            x = x0.clone().requires_grad_(True)
            if kernel:
                y = upfirdn2d_cuda.upfirdn2d_cuda(x, f, up, up, down, down, px0, px1, py0, py1, False, 1.0)
            else:
                y = _upfirdn2d_ref(x, f, up, up, down, down, px0, px1, py0, py1, False, 1.0)
            dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(device)
            dx, = torch.autograd.grad((y * dy).sum(), [x])
            outs.append((y, dx))
        for part, got, want in zip(('forward', 'grad x'), *outs):
            errors[f'{name} {part}'] = custom_ops.relative_error(got, want)
    return errors


def _depthwise(x: torch.Tensor, weight: torch.Tensor, groups: int, stride: Tuple[int, int] = (1, 1),
               padding: Tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Depthwise convolution with a constant filter, zero `padding` and `stride`,
    differentiable to any order.

    The gradient of the filtering is the transposed filtering and vice versa, so both are
    written as autograd functions of each other: a double backward (R1 through the resampling
    filters of D) then stays two grouped convolutions, instead of PyTorch's generic
    convolution double backward, which splits a grouped convolution into one convolution per
    group (hundreds of small ones per layer). Same forward; gradients equal up to rounding.
    """
    if weight.requires_grad:
        return F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)
    return _Depthwise.apply(x, weight, groups, stride, padding)


class _Depthwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, groups, stride, padding):  # pylint: disable=arguments-differ
        ctx.save_for_backward(weight)
        ctx.conf = (groups, stride, padding)
        y = F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)
        # The transposed convolution must give back x's size: with a stride, several input
        # sizes map to one output size; output_padding picks x's.
        ctx.output_padding = tuple(x.shape[2 + i] - ((y.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                                     + weight.shape[2 + i]) for i in range(2))
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        weight, = ctx.saved_tensors
        dx = _DepthwiseTransposed.apply(dy, weight, *ctx.conf, ctx.output_padding) \
            if ctx.needs_input_grad[0] else None
        return dx, None, None, None, None


class _DepthwiseTransposed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, weight, groups, stride, padding, output_padding):  # pylint: disable=arguments-differ
        ctx.save_for_backward(weight)
        ctx.conf = (groups, stride, padding)
        return F.conv_transpose2d(dy, weight, stride=stride, padding=padding, output_padding=output_padding,
                                  groups=groups)

    @staticmethod
    def backward(ctx, ddx):  # pylint: disable=arguments-differ
        weight, = ctx.saved_tensors
        ddy = _Depthwise.apply(ddx, weight, *ctx.conf) if ctx.needs_input_grad[0] else None
        return ddy, None, None, None, None, None


def _split_padding(pad0: int, pad1: int, taps: int) -> Tuple[int, int, int]:
    """(padding done by the convolution, explicit pads before, after) for one axis.

    A convolution pads both sides alike; oneDNN's depthwise kernels stay on their fast path
    up to (taps - 1) // 2, so at most that much moves into the convolution and the rest (or a
    crop, for negative pads) is done with F.pad.
    """
    inner = max(min(pad0, pad1, (taps - 1) // 2), 0)
    return inner, pad0 - inner, pad1 - inner


_canvas_upsampling = False


@contextlib.contextmanager
def canvas_upsampling() -> Iterator[None]:
    """The reference upsamples through a zero-filled canvas, as the established code does,
    which gives its bits (the strided transposed convolution used otherwise sums the same
    products in another order: equal up to float rounding)."""
    global _canvas_upsampling  # pylint: disable=global-statement
    prev, _canvas_upsampling = _canvas_upsampling, True
    try:
        yield
    finally:
        _canvas_upsampling = prev


def _per_channel(taps: torch.Tensor, c: int) -> torch.Tensor:
    """[c, 1, kh, kw] depthwise weight from [kh, kw] taps. Contiguous: with an expanded
    (stride-0) weight oneDNN reorders it on every call, up to a third of the filtering time
    at small sizes."""
    return taps[None, None].expand(c, 1, *taps.shape).contiguous()


def _upsample_transposed(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1):
    """Upsampling and filtering as one strided transposed convolution, or None.

    Zero insertion followed by a convolution is what a transposed convolution with stride
    `up` computes, without the canvas: it skips the zero products and the up^2 - 1 zero
    pixels per input pixel (2-3x faster forward and backward on the CPU). It needs no
    decimation and pads the transposed convolution can express: the leading pad at most
    taps - 1, and the trailing one within up - 1 of it. `f` holds the correlation taps, so
    the transposed convolution gets them flipped.
    """
    if _canvas_upsampling or downx != 1 or downy != 1 or f.requires_grad:
        return None
    taps_y, taps_x = (f.shape[0], f.shape[1]) if f.ndim == 2 else (f.shape[0], f.shape[0])
    conf = []
    for up, pad0, pad1, taps in ((upy, pady0, pady1, taps_y), (upx, padx0, padx1, taps_x)):
        extra = up - 1 + pad1 - pad0  # output_padding: canvas columns after the last pixel
        if not (0 <= pad0 <= taps - 1 and 0 <= extra < up):
            return None
        conf.append((up, taps - 1 - pad0, extra))
    (sy, py, oy), (sx, px, ox) = conf
    c = x.shape[1]
    if f.ndim == 2:
        return _DepthwiseTransposed.apply(x, _per_channel(f.flip([0, 1]), c), c, (sy, sx), (py, px), (oy, ox))
    w = f.flip([0])
    x = _DepthwiseTransposed.apply(x, _per_channel(w[None, :], c), c, (1, sx), (0, px), (0, ox))
    return _DepthwiseTransposed.apply(x, _per_channel(w[:, None], c), c, (sy, 1), (py, 0), (oy, 0))


def _upfirdn2d_ref(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip_filter, gain):
    """Reference path with parsed arguments; only differentiable PyTorch ops."""
    n, c, h, w = x.shape

    # Filtering: conv2d correlates, so flip the taps for a true convolution. Gain is folded
    # into the taps; a 1-D filter is used twice, hence sqrt(gain) per pass.
    f = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if upx > 1 or upy > 1:
        y = _upsample_transposed(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1)
        if y is not None:
            return y
        # Otherwise zero insertion: pixel (i, j) lands at (i * upy, j * upx) of an all-zero
        # canvas, so every pixel is followed by up - 1 zeros (the slice assignment is
        # differentiable).
        canvas = x.new_zeros([n, c, h * upy, w * upx])
        canvas[:, :, ::upy, ::upx] = x
        x = canvas

    if f.ndim == 2:
        # One convolution that also pads (as far as its fast path allows) and decimates
        # (stride): the same bits as padding, filtering every pixel and keeping every
        # down-th, without the padded copy and the filtered pixels that are thrown away.
        (ix, px0, px1), (iy, py0, py1) = _split_padding(padx0, padx1, f.shape[1]), \
            _split_padding(pady0, pady1, f.shape[0])
        if any([px0, px1, py0, py1]):
            x = F.pad(x, [px0, px1, py0, py1])  # constant-mode F.pad crops where a pad is negative
        return _depthwise(x, _per_channel(f, c), c, stride=(downy, downx), padding=(iy, ix))

    # Separable filter: pad, one pass per axis, decimate.
    if any([padx0, padx1, pady0, pady1]):
        x = F.pad(x, [padx0, padx1, pady0, pady1])
    x = _depthwise(x, _per_channel(f[None, :], c), c)
    x = _depthwise(x, _per_channel(f[:, None], c), c)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x

# ----------------------------------------------------------------------------
# Helpers with the padding worked out so that the output has the natural size.


def filter2d(x: torch.Tensor, f: Optional[torch.Tensor], padding: Padding = 0,
             flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Filter images with a FIR filter, keeping their size (plus any extra `padding`).

    Args:
        x: images [N, C, H, W].
        f: filter from `setup_filter` (None: identity).
        padding: extra padding, int, [x, y] or [x0, x1, y0, y1].
        flip_filter: use correlation instead of convolution.
        gain: overall gain.
        impl: 'cuda' or 'ref', as for `upfirdn2d`.

    Returns:
        Tensor [N, C, H + pady0 + pady1, W + padx0 + padx1].
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    # Split the filter's support around the centre; the larger half goes before for even taps.
    pad = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntOrPair = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Upsample images by an integer factor with a FIR interpolation filter.

    The gain is multiplied by upx * upy, which makes up for the inserted zeros so that a
    normalized filter keeps the DC level.

    Args:
        x: images [N, C, H, W].
        f: filter from `setup_filter` (None: identity, i.e. bare zero insertion).
        up: factor, int or [x, y].
        padding: extra padding of the upsampled image, int, [x, y] or [x0, x1, y0, y1].
        flip_filter: use correlation instead of convolution.
        gain: overall gain on top of the DC correction.
        impl: 'cuda' or 'ref', as for `upfirdn2d`.

    Returns:
        Tensor [N, C, H * upy + pady0 + pady1, W * upx + padx0 + padx1].
    """
    upx, upy = _parse_scaling(up, 'up')
    fw, fh = _get_filter_size(f)
    pad = _add_pads(_parse_padding(padding), _upsample_pads(fw, fh, upx, upy))
    return upfirdn2d(x, f, up=[upx, upy], padding=pad, flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)


def downsample2d(x: torch.Tensor, f: Optional[torch.Tensor], down: IntOrPair = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    """Downsample images by an integer factor after FIR low-pass filtering.

    Args:
        x: images [N, C, H, W]; H and W should be multiples of the factor.
        f: filter from `setup_filter` (None: plain decimation).
        down: factor, int or [x, y].
        padding: extra padding of the input, int, [x, y] or [x0, x1, y0, y1].
        flip_filter: use correlation instead of convolution.
        gain: overall gain.
        impl: 'cuda' or 'ref', as for `upfirdn2d`.

    Returns:
        Tensor [N, C, (H + pady0 + pady1) // downy, (W + padx0 + padx1) // downx].
    """
    downx, downy = _parse_scaling(down, 'down')
    fw, fh = _get_filter_size(f)
    pad = _add_pads(_parse_padding(padding), _downsample_pads(fw, fh, downx, downy))
    return upfirdn2d(x, f, down=[downx, downy], padding=pad, flip_filter=flip_filter,
                     gain=gain, impl=impl)


# The kernel is compared with the reference the first time it would be used in a process.
self_check = custom_ops.KernelSelfCheck('upfirdn2d', _check_kernel)
