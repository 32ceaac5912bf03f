"""Bias + activation + gain + clamp as one op.

The networks apply `clamp(act(x + b) * gain)` after nearly every layer. The reference below is
plain PyTorch (differentiable to any order); on CUDA tensors the fused kernel of
`bias_act_cuda` is used when it builds, which saves memory traffic and intermediate tensors.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import custom_ops

from . import bias_act_cuda

# ----------------------------------------------------------------------------
# Activation table. `func(x, alpha)` is the reference; the other fields describe the op to
# the CUDA path: `cuda_idx` selects the kernel branch, `ref` says whether its gradient is
# computed from the input ('x') or the output ('y'), `has_2nd_grad` whether the second
# derivative is non-zero anywhere (piecewise-linear acts have none).


def _act_linear(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x


def _act_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.relu(x)


def _act_lrelu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.leaky_relu(x, alpha)


def _act_tanh(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.tanh(x)


def _act_sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x)


def _act_elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    # Standard ELU (scale 1); `alpha` is the leak slope of lrelu only.
    return F.elu(x)


def _act_selu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.selu(x)


def _act_softplus(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.softplus(x)


def _act_swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x) * x


def _spec(func, cuda_idx, ref, def_alpha=0.0, def_gain=1.0, has_2nd_grad=True):
    return dnnlib.EasyDict(func=func, def_alpha=def_alpha, def_gain=def_gain, cuda_idx=cuda_idx,
                           ref=ref, has_2nd_grad=has_2nd_grad)


activation_funcs = {
    'linear':   _spec(_act_linear,   1, 'y', has_2nd_grad=False),
    'relu':     _spec(_act_relu,     2, 'y', def_gain=math.sqrt(2), has_2nd_grad=False),
    'lrelu':    _spec(_act_lrelu,    3, 'y', def_alpha=0.2, def_gain=math.sqrt(2), has_2nd_grad=False),
    'tanh':     _spec(_act_tanh,     4, 'y'),
    'sigmoid':  _spec(_act_sigmoid,  5, 'y'),
    'elu':      _spec(_act_elu,      6, 'y'),
    'selu':     _spec(_act_selu,     7, 'y'),
    'softplus': _spec(_act_softplus, 8, 'y'),
    'swish':    _spec(_act_swish,    9, 'x', def_gain=math.sqrt(2)),
}

# ----------------------------------------------------------------------------


def _resolve_args(x, b, dim, act, alpha, gain, clamp):
    """Check the arguments and fill in the per-activation defaults.

    Returns (dim, spec, alpha, gain, clamp) with dim non-negative, alpha and gain floats and
    clamp a float, -1 meaning no clamping.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown activation {act!r}; '
                         f'valid names are {", ".join(sorted(activation_funcs))}')
    if x.ndim == 0:
        raise ValueError('bias_act: x must have at least one dimension')
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f'bias_act: dim={dim} is out of range for x with {x.ndim} dimensions')
    dim = dim % x.ndim
    if b is not None:
        if not isinstance(b, torch.Tensor):
            raise TypeError(f'bias_act: b must be a torch.Tensor or None, got {type(b).__name__}')
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f'bias_act: b must be 1-D with x.shape[{dim}] = {x.shape[dim]} elements, '
                             f'got shape {tuple(b.shape)}')
    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    if clamp != -1 and clamp < 0:
        raise ValueError(f'bias_act: clamp must be None or non-negative, got {clamp}')
    return dim, spec, alpha, gain, clamp


def bias_act(x: torch.Tensor, b: Optional[torch.Tensor] = None, dim: int = 1, act: str = 'linear',
             alpha: Optional[float] = None, gain: Optional[float] = None,
             clamp: Optional[float] = None, impl: str = 'cuda') -> torch.Tensor:
    """Add a bias, apply an activation, scale and clamp: `clamp(act(x + b, alpha) * gain)`.

    Args:
        x: input tensor of any shape.
        b: optional 1-D bias with `x.shape[dim]` elements, broadcast along `dim`.
        dim: the dimension of `x` that `b` runs along (the channel dimension).
        act: one of the names in `activation_funcs`.
        alpha: shape parameter of the activation (the negative slope of 'lrelu'); None uses
            the activation's default.
        gain: factor applied after the activation; None uses the activation's default
            (sqrt(2) for relu, lrelu and swish, 1 otherwise).
        clamp: if given, the output (after gain) is clamped to [-clamp, clamp].
        impl: 'cuda' to use the fused kernel for CUDA tensors when it is available, 'ref'
            to force the plain PyTorch reference.

    Returns:
        A tensor with the shape and dtype of `x`.
    """
    if impl not in ('cuda', 'ref'):
        raise ValueError(f"bias_act: impl must be 'cuda' or 'ref', got {impl!r}")
    dim, spec, alpha, gain, clamp = _resolve_args(x, b, dim, act, alpha, gain, clamp)

    # The extension is built on first use; when it cannot be, available() is False.
    if impl == 'cuda' and _use_kernel(x.device):
        return bias_act_cuda.bias_act_cuda(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)


def _use_kernel(device: torch.device) -> bool:
    """The kernel runs only on CUDA, when it built, and after it passed its self-check."""
    return device.type == 'cuda' and bias_act_cuda.available() and self_check.passed(device)


def _check_kernel(device: torch.device) -> dict:
    """Relative errors of the kernel against the reference on a small random input: outputs,
    gradients (x and b) and second-order gradients (x), for an activation with and without a
    second derivative, with gain and clamp."""
    gen = torch.Generator().manual_seed(123)
    errors = {}
    for act, clamp in (('lrelu', None), ('tanh', 0.8), ('linear', None)):
        x0 = torch.randn([3, 5, 4, 6], generator=gen).to(device)
        b0 = torch.randn([5], generator=gen).to(device)
        dy = torch.randn([3, 5, 4, 6], generator=gen).to(device)
        spec = activation_funcs[act]
        clamp_value = -1.0 if clamp is None else float(clamp)
        outs = []
        for kernel in (True, False):
            x = x0.clone().requires_grad_(True)
            b = b0.clone().requires_grad_(True)
            if kernel:
                y = bias_act_cuda.bias_act_cuda(x, b, dim=1, act=act, alpha=float(spec.def_alpha),
                                                gain=float(spec.def_gain), clamp=clamp_value)
            else:
                y = _bias_act_ref(x, b, 1, spec, float(spec.def_alpha), float(spec.def_gain), clamp_value)
            dx, db = torch.autograd.grad((y * dy).sum(), [x, b], create_graph=True)
            ddx = torch.zeros_like(x)
            if dx.requires_grad:
                ddx, = torch.autograd.grad(dx.square().sum(), [x], allow_unused=True)
                ddx = torch.zeros_like(x) if ddx is None else ddx
            outs.append((y, dx, db, ddx))
        for name, got, want in zip(('forward', 'grad x', 'grad b', '2nd-order grad x'), *outs):
            errors[f'{act} {name}'] = custom_ops.relative_error(got, want)
    return errors


# The kernel is compared with the reference the first time it would be used in a process.
self_check = custom_ops.KernelSelfCheck('bias_act', _check_kernel)


def _bias_act_ref(x, b, dim, spec, alpha, gain, clamp):
    """Reference path with resolved arguments; every step is an ordinary autograd op."""
    if b is not None:
        # View the bias as [1, ..., C, ..., 1] so it broadcasts along `dim` only.
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x
