"""2-D convolution fused with FIR upsampling and downsampling.

`conv2d_resample` computes, as one linear operator,

    upfirdn2d(x, f, up, padding=P, gain=up**2)  ->  conv2d(w, no padding)  ->  upfirdn2d(f, down)

where P is the user padding plus the centring pads of `upsample2d` (when up > 1) and of
`downsample2d` (when down > 1), all applied before the convolution. This is the StyleGAN2
convention: a 3x3 layer with padding=1 and up=2 doubles the resolution, with down=2 halves
it. Rather than materialising the zero-stuffed or full-resolution intermediate, the cheaper
equivalent formulation is chosen per case (transposed convolution for upsampling, strided
convolution for downsampling, 1x1 kernels moved to the low-resolution side). The cases are
exact rewrites of the definition above: "valid" convolutions commute, and padding beyond
the kernel support only adds zero outputs.
"""

from typing import Optional

import torch
import torch.nn.functional as F

from .upfirdn2d import (Padding, _add_pads, _downsample_pads, _get_filter_size, _parse_padding, _upsample_pads,
                        upfirdn2d)

# ----------------------------------------------------------------------------


def _conv2d(x, w, stride=1, padding=0, groups=1, correlate=True):
    """Ordinary (optionally strided, symmetric-padded) grouped convolution.

    correlate=True is torch's cross-correlation; False is a true convolution.
    """
    if not correlate:
        w = w.flip([2, 3])
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _conv_transpose2d(x, w, stride, padding, groups, correlate=True):
    """Zero insertion by `stride` followed by a full convolution with `w` in one call.

    conv_transpose2d performs a true convolution on the zero-stuffed grid (minus the trailing
    stride - 1 all-zero outputs, and minus `padding` on each side), so the kernel is flipped
    when a cross-correlation is wanted. Its weight layout is [in, out / groups, kh, kw].
    """
    if correlate:
        w = w.flip([2, 3])
    out_ch, in_per_group, kh, kw = w.shape
    w = w.reshape(groups, out_ch // groups, in_per_group, kh, kw)
    w = w.transpose(1, 2).reshape(groups * in_per_group, out_ch // groups, kh, kw)
    return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)


def _total_padding(f, up, down, padding):
    """User padding plus the centring pads of upsample2d (up > 1) and downsample2d (down > 1).

    All of it applies to the (virtually) upsampled input before the convolution.
    """
    fw, fh = _get_filter_size(f)
    pad = _parse_padding(padding)
    if up > 1:
        pad = _add_pads(pad, _upsample_pads(fw, fh, up, up))
    if down > 1:
        pad = _add_pads(pad, _downsample_pads(fw, fh, down, down))
    return list(pad)


def _check_args(x, w, f, up, down, groups):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('conv2d_resample: x must be a 4-D tensor [N, C, H, W], got '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}')
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError('conv2d_resample: w must be a 4-D tensor [out, in / groups, kh, kw], got '
                         f'{tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__}')
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f'conv2d_resample: groups must be an int >= 1, got {groups!r}')
    if w.shape[0] % groups != 0 or x.shape[1] != w.shape[1] * groups:
        raise ValueError(f'conv2d_resample: x has {x.shape[1]} channels, w has shape {tuple(w.shape)} '
                         f'and groups={groups}; need x.shape[1] == w.shape[1] * groups and '
                         'w.shape[0] divisible by groups')
    for name, value in (('up', up), ('down', down)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f'conv2d_resample: {name} must be an int >= 1, got {value!r}')
    if f is not None and (not isinstance(f, torch.Tensor) or f.ndim not in (1, 2)):
        raise ValueError('conv2d_resample: f must be None or a 1-D/2-D filter tensor from setup_filter')


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None,
                    up: int = 1, down: int = 1, padding: Padding = 0, groups: int = 1,
                    flip_weight: bool = True, flip_filter: bool = False) -> torch.Tensor:
    """Convolve images, with alias-free FIR upsampling before and downsampling after.

    Args:
        x: images [N, C_in, H, W].
        w: weights [C_out, C_in / groups, kh, kw].
        f: FIR filter from `upfirdn2d.setup_filter` used for the resampling; None: identity.
        up: integer upsampling factor.
        down: integer downsampling factor.
        padding: padding of the upsampled image, int, [x, y] or [x0, x1, y0, y1].
        groups: number of convolution groups.
        flip_weight: True for cross-correlation (torch.nn.functional.conv2d semantics), False
            for a true convolution.
        flip_filter: use correlation instead of convolution for the FIR filter.

    Returns:
        Tensor [N, C_out, H_out, W_out]; for kh = kw = k and padding = k // 2 (odd k) the
        output is H * up / down by W * up / down.
    """
    _check_args(x, w, f, up, down, groups)
    _, _, kh, kw = w.shape
    px0, px1, py0, py1 = pad = _total_padding(f, up, down, padding)
    pointwise = kh == 1 and kw == 1

    if up == 1 and down == 1:
        # Plain convolution; torch handles symmetric non-negative padding itself.
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d(x, w, padding=[py0, px0], groups=groups, correlate=flip_weight)
        x = upfirdn2d(x, None, padding=pad, flip_filter=flip_filter)
        return _conv2d(x, w, groups=groups, correlate=flip_weight)

    if up == 1:
        # Downsampling only. A 1x1 kernel mixes channels per pixel, so resample first and
        # convolve the small image; otherwise filter at full resolution and let a strided
        # convolution do the decimation.
        if pointwise:
            x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
            return _conv2d(x, w, groups=groups, correlate=flip_weight)
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv2d(x, w, stride=down, groups=groups, correlate=flip_weight)

    if pointwise and down == 1:
        # Upsampling a 1x1 convolution: convolve the small image, then upsample.
        x = _conv2d(x, w, groups=groups, correlate=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    # Upsampling (and maybe downsampling): the transposed convolution does zero insertion and
    # the convolution at once, as if the zero-stuffed image had been padded by
    # [k - 1, k - up]. Adjust to the wanted padding afterwards; the part that both sides
    # crop is cropped by the transposed convolution itself.
    dx0, dx1 = px0 - (kw - 1), px1 - (kw - up)
    dy0, dy1 = py0 - (kh - 1), py1 - (kh - up)
    crop_x = max(min(-dx0, -dx1), 0)
    crop_y = max(min(-dy0, -dy1), 0)
    x = _conv_transpose2d(x, w, stride=up, padding=[crop_y, crop_x], groups=groups,
                          correlate=flip_weight)
    x = upfirdn2d(x, f, padding=[dx0 + crop_x, dx1 + crop_x, dy0 + crop_y, dy1 + crop_y],
                  gain=up ** 2, flip_filter=flip_filter)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x


def conv2d_resample_generic(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None,
                            up: int = 1, down: int = 1, padding: Padding = 0, groups: int = 1,
                            flip_weight: bool = True, flip_filter: bool = False) -> torch.Tensor:
    """The defining (slow) formulation of `conv2d_resample`, for tests and debugging.

    Upsamples with zero insertion and the full padding, filters, convolves without padding,
    then filters and decimates. Same arguments and result as `conv2d_resample`.
    """
    _check_args(x, w, f, up, down, groups)
    pad = _total_padding(f, up, down, padding)
    x = upfirdn2d(x, f if up > 1 else None, up=up, padding=pad, gain=up ** 2,
                  flip_filter=flip_filter)
    x = _conv2d(x, w, groups=groups, correlate=flip_weight)
    if down > 1:
        x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
    return x
