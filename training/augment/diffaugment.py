"""DiffAugment: differentiable augmentation for data-efficient GANs (Zhao et al. 2020).

A policy is a comma-separated list of operations applied in order to every image D sees
(reals, fakes for D, fakes for G), each with probability 1 and with parameters drawn per
sample (shared across channels):

- color: brightness (add u - 0.5, u ~ U(0, 1)), then saturation (scale the deviation from
  the per-pixel channel mean by s ~ U(0, 2)), then contrast (scale the deviation from the
  per-image mean by c ~ U(0.5, 1.5));
- translation: integer shift per axis in [-r, r], r = round(size / 8), vacated pixels zero;
- cutout: a square of side round(size / 2) set to zero, centre uniform over the image,
  clipped at the borders.

Everything is differentiable with respect to the images (masking and index lookups), so
gradients reach G and R1 can be taken through the augmentation.
"""

from typing import Callable, Dict, List

import torch

from torch_utils import netfile

TRANSLATION_RATIO = 1 / 8   # maximum shift, as a fraction of the image size
CUTOUT_RATIO = 1 / 2        # side of the cutout square, as a fraction of the image size


def _uniform(images: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Per-sample U(low, high), shaped to broadcast over [N, C, H, W]."""
    u = torch.rand([images.shape[0], 1, 1, 1], device=images.device, dtype=images.dtype)
    return u * (high - low) + low


def color(images: torch.Tensor) -> torch.Tensor:
    """Random brightness, saturation and contrast, in that order."""
    images = images + _uniform(images, -0.5, 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * _uniform(images, 0.0, 2.0) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * _uniform(images, 0.5, 1.5) + mean
    return images


def _shift_size(size: int, ratio: float) -> int:
    return int(size * ratio + 0.5)


def translation(images: torch.Tensor, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Random integer shift per axis in [-round(size * ratio), round(size * ratio)]; the
    pixels shifted in are zero."""
    n, c, h, w = images.shape
    dev = images.device
    sy, sx = _shift_size(h, ratio), _shift_size(w, ratio)
    dy = torch.randint(-sy, sy + 1, [n, 1, 1], device=dev)
    dx = torch.randint(-sx, sx + 1, [n, 1, 1], device=dev)
    # Output pixel (y, x) reads input (y - dy, x - dx) when that lies inside the image.
    src_y = torch.arange(h, device=dev)[None, :, None] - dy
    src_x = torch.arange(w, device=dev)[None, None, :] - dx
    inside = (src_y >= 0) & (src_y < h) & (src_x >= 0) & (src_x < w)
    index = (src_y.clamp(0, h - 1) * w + src_x.clamp(0, w - 1)).reshape(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)
    return out * inside[:, None].to(images.dtype)


def cutout(images: torch.Tensor, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zeroes a square of side round(size * ratio) per sample; its centre is uniform over the
    pixel grid and the square is clipped at the borders."""
    n, _, h, w = images.shape
    dev = images.device
    size_y, size_x = _shift_size(h, ratio), _shift_size(w, ratio)
    # Centre index in [0, size + (1 - side % 2)): for an even side the square
    # [centre - side/2, centre + side/2) may hang over either border by the same amount.
    cy = torch.randint(0, h + (1 - size_y % 2), [n, 1, 1], device=dev)
    cx = torch.randint(0, w + (1 - size_x % 2), [n, 1, 1], device=dev)
    y0, x0 = cy - size_y // 2, cx - size_x // 2
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    inside = (ys >= y0) & (ys < y0 + size_y) & (xs >= x0) & (xs < x0 + size_x)
    return images * (~inside)[:, None].to(images.dtype)


POLICY_OPS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    'color': color,
    'translation': translation,
    'cutout': cutout,
}


def parse_policy(policy: str) -> List[str]:
    """Splits and validates a policy string such as 'color,translation,cutout'.

    Args:
        policy: Comma-separated operation names (spaces ignored); '' means no operation.

    Returns:
        The operation names in order.

    Raises:
        ValueError: an operation is unknown.
    """
    if not isinstance(policy, str):
        raise ValueError(f'DiffAugment policy must be a string, got {type(policy).__name__}')
    ops = [op.strip() for op in policy.split(',') if op.strip()]
    unknown = [op for op in ops if op not in POLICY_OPS]
    if unknown:
        raise ValueError(f'DiffAugment policy {policy!r}: unknown operation(s) {", ".join(unknown)}; '
                         f'expected a comma-separated list of {", ".join(POLICY_OPS)}')
    return ops


@netfile.register
class DiffAugment(torch.nn.Module):
    """DiffAugment as a module of the augment stage.

    Args:
        policy: Comma-separated operations, applied in order (see the module docstring).
    """

    name = 'diffaug'

    def __init__(self, policy: str = 'color,translation,cutout'):
        super().__init__()
        self.policy = policy
        self.ops = parse_policy(policy)

    def extra_repr(self) -> str:
        return f'policy={self.policy!r}'

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augments a batch [N, C, H, W]; returns the same shape and dtype."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError('DiffAugment: images must be a 4-D tensor [N, C, H, W], got '
                             f'{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}')
        for op in self.ops:
            images = POLICY_OPS[op](images)
        return images


# ---------------------------------------------------------------------------------------
# The method: its option and its part of the config tree (see training/methods.py).

TITLE = 'DiffAugment (--diffaugment)'
DIFFAUG_CLASS = 'training.augment.diffaugment.DiffAugment'


def _check_policy(policy: str) -> None:
    DiffAugment(policy=policy)


def _tag(policy: str) -> str:
    return '-diffaug-' + '-'.join(x.strip() for x in policy.split(',') if x.strip())


def _options():
    from training.methods import Option  # pylint: disable=import-outside-toplevel
    return [Option('--diffaugment', str, metavar='POLICY', tag=_tag, check=_check_policy,
                   help='Add DiffAugment with this policy (e.g. color,translation,cutout) to every D input')]


OPTIONS = _options()


def configure(b, o) -> None:
    """Appends DiffAugment to the augment stage (after ADA when both are on)."""
    if o.diffaugment:
        b.add_augment(dict(class_name=DIFFAUG_CLASS, policy=o.diffaugment))
