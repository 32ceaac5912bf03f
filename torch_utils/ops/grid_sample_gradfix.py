"""Bilinear grid sampling whose gradient with respect to the input is differentiable again.

ADA's geometric augmentations resample images with `grid_sample`. The R1 penalty
differentiates D's output with respect to the real images, through the augmentation, and
then differentiates that gradient with respect to D's parameters. This needs the derivative of
grid_sample's input-gradient, which PyTorch does not provide on every supported version
(`derivative for grid_sampler_2d_backward is not implemented`).

The input-gradient of bilinear sampling is linear in the incoming gradient, g -> A(grid)^T g,
so its own derivative is the sampling A(grid) again. Two autograd Functions express this
with public APIs only: the forward pass is `F.grid_sample`; the backward pass is a Function
whose forward computes the first-order gradients (by differentiating a recomputed
`F.grid_sample`) and whose backward samples again.

Gradients supported:
- first order with respect to `input` and `grid`;
- second order (and higher) through the input-gradient: with respect to the incoming
  gradient (what R1 needs) and with respect to `grid`;
- not supported: differentiating the grid-gradient itself (second order through `grid`,
  e.g. gradgradcheck with a grid that requires grad). This raises NotImplementedError
  rather than returning a silently wrong value. ADA's grids do not require grad.
"""

import torch
import torch.nn.functional as F

_MODE = dict(mode='bilinear', padding_mode='zeros', align_corners=False)


def grid_sample(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """`F.grid_sample(input, grid, mode='bilinear', padding_mode='zeros', align_corners=False)`
    with input-gradients that can be differentiated again (for R1 through augmentations).

    Args:
        input: images [N, C, H_in, W_in].
        grid: sampling locations [N, H_out, W_out, 2] as (x, y) in [-1, 1] (pixel corners at
            -1 and 1); samples outside read zeros.

    Returns:
        Tensor [N, C, H_out, W_out].
    """
    if not isinstance(input, torch.Tensor) or input.ndim != 4:
        raise ValueError('grid_sample: input must be a 4-D tensor [N, C, H, W], got '
                         f'{tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__}')
    if not isinstance(grid, torch.Tensor) or grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError('grid_sample: grid must be a tensor [N, H_out, W_out, 2], got '
                         f'{tuple(grid.shape) if isinstance(grid, torch.Tensor) else type(grid).__name__}')
    if grid.shape[0] != input.shape[0]:
        raise ValueError(f'grid_sample: input has batch size {input.shape[0]} but grid has {grid.shape[0]}')
    return _GridSample.apply(input, grid)


class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, grid):
        ctx.save_for_backward(input, grid)
        return F.grid_sample(input, grid, **_MODE)

    @staticmethod
    def backward(ctx, grad_output):
        input, grid = ctx.saved_tensors
        need_input, need_grid = ctx.needs_input_grad[:2]
        if not (need_input or need_grid):
            return None, None
        grad_input, grad_grid = _GridSampleBackward.apply(grad_output, input, grid, need_input, need_grid)
        return grad_input, grad_grid


class _GridSampleBackward(torch.autograd.Function):
    """(grad_output, input, grid) -> (grad_input, grad_grid) of bilinear grid sampling."""

    @staticmethod
    def forward(ctx, grad_output, input, grid, need_input, need_grid):
        # Differentiate a recomputed forward pass: public API, native kernels.
        with torch.enable_grad():
            leaf_input = input.detach().requires_grad_(need_input)
            leaf_grid = grid.detach().requires_grad_(need_grid)
            out = F.grid_sample(leaf_input, leaf_grid, **_MODE)
            wanted = [t for t, need in ((leaf_input, need_input), (leaf_grid, need_grid)) if need]
            grads = list(torch.autograd.grad(out, wanted, grad_output)) if wanted else []
        grad_input = grads.pop(0) if need_input else None
        grad_grid = grads.pop(0) if need_grid else None
        ctx.save_for_backward(grad_output, grid)
        ctx.set_materialize_grads(False)
        return grad_input, grad_grid

    @staticmethod
    def backward(ctx, grad2_input, grad2_grid):
        if grad2_grid is not None:
            raise NotImplementedError(
                'grid_sample_gradfix.grid_sample: second-order gradients through the sampling grid '
                '(differentiating the grid-gradient) are not supported; detach the grid or use '
                'torch.nn.functional.grid_sample')
        grad_output, grid = ctx.saved_tensors
        d_grad_output = d_grid = None
        if grad2_input is not None:
            # grad_input = A(grid)^T grad_output is linear in grad_output: its adjoint is A(grid),
            # i.e. sampling again. It does not depend on `input`.
            if ctx.needs_input_grad[0]:
                d_grad_output = _GridSample.apply(grad2_input, grid)
            # d<grad2_input, A(grid)^T g>/dgrid = d<A(grid) grad2_input, g>/dgrid: the grid
            # gradient of sampling grad2_input with incoming gradient g.
            if ctx.needs_input_grad[2]:
                d_grid = _GridSampleBackward.apply(grad_output, grad2_input, grid, False, True)[1]
        return d_grad_output, None, d_grid, None, None
