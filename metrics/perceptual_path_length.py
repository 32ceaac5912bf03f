"""Perceptual path length (Karras et al. 2019, "A style-based generator architecture for
generative adversarial networks", sec. 3; 'end' sampling and W space as in StyleGAN2):
the LPIPS distance between images at t and t + epsilon along a latent interpolation,
divided by epsilon^2, averaged after dropping values below the 1st and above the 99th
percentile. LPIPS comes from the VGG16 detector (`return_lpips=True`)."""

import numpy as np
import torch

from . import metric_utils


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True)


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between the directions of a and b.

    Rotates the unit vector of a towards that of b by t times the angle between them, in
    the plane they span; t may exceed 1 slightly (t + epsilon). Returns unit vectors.
    """
    a, b = _unit(a), _unit(b)
    cos_angle = (a * b).sum(dim=-1, keepdim=True).clamp(-1, 1)
    ortho = _unit(b - cos_angle * a)  # Unit vector in the plane, orthogonal to a.
    angle = torch.acos(cos_angle) * t
    return _unit(torch.cos(angle) * a + torch.sin(angle) * ortho)


def face_crop(img: torch.Tensor) -> torch.Tensor:
    """The established PPL crop of aligned faces: rows 3/8..7/8, columns 2/8..6/8."""
    if img.shape[2] != img.shape[3]:
        raise ValueError(f'PPL crop expects square images, got {tuple(img.shape[2:])}.')
    e = img.shape[2] // 8
    return img[:, :, 3 * e:7 * e, 2 * e:6 * e]


def filtered_mean(dist: np.ndarray) -> float:
    """Mean of the values between the 1st (lower) and 99th (higher) percentiles, inclusive."""
    lo = np.percentile(dist, 1, method='lower')
    hi = np.percentile(dist, 99, method='higher')
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


class PathLengthSampler:
    """Per-unit PPL samples: each unit's latents, t, labels and noise come from (seed, unit).

    Args:
        G: evaluation copy of the generator (its noise buffers get overwritten).
        opts: metric options (seed, device, G_kwargs).
        labels: label sampler for conditional G.
        epsilon: step along the path.
        space: 'z' (spherical interpolation of z) or 'w' (linear interpolation of ws).
        sampling: 'full' (t uniform in [0, 1)) or 'end' (t = 0).
        crop: apply `face_crop`.
        detector: VGG16 (LPIPS) detector.
    """

    def __init__(self, G, opts, labels, epsilon: float, space: str, sampling: str, crop: bool, detector):
        if space not in ('z', 'w') or sampling not in ('full', 'end'):
            raise ValueError(f'PPL: space must be z or w and sampling full or end, got {space!r}, {sampling!r}.')
        self.G, self.opts, self.labels, self.detector = G, opts, labels, detector
        self.epsilon, self.space, self.sampling, self.crop = epsilon, space, sampling, crop
        # Truncation settings go to the mapping; everything else to the synthesis.
        kw = dict(opts.G_kwargs)
        self.mapping_kwargs = {k: kw.pop(k) for k in ('truncation_psi', 'truncation_cutoff') if k in kw}
        kw.pop('noise_mode', None)
        self.synthesis_kwargs = kw
        if metric_utils.call_accepts(getattr(G.synthesis, 'forward', G.synthesis), 'force_fp32'):
            self.synthesis_kwargs['force_fp32'] = True
        self.noise_buffers = [buf for name, buf in G.named_buffers() if name.endswith('noise_const')]

    def __call__(self, unit: int, batch_size: int) -> torch.Tensor:
        """Path-length samples of one unit, [batch_size] float32."""
        G, dev = self.G, self.opts.device
        gen = torch.Generator().manual_seed(metric_utils.derive_seed(self.opts.seed, 2, unit))
        t = torch.rand([batch_size, 1], generator=gen) * (1 if self.sampling == 'full' else 0)
        z0 = torch.randn([batch_size, G.z_dim], generator=gen)
        z1 = torch.randn([batch_size, G.z_dim], generator=gen)
        label_idx = torch.randint(max(self.labels.num_labels, 1), [batch_size], generator=gen).numpy()
        c = torch.from_numpy(self.labels.labels(label_idx)).to(dev)
        t, z0, z1 = t.to(dev), z0.to(dev), z1.to(dev)
        c2 = torch.cat([c, c])

        # The two ends of each step: interpolate in Z (spherically) or in W (linearly).
        if self.space == 'w':
            w0, w1 = G.mapping(torch.cat([z0, z1]), c2, **self.mapping_kwargs).chunk(2)
            ws = torch.cat([w0.lerp(w1, t.unsqueeze(2)), w0.lerp(w1, t.unsqueeze(2) + self.epsilon)])
        else:
            ws = G.mapping(torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + self.epsilon)]), c2, **self.mapping_kwargs)

        # Fresh constant noise per unit, shared by both ends so only the latent step differs.
        for buf in self.noise_buffers:
            buf.copy_(torch.randn(buf.shape, generator=gen).to(buf.device, buf.dtype))
        img = G.synthesis(ws, noise_mode='const', **self.synthesis_kwargs).to(torch.float32)

        if self.crop:
            img = face_crop(img)
        # Box-downsample to 256 when the generator is larger, as the established protocol does.
        factor = G.img_resolution // 256
        if factor > 1:
            img = img.reshape([img.shape[0], img.shape[1], img.shape[2] // factor, factor,
                               img.shape[3] // factor, factor]).mean([3, 5])
        img = metric_utils.to_rgb((img + 1) * (255 / 2))
        lpips0, lpips1 = self.detector(img, resize_images=False, return_lpips=True).chunk(2)
        return (lpips0 - lpips1).square().reshape(batch_size, -1).sum(dim=1) / self.epsilon ** 2


def compute_ppl(opts: metric_utils.MetricOptions, num_samples: int, epsilon: float, space: str, sampling: str,
                crop: bool, batch_size: int = 2) -> float:
    """PPL over `num_samples` interpolation steps.

    Args:
        opts: metric options.
        num_samples: number of path-length samples.
        epsilon: step length.
        space: 'z' or 'w'.
        sampling: 'full' or 'end'.
        crop: crop faces before LPIPS.
        batch_size: samples per unit (each shares one draw of the noise buffers).

    Returns:
        PPL on rank 0, NaN on other ranks.
    """
    G = metric_utils.prepare_generator(opts)
    sampler = PathLengthSampler(G, opts, metric_utils.LabelSampler(opts, G.c_dim), epsilon, space, sampling, crop,
                                opts.get_detector('vgg16'))
    progress = metric_utils.Progress(opts, 'path lengths', num_samples)
    dist = []
    with torch.no_grad():
        for unit in metric_utils.rank_rounds(num_samples, opts, batch_size):
            d = metric_utils.gather_units(sampler(unit, batch_size).to(torch.float32), opts)
            dist.append(d.cpu())
            progress.update(d.shape[0])
    progress.close()
    if opts.rank != 0:
        return float('nan')
    return filtered_mean(torch.cat(dist)[:num_samples].numpy().astype(np.float64))
