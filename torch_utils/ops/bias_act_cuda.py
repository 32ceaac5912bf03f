"""CUDA path of `bias_act`: autograd functions around the fused kernel of bias_act.cu.

`bias_act.bias_act(..., impl='cuda')` calls `bias_act_cuda` for CUDA tensors when
`available()`; otherwise it uses the plain PyTorch reference. The extension is built on first
use (see torch_utils/custom_ops.py); a failed build warns once and `available()` is False.

Gradients: first order for every activation; second order (needed by R1 and path length
regularisation) for the activations with a non-zero second derivative. The second-order term
itself is computed by the kernel but is not differentiated again (third order is not
supported).
"""

import os
from typing import NamedTuple, Optional

import torch

from .. import custom_ops

#: What custom_ops builds for this op (the build test compiles exactly this).
PLUGIN_SPEC = dict(module_name='bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'], headers=['bias_act.h'],
                   source_dir=os.path.dirname(os.path.abspath(__file__)))

_plugin = custom_ops.LazyPlugin(**PLUGIN_SPEC)


def _get_plugin():
    return _plugin.get()


def available() -> bool:
    """Whether the fused kernel can run here (see custom_ops.cuda_kernels_enabled and LazyPlugin)."""
    return custom_ops.cuda_kernels_enabled() and _get_plugin() is not None


class _Config(NamedTuple):
    dim: int
    act: int        # Activation index of the kernel.
    alpha: float
    gain: float
    clamp: float    # Negative: no clamping.
    ref: str        # 'x' or 'y': the derivative is expressed in the forward input or output.
    has_2nd_grad: bool


def _empty(like: torch.Tensor) -> torch.Tensor:
    # The binding takes "no tensor" as an empty tensor.
    return torch.empty([0], dtype=like.dtype, device=like.device)


def _or_empty(t: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return _empty(like) if t is None else t


def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums over every dimension but `dim` (the bias gradient)."""
    dims = [i for i in range(t.ndim) if i != dim]
    return t.sum(dim=dims) if dims else t


class _BiasAct(torch.autograd.Function):
    """y = clamp(act(x + b) * gain)."""

    @staticmethod
    def forward(ctx, x, b, cfg: _Config):
        plugin = _get_plugin()
        y = plugin.bias_act(x, _or_empty(b, x), _empty(x), _empty(x), 0, cfg.dim, cfg.act,
                            cfg.alpha, cfg.gain, cfg.clamp)
        # Keep only what the derivative needs: the input for x-referenced acts, the output for
        # y-referenced acts and for the clamp mask. Linear's derivative is constant.
        needs_ref = cfg.act != 1
        keep_x = needs_ref and cfg.ref == 'x'
        keep_y = (needs_ref and cfg.ref == 'y') or cfg.clamp >= 0
        ctx.save_for_backward(x if keep_x else None, b if keep_x else None, y if keep_y else None)
        ctx.cfg = cfg
        ctx.b_dtype = None if b is None else b.dtype
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b, y = ctx.saved_tensors
        cfg = ctx.cfg
        dx = db = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            if cfg.act == 1 and cfg.clamp < 0:
                dx = dy * cfg.gain  # Linear without clamp: an ordinary (differentiable) op.
            else:
                dx = _BiasActGrad.apply(dy, x, b, y, cfg)
        if ctx.needs_input_grad[1]:
            db = _sum_except(dx, cfg.dim).to(ctx.b_dtype)
        return (dx if ctx.needs_input_grad[0] else None), db, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * gain * act'(...), masked where the forward output was clamped.

    Inputs: dy, and the forward's x, b (x-referenced acts) and y (y-referenced acts or clamp),
    each possibly None.
    """

    @staticmethod
    def forward(ctx, dy, x, b, y, cfg: _Config):
        plugin = _get_plugin()
        dx = plugin.bias_act(dy, _or_empty(b, dy) if x is not None else _empty(dy), _or_empty(x, dy),
                             _or_empty(y, dy), 1, cfg.dim, cfg.act, cfg.alpha, cfg.gain, cfg.clamp)
        ctx.save_for_backward(dy if cfg.has_2nd_grad else None, x, b, y)
        ctx.cfg = cfg
        ctx.b_dtype = None if b is None else b.dtype
        return dx

    @staticmethod
    def backward(ctx, d_dx):
        dy, x, b, y = ctx.saved_tensors
        cfg = ctx.cfg
        d_dy = d_x = d_b = d_y = None

        # The op is linear in dy: its derivative along dy is the same op.
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActGrad.apply(d_dx, x, b, y, cfg)

        # Second-order term: derivative along the reference (x + b, or y), from the kernel.
        if cfg.has_2nd_grad and any(ctx.needs_input_grad[1:4]):
            plugin = _get_plugin()
            d_ref = plugin.bias_act(d_dx * dy, _or_empty(b, dy) if x is not None else _empty(dy),
                                    _or_empty(x, dy), _or_empty(y, dy), 2, cfg.dim, cfg.act,
                                    cfg.alpha, cfg.gain, cfg.clamp)
            if cfg.ref == 'x':
                d_x = d_ref if ctx.needs_input_grad[1] else None
                d_b = _sum_except(d_ref, cfg.dim).to(ctx.b_dtype) if ctx.needs_input_grad[2] else None
            else:
                d_y = d_ref if ctx.needs_input_grad[3] else None
        return d_dy, d_x, d_b, d_y, None


def bias_act_cuda(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float,
                  gain: float, clamp: float) -> torch.Tensor:
    """Fused `clamp(act(x + b) * gain)` on a CUDA tensor, differentiable to second order.

    Args:
        x: CUDA tensor (float32, float16, bfloat16 or float64), any dense memory format.
        b: 1-D bias with `x.shape[dim]` elements, or None.
        dim: non-negative dimension of `x` that `b` runs along.
        act: activation name, a key of `bias_act.activation_funcs`.
        alpha: activation parameter (lrelu slope), already resolved.
        gain: output scale, already resolved.
        clamp: clamp bound; negative means no clamping.

    Returns:
        A tensor with the shape, dtype and memory format of `x`.
    """
    from .bias_act import activation_funcs  # Here, not at the top: bias_act imports this module.
    if act not in activation_funcs:
        raise ValueError(f'bias_act_cuda: unknown activation {act!r}')
    spec = activation_funcs[act]
    if b is not None and b.device != x.device:
        raise ValueError(f'bias_act_cuda: b is on {b.device} but x is on {x.device}')
    cfg = _Config(dim=int(dim), act=int(spec.cuda_idx), alpha=float(alpha), gain=float(gain),
                  clamp=float(clamp) if clamp is not None else -1.0,
                  ref=spec.ref, has_2nd_grad=spec.has_2nd_grad)
    return _BiasAct.apply(x, b, cfg)
