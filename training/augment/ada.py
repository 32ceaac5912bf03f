"""ADA: the adaptive discriminator augmentation pipeline (Karras et al. 2020).

Every image D sees (reals, fakes for D, fakes for G) passes through this module. Each
transform is applied independently per sample with probability `p * multiplier`; `p` is a
buffer that an adaptive controller (training.augment.adaptive.AdaptiveP) moves during
training. All transforms are differentiable with respect to the images, including the
second-order gradients that R1 takes through them.

Transform groups (paper, appendix B):
- blit: x-flip, rotations by multiples of 90 degrees, integer translation;
- geom: isotropic scaling, arbitrary rotation, anisotropic scaling, fractional translation;
- color: brightness, contrast, luma flip, hue rotation, saturation;
- filter: per-band gains of a 4-band octave filter bank;
- noise: additive Gaussian noise;
- cutout: a zeroed rectangle.

Geometric transforms are composed into one inverse matrix per sample and executed once. When
only blit transforms are active they map pixels to pixels, so they are executed exactly by
index lookup with mirrored borders. Otherwise the image is reflection-padded, upsampled 2x
with the sym6 wavelet low-pass, resampled bilinearly (twice-differentiable grid_sample) at
the transformed positions and downsampled 2x with the same (flipped) filter, so that neither
the padding nor aliasing shows in the result.

Samples for which no transform of a group was drawn are passed through that group unchanged
(bit for bit), and with p = 0 the whole module is the identity.

The constructor keywords and the buffer names (`p`, `Hz_geom`, `Hz_fbank`) are those of the
established stylegan2-ada-pytorch class, so its pickles rebuild as this class.
"""

import math
from typing import Sequence

import numpy as np
import torch

from torch_utils import misc, netfile
from torch_utils.ops import grid_sample_gradfix, upfirdn2d

# ---------------------------------------------------------------------------------------
# Wavelet low-pass (decomposition) filters of the Symlet family, from the standard tables.
# sym2 builds the filter bank of the image filter group, sym6 is the interpolation filter of
# the geometric group (12 taps, six vanishing moments: little aliasing, little blur).

SYMLETS = {
    'sym2': [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025],
    'sym6': [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
             0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
             -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148],
}

# Expected power of natural images in the four octave bands (lowest first), roughly 1/f:
# band gains are normalised so that this expected power is preserved.
FILTER_BAND_POWER = [10 / 13, 1 / 13, 1 / 13, 1 / 13]

# Luma axis in RGB (homogeneous 4-vector): the colour transforms rotate and reflect about it.
_LUMA_AXIS = np.asarray([1, 1, 1, 0], dtype=np.float64) / np.sqrt(3)


def octave_filter_bank(lowpass: Sequence[float], num_bands: int = 4) -> np.ndarray:
    """Zero-phase filters that split a 1-D signal into `num_bands` octaves.

    From an orthogonal wavelet low-pass h, the half-band pair lo(z) = h(z)h(1/z)/2 and
    hi(z) = h(-z)h(-1/z)/2 sums to the identity. Band k (0 = lowest) is the high-pass at the
    octave of band k followed by the low-passes of all finer octaves; band 0 is the product of
    all low-passes. Filters at coarser octaves are the half-band filters with zeros inserted
    (dilated), so the bands are centred and their sum is exactly a unit impulse.

    Args:
        lowpass: Taps of an orthogonal wavelet's low-pass decomposition filter.
        num_bands: Number of bands (octaves) including the residual low band.

    Returns:
        float64 array [num_bands, L]: one symmetric filter per band, centred, lowest first.
    """
    h = np.asarray(lowpass, dtype=np.float64)
    h_hi = h * (-1.0) ** np.arange(h.size)
    lo = np.convolve(h, h[::-1]) / 2
    hi = np.convolve(h_hi, h_hi[::-1]) / 2

    def dilate(f: np.ndarray, d: int) -> np.ndarray:
        out = np.zeros((f.size - 1) * d + 1)
        out[::d] = f
        return out

    octaves = num_bands - 1
    bands = []
    for k in range(num_bands):
        # Low-passes of octaves finer than the band's own, then its high-pass (or, for the
        # lowest band, the coarsest low-pass).
        f = np.ones(1)
        for j in range(octaves - max(k, 1)):
            f = np.convolve(f, dilate(lo, 2 ** j))
        coarse = 2 ** (octaves - max(k, 1))
        f = np.convolve(f, dilate(hi if k > 0 else lo, coarse))
        bands.append(f)
    length = max(b.size for b in bands)
    bank = np.zeros([num_bands, length])
    for k, f in enumerate(bands):
        start = (length - f.size) // 2
        bank[k, start:start + f.size] = f
    return bank


# ---------------------------------------------------------------------------------------
# Per-sample homogeneous matrices. 2-D ones act on (x, y, 1), 3-D ones on (r, g, b, 1).

def _eye(n: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.eye(n, device=device).unsqueeze(0).repeat(batch, 1, 1)


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(3, tx.shape[0], tx.device)
    m[:, 0, 2] = tx
    m[:, 1, 2] = ty
    return m


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(3, sx.shape[0], sx.device)
    m[:, 0, 0] = sx
    m[:, 1, 1] = sy
    return m


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = _eye(3, theta.shape[0], theta.device)
    c, s = torch.cos(theta), torch.sin(theta)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
    return m


def _rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by `theta` about the unit 3-vector `axis` (Rodrigues), as [N, 4, 4]."""
    x, y, z = axis[0], axis[1], axis[2]
    c, s = torch.cos(theta), torch.sin(theta)
    k = 1 - c
    m = _eye(4, theta.shape[0], theta.device)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = c + x * x * k, x * y * k - z * s, x * z * k + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * k + z * s, c + y * y * k, y * z * k - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * k - y * s, z * y * k + x * s, c + z * z * k
    return m


def _mirror_indices(indices: torch.Tensor, size: int) -> torch.Tensor:
    """Maps any integer positions into [0, size) by mirroring about the border pixels
    (the 'reflect' convention: ... 2 1 | 0 1 2 ... size-1 | size-2 ...), repeated as needed."""
    if size == 1:
        return torch.zeros_like(indices)
    period = 2 * (size - 1)
    i = torch.remainder(indices, period)
    return torch.where(i >= size, period - i, i)


def _reflect_pad(images: torch.Tensor, pad: Sequence[int]) -> torch.Tensor:
    """Reflection padding [x0, x1, y0, y1] of any size (repeated mirroring where a pad is
    larger than the image, which F.pad's 'reflect' mode refuses). Twice differentiable."""
    x0, x1, y0, y1 = (int(v) for v in pad)
    _, _, h, w = images.shape
    ix = _mirror_indices(torch.arange(-x0, w + x1, device=images.device), w)
    iy = _mirror_indices(torch.arange(-y0, h + y1, device=images.device), h)
    return images.index_select(3, ix).index_select(2, iy)


def _check_multiplier(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f'AugmentPipe: {name} must be a finite number >= 0, got {value!r}')
    return float(value)


# ---------------------------------------------------------------------------------------

_PROBABILITY_KEYS = ('xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac',
                     'brightness', 'contrast', 'lumaflip', 'hue', 'saturation', 'imgfilter',
                     'noise', 'cutout')
_STRENGTH_KEYS = ('xint_max', 'scale_std', 'rotate_max', 'aniso_std', 'xfrac_std',
                  'brightness_std', 'contrast_std', 'hue_max', 'saturation_std', 'imgfilter_std',
                  'noise_std', 'cutout_size')


@netfile.register
class AugmentPipe(torch.nn.Module):
    """The ADA augmentation pipeline.

    Args:
        xflip, rotate90, xint: probability multipliers of the blit transforms.
        scale, rotate, aniso, xfrac: multipliers of the general geometric transforms.
        brightness, contrast, lumaflip, hue, saturation: multipliers of the colour transforms.
        imgfilter, noise, cutout: multipliers of the image-space transforms.
        xint_max: range of integer translation, as a fraction of the image size.
        scale_std: log2 standard deviation of isotropic scaling.
        rotate_max: range of arbitrary rotation, as a fraction of 180 degrees.
        aniso_std: log2 standard deviation of anisotropic scaling.
        xfrac_std: standard deviation of fractional translation, as a fraction of the size.
        brightness_std: standard deviation of the brightness offset.
        contrast_std: log2 standard deviation of contrast scaling.
        hue_max: range of hue rotation, as a fraction of 180 degrees.
        saturation_std: log2 standard deviation of saturation scaling.
        imgfilter_bands: probability multipliers of the four frequency bands (lowest first).
        imgfilter_std: log2 standard deviation of a band's gain.
        noise_std: scale of the noise level (|N(0, 1)| * noise_std per sample).
        cutout_size: side of the cutout rectangle, as a fraction of the image size.
        p: initial augmentation probability (the `p` buffer).
    """

    name = 'ada'

    def __init__(self, xflip=0, rotate90=0, xint=0, scale=0, rotate=0, aniso=0, xfrac=0,
                 brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, imgfilter=0, noise=0,
                 cutout=0, xint_max=0.125, scale_std=0.2, rotate_max=1, aniso_std=0.2,
                 xfrac_std=0.125, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
                 imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1, noise_std=0.1, cutout_size=0.5,
                 p: float = 0.0):
        super().__init__()
        values = dict(locals())
        for key in _PROBABILITY_KEYS + _STRENGTH_KEYS:
            setattr(self, key, _check_multiplier(key, values[key]))
        bands = list(imgfilter_bands) if isinstance(imgfilter_bands, (list, tuple)) else None
        if bands is None or len(bands) != 4:
            raise ValueError(f'AugmentPipe: imgfilter_bands must be a list of 4 multipliers, got {imgfilter_bands!r}')
        self.imgfilter_bands = [_check_multiplier(f'imgfilter_bands[{i}]', b) for i, b in enumerate(bands)]
        p = _check_multiplier('p', p)

        # Persistent buffers with the established names, so legacy state loads strictly.
        self.register_buffer('p', torch.tensor(p, dtype=torch.float32))
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYMLETS['sym6']))
        self.register_buffer('Hz_fbank', torch.as_tensor(octave_filter_bank(SYMLETS['sym2']), dtype=torch.float32))

    def extra_repr(self) -> str:
        active = [f'{k}={getattr(self, k):g}' for k in _PROBABILITY_KEYS if getattr(self, k) > 0]
        return ', '.join(active) if active else 'no transforms'

    # -----------------------------------------------------------------------------------

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augments a batch.

        Args:
            images: [N, C, H, W] in [-1, 1]; C must be 1 or 3 when colour transforms are on.

        Returns:
            Augmented images, same shape and dtype.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise ValueError('AugmentPipe: images must be a 4-D tensor [N, C, H, W], got '
                             f'{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}')
        # One read of p decides which groups can fire at all: p = 0 costs nothing and is
        # exactly the identity.
        p = float(self.p)
        if p <= 0 or images.shape[0] == 0:
            return images
        images = self._geometric(images, p)
        images = self._color(images, p)
        images = self._filter(images, p)
        images = self._noise(images, p)
        images = self._cutout(images, p)
        return images

    @staticmethod
    def _chance(batch: int, prob: float, device: torch.device) -> torch.Tensor:
        """Per-sample Bernoulli(prob) mask."""
        return torch.rand([batch], device=device) < prob

    # ---- geometric ----------------------------------------------------------------------

    def _geometric(self, images: torch.Tensor, p: float) -> torch.Tensor:
        n, _, h, w = images.shape
        dev = images.device
        blit_on = p * (self.xflip + self.rotate90 + self.xint) > 0
        geom_on = p * (self.scale + self.rotate + self.aniso + self.xfrac) > 0
        if not (blit_on or geom_on):
            return images

        # Inverse transform (output -> input pixel positions, centred coordinates), built by
        # appending the inverse of each transform: the first one listed acts first on the image.
        G_inv = _eye(3, n, dev)
        one = torch.ones([n], device=dev)
        if self.xflip > 0:
            flip = torch.floor(torch.rand([n], device=dev) * 2)
            flip = torch.where(self._chance(n, self.xflip * p, dev), flip, torch.zeros_like(flip))
            G_inv = G_inv @ _scale2d(1 - 2 * flip, one)
        if self.rotate90 > 0:
            quarter = torch.floor(torch.rand([n], device=dev) * 4)
            quarter = torch.where(self._chance(n, self.rotate90 * p, dev), quarter, torch.zeros_like(quarter))
            G_inv = G_inv @ _rotate2d(-math.pi / 2 * quarter)
        if self.xint > 0:
            t = (torch.rand([n, 2], device=dev) * 2 - 1) * self.xint_max
            t = torch.where(self._chance(n, self.xint * p, dev)[:, None], t, torch.zeros_like(t))
            G_inv = G_inv @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h))
        if self.scale > 0:
            s = torch.exp2(torch.randn([n], device=dev) * self.scale_std)
            s = torch.where(self._chance(n, self.scale * p, dev), s, one)
            G_inv = G_inv @ _scale2d(1 / s, 1 / s)
        # Arbitrary rotation is drawn twice (around the anisotropic scaling, so that its axis
        # is random) with a probability that makes "at least one" happen with rotate * p.
        p_rot = 1 - math.sqrt(min(max(1 - self.rotate * p, 0.0), 1.0))
        if self.rotate > 0:
            theta = (torch.rand([n], device=dev) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(self._chance(n, p_rot, dev), theta, torch.zeros_like(theta))
            G_inv = G_inv @ _rotate2d(-theta)
        if self.aniso > 0:
            s = torch.exp2(torch.randn([n], device=dev) * self.aniso_std)
            s = torch.where(self._chance(n, self.aniso * p, dev), s, one)
            G_inv = G_inv @ _scale2d(1 / s, s)
        if self.rotate > 0:
            theta = (torch.rand([n], device=dev) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(self._chance(n, p_rot, dev), theta, torch.zeros_like(theta))
            G_inv = G_inv @ _rotate2d(-theta)
        if self.xfrac > 0:
            t = torch.randn([n, 2], device=dev) * self.xfrac_std
            t = torch.where(self._chance(n, self.xfrac * p, dev)[:, None], t, torch.zeros_like(t))
            G_inv = G_inv @ _translate2d(-t[:, 0] * w, -t[:, 1] * h)

        moved = (G_inv != torch.eye(3, device=dev)).flatten(1).any(dim=1)
        if geom_on:
            out = self._resample(images, G_inv)
        else:
            out = self._blit(images, G_inv)
        return torch.where(moved[:, None, None, None], out, images)

    @staticmethod
    def _centred_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
        """Pixel-centre positions (x, y, 1) relative to the image centre, [h, w, 3]."""
        ys = torch.arange(h, device=device, dtype=torch.float32) - (h - 1) / 2
        xs = torch.arange(w, device=device, dtype=torch.float32) - (w - 1) / 2
        gy, gx = torch.meshgrid(ys, xs, indexing='ij')
        return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)

    def _blit(self, images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
        """Pixel-exact execution of flips, quarter turns and integer shifts (mirrored borders)."""
        n, c, h, w = images.shape
        pos = torch.einsum('nij,hwj->nhwi', G_inv, self._centred_grid(h, w, images.device))
        ix = _mirror_indices(torch.round(pos[..., 0] + (w - 1) / 2).long(), w)
        iy = _mirror_indices(torch.round(pos[..., 1] + (h - 1) / 2).long(), h)
        index = (iy * w + ix).reshape(n, 1, h * w).expand(n, c, h * w)
        return images.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)

    def _resample(self, images: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
        """High-quality execution of arbitrary affine maps: reflect-pad, 2x up, bilinear
        resampling, 2x down, with the sym6 low-pass on both sides."""
        n, c, h, w = images.shape
        dev = images.device
        f = self.Hz_geom.to(device=dev, dtype=torch.float32)
        taps = f.shape[0]
        pad = taps // 4  # support of the filter in output pixels, per side

        # Position that a 2x filtered sample represents: a true convolution with f delays the
        # signal by the centroid of the taps, the flipped (correlating) downsampler advances it
        # by the same amount, so low frequencies stay aligned for every transform. Kept on the
        # device (a 0-d tensor): the only host read of this method is the margin below.
        centroid = (torch.arange(taps, device=dev, dtype=torch.float32) * f).sum() / f.sum()
        up_pad0 = (taps + 1) // 2                    # as in upsample2d with up=2
        down_pad0 = (taps - 1) // 2 - 2 * pad        # as in downsample2d with down=2, padding=-2*pad

        # 2x canvas of the output (with `pad` extra output pixels per side for the
        # downsampler): canvas index k holds output pixel position (k - centroid + down_pad0) / 2.
        ch, cw = 2 * (h + 2 * pad), 2 * (w + 2 * pad)
        ky = (torch.arange(ch, device=dev, dtype=torch.float32) - centroid + down_pad0) / 2 - (h - 1) / 2
        kx = (torch.arange(cw, device=dev, dtype=torch.float32) - centroid + down_pad0) / 2 - (w - 1) / 2

        # Input margin needed: transformed canvas corners plus the upsampler's support. The
        # corners are gathered on the device (building them from elements would read each back).
        corners = torch.stack([kx[[0, -1, 0, -1]], ky[[0, 0, -1, -1]], torch.ones(4, device=dev)], dim=1)
        src = torch.einsum('nij,kj->nki', G_inv, corners)
        centre = misc.constant([(w - 1) / 2, (h - 1) / 2], device=dev)
        lo = src[..., :2].amin(dim=(0, 1)) + centre
        hi = src[..., :2].amax(dim=(0, 1)) + centre
        margin = torch.cat([pad - lo, hi - misc.constant([w - 1, h - 1], device=dev) + pad]).ceil()
        margin = margin.clamp(min=0).minimum(misc.constant([w - 1, h - 1, w - 1, h - 1], device=dev))
        mx0, my0, mx1, my1 = (int(v) for v in margin.tolist())

        padded = _reflect_pad(images, [mx0, mx1, my0, my1])
        up = upfirdn2d.upsample2d(padded, f, up=2)
        uh, uw = up.shape[2], up.shape[3]

        # Canvas sample -> input position -> index j in the upsampled image, where
        # j = 2 * (padded position) - (taps - 1 - up_pad0 - centroid); then normalised for
        # grid_sample (align_corners=False: pixel j spans [j, j + 1]).
        gy, gx = torch.meshgrid(ky, kx, indexing='ij')
        points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)
        pos = torch.einsum('nij,hwj->nhwi', G_inv, points)[..., :2]
        shift = taps - 1 - up_pad0 - centroid
        jx = 2 * (pos[..., 0] + (w - 1) / 2 + mx0) - shift
        jy = 2 * (pos[..., 1] + (h - 1) / 2 + my0) - shift
        grid = torch.stack([(jx + 0.5) * 2 / uw - 1, (jy + 0.5) * 2 / uh - 1], dim=-1)
        sampled = grid_sample_gradfix.grid_sample(up, grid.to(up.dtype))

        out = upfirdn2d.downsample2d(sampled, f, down=2, padding=-2 * pad, flip_filter=True)
        misc.assert_shape(out, [n, c, h, w])
        return out

    # ---- colour -------------------------------------------------------------------------

    def _color(self, images: torch.Tensor, p: float) -> torch.Tensor:
        if p * (self.brightness + self.contrast + self.lumaflip + self.hue + self.saturation) <= 0:
            return images
        n, c, h, w = images.shape
        dev = images.device
        if c not in (1, 3):
            raise ValueError(f'AugmentPipe: colour transforms need 1 or 3 channels, got {c}; '
                             'disable brightness/contrast/lumaflip/hue/saturation for these images')

        # Colour matrices multiply on the left: later transforms act after earlier ones.
        C = _eye(4, n, dev)
        axis = misc.constant(_LUMA_AXIS, device=dev)
        luma = torch.outer(axis, axis)
        if self.brightness > 0:
            b = torch.randn([n], device=dev) * self.brightness_std
            b = torch.where(self._chance(n, self.brightness * p, dev), b, torch.zeros_like(b))
            T = _eye(4, n, dev)
            T[:, :3, 3] = b[:, None]
            C = T @ C
        if self.contrast > 0:
            s = torch.exp2(torch.randn([n], device=dev) * self.contrast_std)
            s = torch.where(self._chance(n, self.contrast * p, dev), s, torch.ones_like(s))
            S = _eye(4, n, dev)
            S[:, :3, :3] *= s[:, None, None]
            C = S @ C
        if self.lumaflip > 0:
            flip = torch.floor(torch.rand([n], device=dev) * 2)
            flip = torch.where(self._chance(n, self.lumaflip * p, dev), flip, torch.zeros_like(flip))
            C = (_eye(4, n, dev) - 2 * luma * flip[:, None, None]) @ C  # Householder reflection
        if self.hue > 0:
            theta = (torch.rand([n], device=dev) * 2 - 1) * math.pi * self.hue_max
            theta = torch.where(self._chance(n, self.hue * p, dev), theta, torch.zeros_like(theta))
            C = _rotate3d(axis, theta) @ C
        if self.saturation > 0:
            s = torch.exp2(torch.randn([n], device=dev) * self.saturation_std)
            s = torch.where(self._chance(n, self.saturation * p, dev), s, torch.ones_like(s))
            # Keep the luma component, scale the chroma components.
            C = (luma + (torch.eye(4, device=dev) - luma) * s[:, None, None]) @ C

        changed = (C != torch.eye(4, device=dev)).flatten(1).any(dim=1)
        flat = images.reshape(n, c, h * w)
        C = C.to(images.dtype)
        if c == 3:
            out = C[:, :3, :3] @ flat + C[:, :3, 3:]
        else:
            # A grey image is the RGB image (v, v, v); map it and take the channel mean.
            rows = C[:, :3, :].mean(dim=1, keepdim=True)
            out = flat * rows[:, :, :3].sum(dim=2, keepdim=True) + rows[:, :, 3:]
        return torch.where(changed[:, None, None, None], out.reshape(n, c, h, w), images)

    # ---- image-space filtering ----------------------------------------------------------

    def _filter(self, images: torch.Tensor, p: float) -> torch.Tensor:
        if p * self.imgfilter <= 0 or sum(self.imgfilter_bands) <= 0:
            return images
        n, c, h, w = images.shape
        dev = images.device
        bank = self.Hz_fbank.to(device=dev, dtype=torch.float32)
        num_bands = bank.shape[0]
        power = misc.constant(FILTER_BAND_POWER, device=dev)

        # Per band: amplify or attenuate it, then renormalise so that the expected power of a
        # 1/f image is unchanged (otherwise the filter would also act as a contrast change).
        gains = torch.ones([n, num_bands], device=dev)
        changed = torch.zeros([n], dtype=torch.bool, device=dev)
        for band, strength in enumerate(self.imgfilter_bands):
            t_band = torch.exp2(torch.randn([n], device=dev) * self.imgfilter_std)
            hit = self._chance(n, self.imgfilter * p * strength, dev)
            t = torch.ones([n, num_bands], device=dev)
            t[:, band] = torch.where(hit, t_band, torch.ones_like(t_band))
            gains = gains * t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()
            changed = changed | hit

        # Per-sample separable filter, applied to every channel: grouped 1-D convolutions.
        taps = (gains @ bank).to(images.dtype)                      # [n, L]
        half = bank.shape[1] // 2
        kernel = taps.repeat_interleave(c, dim=0)                    # [n * c, L]
        x = _reflect_pad(images, [half, half, half, half]).reshape(1, n * c, h + 2 * half, w + 2 * half)
        x = torch.nn.functional.conv2d(x, kernel[:, None, None, :], groups=n * c)
        x = torch.nn.functional.conv2d(x, kernel[:, None, :, None], groups=n * c)
        out = x.reshape(n, c, h, w)
        return torch.where(changed[:, None, None, None], out, images)

    # ---- noise and cutout ---------------------------------------------------------------

    def _noise(self, images: torch.Tensor, p: float) -> torch.Tensor:
        if p * self.noise <= 0:
            return images
        n = images.shape[0]
        dev = images.device
        sigma = torch.randn([n], device=dev).abs() * self.noise_std
        sigma = torch.where(self._chance(n, self.noise * p, dev), sigma, torch.zeros_like(sigma))
        return images + torch.randn_like(images) * sigma.to(images.dtype)[:, None, None, None]

    def _cutout(self, images: torch.Tensor, p: float) -> torch.Tensor:
        if p * self.cutout <= 0:
            return images
        n, _, h, w = images.shape
        dev = images.device
        size = torch.full([n], self.cutout_size, device=dev)
        size = torch.where(self._chance(n, self.cutout * p, dev), size, torch.zeros_like(size))
        centre = torch.rand([n, 2], device=dev)
        # Relative pixel-centre positions; the rectangle is clipped by the image borders.
        ys = ((torch.arange(h, device=dev) + 0.5) / h)[None, :, None] - centre[:, 1, None, None]
        xs = ((torch.arange(w, device=dev) + 0.5) / w)[None, None, :] - centre[:, 0, None, None]
        half = size[:, None, None] / 2
        keep = (xs.abs() >= half) | (ys.abs() >= half)
        return images * keep[:, None].to(images.dtype)
