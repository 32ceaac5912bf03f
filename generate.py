#!/usr/bin/env python
"""Generate images, image grids and latent-interpolation videos from a network file.

Examples:

\b
  # One PNG per seed, truncation 0.7:
  python generate.py --network=network-snapshot-000100.pkl --seeds=0-7 --trunc=0.7 --outdir=out

\b
  # A 4x2 grid of seeds 10-17 in one image:
  python generate.py --network=net.pkl --seeds=10-17 --grid=4x2 --outdir=out

\b
  # A looping interpolation video through seeds 0,5,9 (60 frames per transition):
  python generate.py --network=net.pkl --seeds=0,5,9 --video=1 --frames=60 --outdir=out

\b
  # A GIF of a 4x2 grid moving through 5 keyframe grids (seeds 0-7, 8-15, ...), pausing on each:
  python generate.py --network=net.pkl --seeds=0-39 --grid=4x2 --video=1 --video-format=gif \\
      --frames=20 --hold=5 --fps=20 --outdir=out

\b
  # Images from projected latents (.npz with array w of shape [N, num_ws, w_dim]):
  python generate.py --network=net.pkl --projected-w=projected_w.npz --outdir=out

Network files are loaded through the safe loader: our own pickles and pickles in the
stylegan2-ada-pytorch format (read as data; no code from the file runs).
"""

import math
import os
import re
from typing import Iterator, List, Optional, Sequence, Tuple

import click
import numpy as np
import PIL.Image
import torch

import dnnlib
from metrics import metric_utils
from torch_utils import cli

# ---------------------------------------------------------------------------------------
# Argument parsing.


class Seeds(Sequence[int]):
    """The seeds of --seeds as ranges: '0-100000000' costs two numbers, not a list of 10^8."""

    def __init__(self, ranges: Sequence[range]):
        self.ranges = list(ranges)
        self.starts = []
        total = 0
        for r in self.ranges:
            self.starts.append(total)
            total += len(r)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.total))]
        if i < 0:
            i += self.total
        if not 0 <= i < self.total:
            raise IndexError('seed index out of range')
        k = max(j for j, start in enumerate(self.starts) if start <= i) if len(self.ranges) > 1 else 0
        return self.ranges[k][i - self.starts[k]]

    def __iter__(self) -> Iterator[int]:
        for r in self.ranges:
            yield from r

    def __eq__(self, other) -> bool:
        return list(self) == list(other) if isinstance(other, (list, tuple, Seeds)) else NotImplemented

    def __repr__(self) -> str:
        return f'Seeds({self.ranges!r})'


def parse_seeds(text: str) -> Seeds:
    """Parses '0-3,10,20-22' into the seeds [0, 1, 2, 3, 10, 20, 21, 22] (ranges are inclusive)."""
    ranges = []
    for part in str(text).split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)\s*-\s*(\d+)', part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f'range "{part}" ends before it starts')
            ranges.append(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            ranges.append(range(int(part), int(part) + 1))
        else:
            raise ValueError(f'"{part}" is neither a seed nor a range a-b (seeds are non-negative integers)')
    if any(r.stop > 2**32 for r in ranges):
        raise ValueError('seeds must be below 2**32')
    return Seeds(ranges)


def parse_grid(text: str) -> Tuple[int, int]:
    """Parses 'COLSxROWS' (e.g. '4x2') into (4, 2)."""
    m = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', str(text))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f'"{text}" is not of the form COLSxROWS, e.g. 4x2')
    return int(m.group(1)), int(m.group(2))


class FiniteFloat(cli.FiniteFloatRange):
    """Any finite float: cli.FiniteFloatRange without bounds, and without a range in --help."""

    name = 'float'

    def _describe_range(self) -> str:
        return ''


class _SeedsType(click.ParamType):
    name = 'seeds'

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return parse_seeds(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


class _GridType(click.ParamType):
    name = 'COLSxROWS'

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_grid(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


# ---------------------------------------------------------------------------------------
# Generation.


def seed_to_z(seed: int, z_dim: int) -> np.ndarray:
    """The latent of a seed, as the established tools draw it (NumPy legacy generator)."""
    return np.random.RandomState(seed).randn(1, z_dim).astype(np.float32)[0]


def class_label(G, class_idx: Optional[int]) -> torch.Tensor:
    """One-hot label row for G ([1, c_dim]); errors name the --class flag."""
    c = torch.zeros([1, G.c_dim])
    if G.c_dim == 0:
        if class_idx is not None:
            raise click.UsageError('--class was given, but the network is unconditional (c_dim=0)')
        return c
    if class_idx is None:
        raise click.UsageError(f'the network is conditional with {G.c_dim} classes: pass --class=0..{G.c_dim - 1}')
    if not 0 <= class_idx < G.c_dim:
        raise click.BadParameter(f'{class_idx} is not a class of this network (0..{G.c_dim - 1})', param_hint='--class')
    c[0, class_idx] = 1
    return c


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """Float NCHW in [-1, 1] -> uint8 NHWC, rounded as the metrics round generated images."""
    return metric_utils.to_uint8(img).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def synthesize_ws(G, ws: torch.Tensor, noise_mode: str, batch: int) -> np.ndarray:
    """Runs G.synthesis on ws [N, num_ws, w_dim] in batches -> uint8 NHWC."""
    out = []
    for i in range(0, ws.shape[0], batch):
        out.append(to_uint8(G.synthesis(ws[i:i + batch], noise_mode=noise_mode)))
    return np.concatenate(out) if out else np.zeros([0, G.img_resolution, G.img_resolution, G.img_channels], np.uint8)


@torch.no_grad()
def seeds_to_ws(G, seeds: Sequence[int], c: torch.Tensor, psi: float, cutoff: Optional[int], device, batch: int) -> torch.Tensor:
    """Maps seeds to ws [N, num_ws, w_dim]; each row depends on its seed only."""
    return torch.cat(list(iter_seed_ws(G, seeds, c, psi, cutoff, device, batch)))


@torch.no_grad()
def iter_seed_ws(G, seeds: Sequence[int], c: torch.Tensor, psi: float, cutoff: Optional[int], device,
                 batch: int) -> Iterator[torch.Tensor]:
    """The ws of `seeds`, `batch` seeds at a time: memory does not grow with the seed count."""
    c = c.to(device)
    it = iter(seeds)
    while True:
        chunk = [s for _, s in zip(range(batch), it)]
        if not chunk:
            return
        zb = torch.from_numpy(np.stack([seed_to_z(s, G.z_dim) for s in chunk])).to(device)
        yield G.mapping(zb, c.expand(zb.shape[0], -1), truncation_psi=psi, truncation_cutoff=cutoff)


def make_grid(images: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Tiles N = cols*rows NHWC images row by row into one HWC image."""
    n, h, w, ch = images.shape
    assert n == cols * rows
    return images.reshape(rows, cols, h, w, ch).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, ch)


def save_png(array: np.ndarray, path: str) -> None:
    """Writes an HWC uint8 image atomically (temporary file, then rename)."""
    img = PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, 'L' if array.shape[2] == 1 else 'RGB')
    with dnnlib.atomic_write(path, 'wb') as f:
        img.save(f, format='PNG')


def interpolate_ws(key_ws: torch.Tensor, frames: int, loop: bool) -> torch.Tensor:
    """Linear interpolation between consecutive keyframe ws; `frames` per transition.

    With `loop`, the last keyframe leads back to the first, so the video repeats seamlessly.
    Returns [T, num_ws, w_dim].
    """
    keys = torch.cat([key_ws, key_ws[:1]]) if loop else key_ws
    out = []
    for i in range(keys.shape[0] - 1):
        t = torch.arange(frames, dtype=keys.dtype, device=keys.device) / frames
        out.append(torch.lerp(keys[i:i + 1], keys[i + 1:i + 2], t[:, None, None]))
    if not loop:
        out.append(keys[-1:])
    return torch.cat(out)


MAX_PROJECTED_W_ELEMENTS = 1 << 28  # 1 GiB of float32.


def read_projected_w(path: str) -> np.ndarray:
    """The array `w` of a projector's .npz, checked from its header before it is read:
    numeric, at most MAX_PROJECTED_W_ELEMENTS elements, no pickled objects."""
    import zipfile  # pylint: disable=import-outside-toplevel
    try:
        with zipfile.ZipFile(path) as z:
            if 'w.npy' not in z.namelist():
                raise click.BadParameter(f'{path} has no array named "w"', param_hint='--projected-w')
            with z.open('w.npy') as f:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f'npy format version {version} is not supported')
                shape, _fortran, dtype = read_header(f)
        if dtype.hasobject or dtype.kind not in 'fiu':
            raise click.BadParameter(f'{path}: w has dtype {dtype}; a numeric array is needed', param_hint='--projected-w')
        if math.prod(shape) > MAX_PROJECTED_W_ELEMENTS:
            raise click.BadParameter(f'{path}: w declares shape {list(shape)}, over {MAX_PROJECTED_W_ELEMENTS} '
                                     f'elements', param_hint='--projected-w')
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data['w'], dtype=np.float32)
    except click.BadParameter:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise click.BadParameter(f'{path} is not a readable .npz of projected latents ({type(e).__name__}: {e})',
                                 param_hint='--projected-w') from None


def video_frame_count(num_keys: int, frames: int, loop: bool, hold: int = 0) -> int:
    """Frames of a video through `num_keys` keyframes: each keyframe is shown 1 + `hold`
    times, each transition adds `frames` - 1 in-between frames; without `loop` the video
    ends on the last keyframe."""
    transitions = num_keys if loop else num_keys - 1
    return transitions * (frames + hold) + (0 if loop else 1 + hold)


def iter_video_frames(G, key_ws: torch.Tensor, frames: int, loop: bool, hold: int, noise_mode: str,
                      batch: int, grid: Optional[Tuple[int, int]] = None) -> Iterator[np.ndarray]:
    """The HWC uint8 frames of an interpolation video, made as they are consumed.

    Args:
        G: the generator.
        key_ws: keyframe ws [K * cells, num_ws, w_dim]: keyframe k of cell i is row k * cells + i.
        frames: frames per transition (the first is the keyframe itself).
        loop: return from the last keyframe to the first.
        hold: extra copies of each keyframe's image (a pause at every keyframe).
        noise_mode: G's noise mode.
        batch: images per synthesis call.
        grid: (cols, rows) to tile cells = cols * rows interpolations into one frame; None: one cell.

    Yields:
        video_frame_count(K, frames, loop, hold) frames.
    """
    cols, rows = grid or (1, 1)
    cells = cols * rows
    keys = key_ws.reshape(-1, cells, *key_ws.shape[1:])          # [K, cells, num_ws, w_dim]
    if loop:
        keys = torch.cat([keys, keys[:1]])
    # The schedule: (transition, t) per distinct frame, with the number of times it is shown.
    schedule = []
    for i in range(keys.shape[0] - 1):
        schedule += [(i, 0, 1 + hold)] + [(i, f, 1) for f in range(1, frames)]
    if not loop:
        schedule.append((keys.shape[0] - 2, frames, 1 + hold))
    per_call = max(1, batch // cells)                             # Frames per synthesis call.
    for s in range(0, len(schedule), per_call):
        part = schedule[s:s + per_call]
        ws = torch.cat([torch.lerp(keys[i], keys[i + 1], f / frames) for i, f, _ in part])
        images = synthesize_ws(G, ws, noise_mode, batch)
        images = images.reshape(len(part), cells, *images.shape[1:])
        for (_i, _f, repeat), cell_images in zip(part, images):
            frame = make_grid(cell_images, cols, rows) if cells > 1 else cell_images[0]
            for _ in range(repeat):
                yield frame


VIDEO_FORMATS = ('mp4', 'gif')


def video_writer_problem(video_format: str) -> Optional[str]:
    """Why a video of this format cannot be written here (a missing package), or None."""
    if video_format == 'mp4':
        try:
            import imageio  # pylint: disable=import-outside-toplevel,unused-import
            import imageio_ffmpeg  # pylint: disable=import-outside-toplevel,unused-import
        except ImportError as e:
            return (f'an mp4 needs the packages imageio and imageio-ffmpeg ({e}); install them with '
                    f'"pip install imageio imageio-ffmpeg", or write a GIF instead')
    return None


def write_video(frames, path: str, fps: int) -> None:
    """Writes NHWC uint8 frames (an array, or any iterable of HWC frames) to an H.264 mp4
    through imageio-ffmpeg, atomically."""
    import imageio  # pylint: disable=import-outside-toplevel
    tmp = os.path.join(os.path.dirname(path) or '.', f'.tmp-{os.getpid()}-{os.path.basename(path)}')
    try:
        writer = imageio.get_writer(tmp, format='FFMPEG', mode='I', fps=fps, codec='libx264', quality=8,
                                    macro_block_size=1, ffmpeg_log_level='error')
        try:
            for frame in frames:
                writer.append_data(np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame)
        finally:
            writer.close()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_gif(frames, path: str, fps: int) -> int:
    """Writes HWC uint8 frames to a looping GIF with PIL, atomically; returns the frame count.

    GIF stores frame durations in hundredths of a second, so the frame time is 1/fps rounded
    to 10 ms (at least 20 ms, the shortest delay viewers honour). PIL keeps the frames in
    memory until the file is written.
    """
    duration = max(20, int(round(100 / fps)) * 10)
    it = iter(frames)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError('a GIF needs at least one frame') from None

    def to_pil(frame: np.ndarray) -> PIL.Image.Image:
        return PIL.Image.fromarray(frame[:, :, 0], 'L') if frame.shape[2] == 1 else PIL.Image.fromarray(frame, 'RGB')

    rest = [to_pil(f) for f in it]
    with dnnlib.atomic_write(path, 'wb') as f:
        # disposal=1 and optimize=False keep every frame whole: identical neighbours are not merged.
        to_pil(first).save(f, format='GIF', save_all=True, append_images=rest, duration=duration, loop=0,
                           optimize=False, disposal=1)
    return 1 + len(rest)


def load_checked_network(network: str, keys=('G_ema',)):
    """Reads a network file through the safe loader and checks its G_ema is a generator;
    every problem is a one-line --network error (generate.py and calc_metrics.py).

    Returns:
        (the loaded entries, G_ema).
    """
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    try:
        data = netfile.load_network(network, keys=keys)
    except (OSError, netfile.NetworkFileError) as e:
        raise click.BadParameter(netfile.error_line(e), param_hint='--network')
    G = data.get('G_ema') if isinstance(data, dict) else None
    problem = netfile.generator_problem(G)
    if problem is not None:
        raise click.BadParameter(f'{network} {problem}', param_hint='--network')
    return data, G


def load_generator(network: str, device: torch.device):
    """Loads G_ema through the safe loader; every problem is a one-line --network error."""
    _data, G = load_checked_network(network)
    return G.eval().requires_grad_(False).to(device)


def one_line(e: BaseException) -> str:
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    return netfile.error_line(e)


def make_outdir(outdir: str) -> None:
    """Creates --outdir and checks that files can be written there, before any work."""
    try:
        os.makedirs(outdir, exist_ok=True)
        if not os.access(outdir, os.W_OK | os.X_OK):
            raise PermissionError(13, 'Permission denied', outdir)
    except FileExistsError:
        raise click.BadParameter(f'{outdir} exists and is not a directory', param_hint='--outdir') from None
    except OSError as e:
        raise click.BadParameter(one_line(e), param_hint='--outdir') from None


def save_all(items, describe: str) -> int:
    """Saves (path, HWC image) pairs as they come; a write error names the file."""
    n = 0
    for path, img in items:
        try:
            save_png(img, path)
        except OSError as e:
            raise click.ClickException(f'cannot write {path}: {one_line(e)} ({n} {describe} saved before it)') from None
        n += 1
    return n


MAX_GRID_IMAGES = 4096      # A grid is one image held in memory.
MAX_VIDEO_KEYFRAMES = 10_000


# ---------------------------------------------------------------------------------------
# CLI.


@click.command(help=__doc__)
@click.option('--network', 'network', metavar='PATH|URL', required=True, help='Network pickle (local file or URL)')
@click.option('--seeds', type=_SeedsType(), help='Seeds: a list and/or ranges, e.g. 0-3,10,20-22')
@click.option('--trunc', 'psi', type=FiniteFloat(), default=1, show_default=True, help='Truncation psi (1 = none, 0 = the average image)')
@click.option('--trunc-cutoff', 'cutoff', type=click.IntRange(min=0), default=None, help='Truncate only the first N ws (default: all)')
@click.option('--class', 'class_idx', type=click.IntRange(min=0), default=None, help='Class label (required for conditional networks)')
@click.option('--noise-mode', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True, help='Noise inputs: const is deterministic')
@click.option('--outdir', metavar='DIR', required=True, help='Where to save the output')
@click.option('--grid', type=_GridType(), default=None, help='Save one COLSxROWS grid of the seeds instead of one image per seed; with --video, a grid of COLS*ROWS interpolations')
@click.option('--video', **cli.BOOL, help='Save a latent-interpolation video through the seeds')
@click.option('--video-format', type=click.Choice(VIDEO_FORMATS), default='mp4', show_default=True, help='Video: mp4 (H.264, needs imageio-ffmpeg) or gif (PIL)')
@click.option('--frames', type=click.IntRange(min=1), default=60, show_default=True, help='Video: frames per transition')
@click.option('--hold', type=click.IntRange(min=0), default=0, show_default=True, help='Video: extra frames that pause on each keyframe')
@click.option('--fps', type=click.IntRange(min=1), default=30, show_default=True, help='Video: frames per second')
@click.option('--loop', **{**cli.BOOL, 'default': True}, help='Video: return to the first seed at the end')
@click.option('--no-loop', 'no_loop', is_flag=True, hidden=True, help='Same as --loop=0 (older spelling)')
@click.option('--projected-w', metavar='NPZ', default=None, help='Generate from projected latents: .npz with w [N, num_ws, w_dim]')
@click.option('--batch', type=click.IntRange(min=1), default=8, show_default=True, help='Images per forward pass')
@cli.device_option()
def main(network, seeds, psi, cutoff, class_idx, noise_mode, outdir, grid, video, video_format, frames, hold, fps,
         loop, no_loop, projected_w, batch, device):
    loop = loop and not no_loop
    modes = [m for m, on in [('--grid', grid is not None and not video), ('--video', video),
                             ('--projected-w', projected_w is not None)] if on]
    if len(modes) > 1:
        raise click.UsageError(f'{" and ".join(modes)} cannot be combined')
    if projected_w is None and not seeds:
        raise click.UsageError('--seeds is required (unless --projected-w is given)')
    if projected_w is not None and seeds:
        raise click.UsageError('--seeds and --projected-w cannot be combined')
    if grid is not None and grid[0] * grid[1] > MAX_GRID_IMAGES:
        raise click.BadParameter(f'a {grid[0]}x{grid[1]} grid has more than {MAX_GRID_IMAGES} cells', param_hint='--grid')
    cells = grid[0] * grid[1] if grid is not None else 1
    if video:
        if len(seeds) % cells:
            raise click.BadParameter(f'a {grid[0]}x{grid[1]} grid video takes a multiple of {cells} seeds (one '
                                     f'grid per keyframe), got {len(seeds)}', param_hint='--seeds')
        if len(seeds) // cells > MAX_VIDEO_KEYFRAMES:
            raise click.BadParameter(f'a video takes at most {MAX_VIDEO_KEYFRAMES} keyframes, got {len(seeds) // cells}',
                                     param_hint='--seeds')
        if len(seeds) // cells < 2:
            raise click.BadParameter('a video needs at least two seeds' + (f' per grid cell ({2 * cells})' if cells > 1 else ''),
                                     param_hint='--seeds')
        problem = video_writer_problem(video_format)
        if problem:
            raise click.BadParameter(problem, param_hint='--video-format')
    elif grid is not None and len(seeds) != cells:
        raise click.BadParameter(f'a {grid[0]}x{grid[1]} grid needs {cells} seeds, got {len(seeds)}', param_hint='--grid')
    device = cli.resolve_device(device)

    G = load_generator(network, device)
    make_outdir(outdir)

    # Projected latents: no mapping network, no truncation.
    if projected_w is not None:
        if not os.path.isfile(projected_w):
            raise click.BadParameter(f'{projected_w} does not exist', param_hint='--projected-w')
        ws = torch.from_numpy(read_projected_w(projected_w))
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
            raise click.BadParameter(f'w has shape {list(ws.shape)}; this network needs [N, {G.num_ws}, {G.w_dim}]', param_hint='--projected-w')
        ws = ws.to(device)
        n = save_all(((os.path.join(outdir, f'proj{i + j:02d}.png'), img)
                      for i in range(0, ws.shape[0], batch)
                      for j, img in enumerate(synthesize_ws(G, ws[i:i + batch], noise_mode, batch))), 'images')
        click.echo(f'Saved {n} images to {outdir}')
        return

    c = class_label(G, class_idx)
    if video:
        ws = seeds_to_ws(G, seeds, c, psi, cutoff, device, batch)  # Keyframes only.
        path = os.path.join(outdir, f'video-seeds{seeds[0]}-{seeds[-1]}.{video_format}')
        stream = iter_video_frames(G, ws, frames, loop, hold, noise_mode, batch, grid)
        try:
            if video_format == 'gif':
                write_gif(stream, path, fps)
            else:
                write_video(stream, path, fps)
        except OSError as e:
            raise click.ClickException(f'cannot write {path}: {one_line(e)}') from None
        click.echo(f'Saved {video_frame_count(len(seeds) // cells, frames, loop, hold)} frames to {path}')
        return
    if grid is not None:
        images = synthesize_ws(G, seeds_to_ws(G, seeds, c, psi, cutoff, device, batch), noise_mode, batch)
        path = os.path.join(outdir, f'grid-seeds{seeds[0]}-{seeds[-1]}.png')
        save_all([(path, make_grid(images, *grid))], 'grids')
        click.echo(f'Saved a {grid[0]}x{grid[1]} grid to {path}')
        return
    # One batch at a time: mapping, synthesis, PNGs; nothing accumulates across batches.
    seed_iter = iter(seeds)
    pairs = ((os.path.join(outdir, f'seed{next(seed_iter):04d}.png'), img)
             for wb in iter_seed_ws(G, seeds, c, psi, cutoff, device, batch)
             for img in synthesize_ws(G, wb, noise_mode, batch))
    n = save_all(pairs, 'images')
    click.echo(f'Saved {n} images to {outdir}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
