"""Fused multiply-add `a * b + c` with broadcasting.

Used by the modulated convolution to add noise and demodulate in one step. The forward pass
is a single `torch.addcmul` (no intermediate product tensor); the backward pass reduces each
gradient to the shape of its input so that broadcast operands get correct gradients, and is
written with ordinary ops so that it can itself be differentiated (second order).
"""

import torch


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return `a * b + c`, broadcasting all three.

    Args:
        a, b, c: tensors with mutually broadcastable shapes.

    Returns:
        Tensor with the broadcast shape of the three inputs.
    """
    for name, t in (('a', a), ('b', b), ('c', c)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f'fma: {name} must be a torch.Tensor, got {type(t).__name__}')
    if not _broadcastable(a.shape, b.shape, c.shape):
        raise ValueError(f'fma: shapes {tuple(a.shape)}, {tuple(b.shape)} and {tuple(c.shape)} '
                         'do not broadcast')
    return _FusedMultiplyAdd.apply(a, b, c)


def _broadcastable(*shapes: torch.Size) -> bool:
    """Whether the shapes broadcast together: aligned from the right, every dimension holds
    one size besides 1. (torch.broadcast_shapes goes through torch._refs, about 0.2 ms per
    call on a CPU, more than the fused op itself at small sizes.)"""
    for dim in range(1, max(len(s) for s in shapes) + 1):
        sizes = {s[-dim] for s in shapes if len(s) >= dim} - {1}
        if len(sizes) > 1:
            return False
    return True


def _sum_to_shape(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back to `shape` (the inverse of broadcasting)."""
    # Leading dimensions that broadcasting prepended.
    extra = x.ndim - len(shape)
    if extra > 0:
        x = x.sum(dim=list(range(extra)))
    # Dimensions of size 1 that broadcasting expanded.
    dims = [i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    return x


class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return torch.addcmul(c, a, b)

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved_tensors
        da = db = dc = None
        # Plain differentiable ops: with create_graph=True these build the graph of the
        # second-order terms (d(da)/db = dout, d(da)/d(dout) = b, ...).
        if ctx.needs_input_grad[0]:
            da = _sum_to_shape(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _sum_to_shape(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _sum_to_shape(dout, ctx.c_shape)
        return da, db, dc
