"""CUDA path of `upfirdn2d`: an autograd function around the kernel of upfirdn2d.cu.

`upfirdn2d.upfirdn2d(..., impl='cuda')` calls `upfirdn2d_cuda` for CUDA tensors when
`available()`. The backward pass of upfirdn2d is again an upfirdn2d (the transposed op:
up and down swapped, the filter reversed, the padding mirrored), so gradients of any order
use the same kernel. Filters are constants: no gradient flows to `f`.
"""

import os
from typing import NamedTuple

import torch

from .. import custom_ops

#: What custom_ops builds for this op (the build test compiles exactly this).
PLUGIN_SPEC = dict(module_name='upfirdn2d_plugin', sources=['upfirdn2d.cpp', 'upfirdn2d.cu'], headers=['upfirdn2d.h'],
                   source_dir=os.path.dirname(os.path.abspath(__file__)))

_plugin = custom_ops.LazyPlugin(**PLUGIN_SPEC)


def _get_plugin():
    return _plugin.get()


def available() -> bool:
    """Whether the CUDA kernel can run here (see custom_ops.cuda_kernels_enabled and LazyPlugin)."""
    return custom_ops.cuda_kernels_enabled() and _get_plugin() is not None


class _Config(NamedTuple):
    upx: int
    upy: int
    downx: int
    downy: int
    padx0: int
    padx1: int
    pady0: int
    pady1: int
    flip: bool
    gain: float


def transposed_config(cfg: _Config, in_h: int, in_w: int, out_h: int, out_w: int, fh: int, fw: int) -> _Config:
    """The upfirdn2d whose output is the gradient of `cfg`'s input.

    Per axis the forward is out[o] = gain * sum_i x[i] * F[i*up + p0 - o*down] (F the
    correlation kernel). Its adjoint, dx[i] = gain * sum_o dy[o] * F[i*up + p0 - o*down], is an
    upfirdn2d of dy with up and down swapped, the correlation kernel reversed (flip toggled),
    leading padding fh - 1 - p0, and trailing padding chosen so that the output has the
    input's size: (in - 1) * up + fh = out * down + p0' + p1'.

    Args:
        cfg: the forward configuration.
        in_h, in_w: the forward input's height and width.
        out_h, out_w: the forward output's height and width.
        fh, fw: the 2-D filter's height and width.

    Returns:
        The configuration of the transposed op.
    """
    return _Config(
        upx=cfg.downx, upy=cfg.downy, downx=cfg.upx, downy=cfg.upy,
        padx0=fw - 1 - cfg.padx0, padx1=in_w * cfg.upx - out_w * cfg.downx + cfg.padx0 - cfg.upx + 1,
        pady0=fh - 1 - cfg.pady0, pady1=in_h * cfg.upy - out_h * cfg.downy + cfg.pady0 - cfg.upy + 1,
        flip=not cfg.flip, gain=cfg.gain)


class _UpFirDn2d(torch.autograd.Function):
    """One upfirdn2d pass with a 2-D filter."""

    @staticmethod
    def forward(ctx, x, f, cfg: _Config):
        y = _get_plugin().upfirdn2d(x, f, cfg.upx, cfg.upy, cfg.downx, cfg.downy,
                                    cfg.padx0, cfg.padx1, cfg.pady0, cfg.pady1, cfg.flip, cfg.gain)
        ctx.save_for_backward(f)
        ctx.cfg = cfg
        ctx.in_hw = (x.shape[2], x.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy):
        f, = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            in_h, in_w = ctx.in_hw
            tcfg = transposed_config(ctx.cfg, in_h, in_w, dy.shape[2], dy.shape[3], f.shape[0], f.shape[1])
            dx = _UpFirDn2d.apply(dy, f, tcfg)
            assert dx.shape[2:] == (in_h, in_w), 'upfirdn2d_cuda: transposed op has the wrong size'
        return dx, None, None


def upfirdn2d_cuda(x: torch.Tensor, f: torch.Tensor, upx: int = 1, upy: int = 1, downx: int = 1,
                   downy: int = 1, padx0: int = 0, padx1: int = 0, pady0: int = 0, pady1: int = 0,
                   flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, FIR-filter, downsample, on a CUDA tensor.

    Semantics are those of `upfirdn2d.upfirdn2d` with parsed arguments. A 1-D filter is
    applied along x and then along y (two passes); the gain is applied once.

    Args:
        x: CUDA tensor [N, C, H, W] (float32, float16, bfloat16 or float64), any strides;
            the output keeps channels_last when the input has it.
        f: float32 filter, 2-D [fh, fw] or 1-D (separable); a constant (no gradient).
        upx, upy, downx, downy: integer factors >= 1.
        padx0, padx1, pady0, pady1: padding of the upsampled image; negative crops.
        flip_filter: correlate instead of convolving.
        gain: output scale.

    Returns:
        Tensor [N, C, (H*upy + pady0 + pady1 - fh) // downy + 1, (W*upx + padx0 + padx1 - fw) // downx + 1].
    """
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.requires_grad and torch.is_grad_enabled():
        raise ValueError('upfirdn2d_cuda: the CUDA kernel computes no gradient for the filter f; '
                         "use impl='ref' to learn filters")
    if f.ndim not in (1, 2):
        raise ValueError(f'upfirdn2d_cuda: f must be 1-D or 2-D, got shape {tuple(f.shape)}')
    f = f.to(device=x.device, dtype=torch.float32)
    flip = bool(flip_filter)
    if f.ndim == 2:
        cfg = _Config(int(upx), int(upy), int(downx), int(downy), int(padx0), int(padx1),
                      int(pady0), int(pady1), flip, float(gain))
        return _UpFirDn2d.apply(x, f, cfg)
    # Separable: a [1, fw] pass along x, then a [fh, 1] pass along y.
    cfg_x = _Config(int(upx), 1, int(downx), 1, int(padx0), int(padx1), 0, 0, flip, 1.0)
    cfg_y = _Config(1, int(upy), 1, int(downy), 0, 0, int(pady0), int(pady1), flip, float(gain))
    x = _UpFirDn2d.apply(x, f.reshape(1, -1).contiguous(), cfg_x)
    return _UpFirDn2d.apply(x, f.reshape(-1, 1).contiguous(), cfg_y)
