#!/usr/bin/env python
"""Project an image into the latent space W (or W+) of a network file.

The established method of StyleGAN2 (Karras et al. 2020, "Analyzing and improving the image
quality of StyleGAN", section 5): start from the mean w, minimise the LPIPS-style distance
between VGG16 features of the generated and the target image with Adam, while optimising
the per-layer noise inputs too, regularised so that they stay noise; the learning rate ramps
up and down, and w is perturbed by noise that fades out over the first 3/4 of the steps.

Examples:

\b
  python projector.py --network=net.pkl --target=face.png --outdir=out
  python projector.py --network=net.pkl --target=face.png --outdir=out --w-plus=1 --save-video=1

Writes target.png (the target, centre-cropped and resized to the network's resolution),
proj.png (the image of the projected latent), projected_w.npz (array w, [1, num_ws, w_dim],
for `generate.py --projected-w`) and with --save-video a video of the optimisation, target
and projection side by side. The VGG16 detector is the one the metrics use (`vgg16.pt`,
found in --detector-dir, $GAN_METRICS_DETECTOR_DIR or the cache, else downloaded once).
"""

import copy
import dataclasses
import os
from typing import Callable, Dict, List, Optional, Union

import click
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

import dnnlib
import generate
from metrics import detectors, metric_utils
from torch_utils import cli

# ---------------------------------------------------------------------------------------
# The method.


@dataclasses.dataclass
class Projection:
    """What `project` returns.

    Attributes:
        ws: the latent after every step, [num_steps, num_ws, w_dim] (the last row is the result).
        dist: the feature distance of every step (before its update).
        loss: the total loss (distance + weighted noise regularisation) of every step.
        noise: the optimised noise inputs, {buffer name: tensor}.
    """
    ws: torch.Tensor
    dist: List[float]
    loss: List[float]
    noise: Dict[str, torch.Tensor]

    @property
    def w(self) -> torch.Tensor:
        """The projected latent, [1, num_ws, w_dim]."""
        return self.ws[-1:]


def w_statistics(G, c: torch.Tensor, num_samples: int, device: torch.device, batch: int = 1000):
    """Mean w and its spread sqrt(E|w - mean|^2) over `num_samples` latents (z from seed 123,
    as the established projector draws them)."""
    z = np.random.RandomState(123).randn(num_samples, G.z_dim).astype(np.float32)
    ws = []
    with torch.no_grad():
        for i in range(0, num_samples, batch):
            zb = torch.from_numpy(z[i:i + batch]).to(device)
            ws.append(G.mapping(zb, c.to(device).expand(zb.shape[0], -1))[:, :1, :].to(torch.float64))
    ws = torch.cat(ws)                                   # [N, 1, w_dim]
    w_avg = ws.mean(dim=0, keepdim=True)                 # [1, 1, w_dim]
    w_std = float(((ws - w_avg).square().sum() / num_samples).sqrt())
    return w_avg.to(torch.float32), w_std


def learning_rate(t: float, initial: float, rampdown: float, rampup: float) -> float:
    """Learning rate at progress t in [0, 1): a linear ramp up over the first `rampup`, a
    cosine ramp down over the last `rampdown` of the steps."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * np.cos(ramp * np.pi)
    return initial * ramp * min(1.0, t / rampup)


def w_noise_scale(t: float, w_std: float, initial_factor: float, ramp_length: float) -> float:
    """Standard deviation of the noise added to w at progress t; quadratic fade to 0 at `ramp_length`."""
    return w_std * initial_factor * max(0.0, 1.0 - t / ramp_length) ** 2


def noise_regularization(noise_bufs) -> torch.Tensor:
    """Sum over noise maps and their 2x downsampled pyramid (down to 8x8) of the squared
    autocorrelation with a one-pixel shift, horizontally and vertically: zero for white noise,
    large when a noise map carries image structure."""
    reg = 0.0
    for buf in noise_bufs:
        noise = buf[None, None, :, :]
        while True:
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=3)).mean() ** 2
            reg = reg + (noise * torch.roll(noise, shifts=1, dims=2)).mean() ** 2
            if noise.shape[2] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return reg


# Below this size VGG16's five 2x poolings leave nothing; such images go through the
# detector's own resize to 224 instead (the established projector fails on them).
MIN_VGG_INPUT = 32


def _feature_fn(detector: Union[detectors.Detector, torch.nn.Module],
                resolution: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The LPIPS features of a VGG16 detector, called so that gradients flow to the input
    (Detector.__call__ runs without gradients). Keywords its forward lacks are left out."""
    module = detector.module if isinstance(detector, detectors.Detector) else detector
    accepted = detectors._forward_arg_names(module)  # pylint: disable=protected-access
    kwargs = {k: v for k, v in dict(resize_images=resolution < MIN_VGG_INPUT, return_lpips=True).items()
              if accepted is None or k in accepted}
    return lambda images: module(images, **kwargs)


def _to_detector_input(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 255], RGB, at most 256x256 (VGG16 was trained at 224)."""
    images = metric_utils.to_rgb(images)
    if images.shape[2] > 256:
        images = F.interpolate(images, size=(256, 256), mode='area')
    return images


def project(G, target: torch.Tensor, *, detector, num_steps: int = 1000, w_plus: bool = False,
            c: Optional[torch.Tensor] = None, w_avg_samples: int = 10000, initial_learning_rate: float = 0.1,
            initial_noise_factor: float = 0.05, lr_rampdown_length: float = 0.25, lr_rampup_length: float = 0.05,
            noise_ramp_length: float = 0.75, regularize_noise_weight: float = 1e5, seed: int = 303,
            device: Union[str, torch.device] = 'cpu', progress: Union[None, bool, Callable] = None) -> Projection:
    """Finds the latent whose image is closest to `target` in VGG16 feature space.

    Args:
        G: the generator (not changed: a copy is optimised).
        target: uint8-valued [img_channels, img_resolution, img_resolution].
        detector: the VGG16 detector (a `metrics.detectors.Detector` or a module with the
            interface of `vgg16.pt`: float images in [0, 255], `return_lpips=True` gives
            features whose squared distance is the LPIPS distance).
        num_steps: optimisation steps.
        w_plus: optimise one w per layer (W+) instead of one w for all layers (W).
        c: label row [1, c_dim] for conditional networks (None: unconditional).
        w_avg_samples: latents for the start point (mean w) and the scale of the w noise.
        initial_learning_rate, lr_rampdown_length, lr_rampup_length: the learning-rate ramp.
        initial_noise_factor, noise_ramp_length: the w noise, a fraction of w's spread.
        regularize_noise_weight: weight of `noise_regularization`.
        seed: seed of the initial noise maps and the w noise.
        device: where to run.
        progress: True for a progress bar; a callable `progress(step, num_steps, dist)`.

    Returns:
        A Projection.
    """
    device = torch.device(device)
    if tuple(target.shape) != (G.img_channels, G.img_resolution, G.img_resolution):
        raise ValueError(f'target has shape {list(target.shape)}; this network needs '
                         f'[{G.img_channels}, {G.img_resolution}, {G.img_resolution}]')
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    c = torch.zeros([1, G.c_dim], device=device) if c is None else c.to(device)
    features = _feature_fn(detector, G.img_resolution)
    gen = torch.Generator(device=device).manual_seed(seed)

    w_avg, w_std = w_statistics(G, c, w_avg_samples, device)
    noise_bufs = {name: buf for name, buf in G.synthesis.named_buffers() if 'noise_const' in name}
    with torch.no_grad():
        target_features = features(_to_detector_input(target[None].to(device, torch.float32)))

    start = w_avg.repeat(1, G.num_ws, 1) if w_plus else w_avg          # [1, num_ws or 1, w_dim]
    w_opt = start.clone().requires_grad_(True)
    for buf in noise_bufs.values():
        buf.copy_(torch.randn(buf.shape, generator=gen, device=device))
        buf.requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt] + list(noise_bufs.values()), betas=(0.9, 0.999), lr=initial_learning_rate)

    ws_out = torch.zeros([num_steps, *w_opt.shape[1:]], device=device)
    dists, losses = [], []
    bar = None
    if progress is True:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel
        bar = tqdm(total=num_steps, desc='projecting', unit='step', dynamic_ncols=True)
    for step in range(num_steps):
        t = step / num_steps
        for group in optimizer.param_groups:
            group['lr'] = learning_rate(t, initial_learning_rate, lr_rampdown_length, lr_rampup_length)
        sigma = w_noise_scale(t, w_std, initial_noise_factor, noise_ramp_length)
        w_noise = torch.randn(w_opt.shape, generator=gen, device=device) * sigma
        ws = (w_opt + w_noise).expand(-1, G.num_ws, -1)
        synth = (G.synthesis(ws, noise_mode='const') + 1) * (255 / 2)
        dist = (target_features - features(_to_detector_input(synth))).square().sum()
        loss = dist + noise_regularization(noise_bufs.values()) * regularize_noise_weight

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        dists.append(float(dist.detach()))
        losses.append(float(loss.detach()))
        ws_out[step] = w_opt.detach()[0]

        # Keep every noise map at zero mean and unit variance.
        with torch.no_grad():
            for buf in noise_bufs.values():
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
        if bar is not None:
            bar.set_postfix(dist=f'{dists[-1]:.4g}', loss=f'{losses[-1]:.4g}', refresh=False)
            bar.update(1)
        elif callable(progress):
            progress(step + 1, num_steps, dists[-1])
    if bar is not None:
        bar.close()
    return Projection(ws=ws_out.expand(-1, G.num_ws, -1).contiguous(), dist=dists, loss=losses,
                      noise={k: v.detach().clone() for k, v in noise_bufs.items()})


# ---------------------------------------------------------------------------------------
# Files.


def load_target(path: str, resolution: int, channels: int) -> np.ndarray:
    """An image file, centre-cropped to a square and resized (Lanczos) -> uint8 HWC."""
    try:
        with PIL.Image.open(path) as img:
            img = img.convert('L' if channels == 1 else 'RGB')
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise click.BadParameter(f'{path} is not a readable image ({generate.one_line(e)})', param_hint='--target') from None
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w + s) // 2, (h + s) // 2))
    img = img.resize((resolution, resolution), PIL.Image.LANCZOS)
    return np.asarray(img, dtype=np.uint8).reshape(resolution, resolution, channels)


def save_npz(path: str, **arrays) -> None:
    with dnnlib.atomic_write(path, 'wb') as f:
        np.savez(f, **arrays)


@click.command(help=__doc__)
@click.option('--network', metavar='PATH|URL', required=True, help='Network pickle (local file or URL)')
@click.option('--target', metavar='FILE', required=True, help='Image to project (cropped to a square, resized to the network)')
@click.option('--outdir', metavar='DIR', required=True, help='Where to save target.png, proj.png, projected_w.npz')
@click.option('--num-steps', type=click.IntRange(min=1), default=1000, show_default=True, help='Optimisation steps')
@click.option('--w-plus', **cli.BOOL, help='Optimise one w per layer (W+) instead of one w (W)')
@click.option('--seed', type=click.IntRange(min=0), default=303, show_default=True, help='Seed of the noise maps and the w noise')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class label (required for conditional networks)')
@click.option('--save-video', **cli.BOOL, help='Save a video of the optimisation (target | projection per step)')
@click.option('--video-format', type=click.Choice(generate.VIDEO_FORMATS), default='mp4', show_default=True,
              help='Video: mp4 (needs imageio-ffmpeg) or gif (PIL)')
@click.option('--fps', type=click.IntRange(min=1), default=10, show_default=True, help='Video: frames (steps) per second')
@click.option('--detector', metavar='PATH', default=None, help='Replacement VGG16 feature network (TorchScript or network file)')
@click.option('--detector-dir', metavar='DIR', type=click.Path(file_okay=False),
              help=f'Folder holding the official vgg16.pt (also ${detectors.DETECTOR_DIR_ENV})')
@cli.device_option()
def main(network, target, outdir, num_steps, w_plus, seed, class_idx, save_video, video_format, fps, detector,
         detector_dir, device):
    if save_video:
        problem = generate.video_writer_problem(video_format)
        if problem:
            raise click.BadParameter(problem, param_hint='--video-format')
    device = cli.resolve_device(device)
    if not os.path.isfile(target):
        raise click.BadParameter(f'{target} does not exist', param_hint='--target')
    G = generate.load_generator(network, device)
    c = generate.class_label(G, class_idx)
    target_uint8 = load_target(target, G.img_resolution, G.img_channels)
    try:
        vgg16 = detectors.get_detector('vgg16', detector, device, detector_dir)
    except (detectors.DetectorNotFoundError, OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    generate.make_outdir(outdir)

    result = project(G, torch.from_numpy(target_uint8.transpose(2, 0, 1).copy()), detector=vgg16,
                     num_steps=num_steps, w_plus=w_plus, c=c, seed=seed, device=device, progress=True)
    click.echo(f'Feature distance: {result.dist[0]:.4g} at the start, {result.dist[-1]:.4g} at the end')

    # The projection is rendered as generate.py --projected-w renders the saved w: with the
    # network's own constant noise, not the optimised noise maps.
    proj = generate.synthesize_ws(G, result.w, 'const', 1)[0]
    try:
        generate.save_png(target_uint8, os.path.join(outdir, 'target.png'))
        generate.save_png(proj, os.path.join(outdir, 'proj.png'))
        save_npz(os.path.join(outdir, 'projected_w.npz'), w=result.w.cpu().numpy().astype(np.float32))
        if save_video:
            path = os.path.join(outdir, f'proj.{video_format}')
            frames = (np.concatenate([target_uint8, img], axis=1)
                      for i in range(0, num_steps, 8)
                      for img in generate.synthesize_ws(G, result.ws[i:i + 8], 'const', 8))
            (generate.write_gif if video_format == 'gif' else generate.write_video)(frames, path, fps)
    except OSError as e:
        raise click.ClickException(f'cannot write to {outdir}: {generate.one_line(e)}') from None
    click.echo(f'Saved target.png, proj.png, projected_w.npz{" and the video" if save_video else ""} to {outdir}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
