#!/usr/bin/env python
"""Train a StyleGAN2 network on limited data (APA, ADA, DiffAugment).

Examples:

\b
  # Quick start on the built-in demo dataset (CPU is fine, a few minutes):
  python train.py --outdir=runs --data=demo --cfg=cpu

\b
  # APA (the default method) on a few thousand images, one GPU:
  python train.py --outdir=runs --data=datasets/afhqcat-5k-256x256.zip --gpus=1 --cfg=paper256 --mirror=1

\b
  # APA together with ADA (shared p) and DiffAugment, on 8 GPUs:
  python train.py --outdir=runs --data=ffhq5k.zip --gpus=8 --cfg=paper256 --aug=apa \\
      --with-dataaug=1 --diffaugment=color,translation,cutout

\b
  # Continue a run exactly where its last snapshot left it:
  python train.py --outdir=runs --data=ffhq5k.zip --gpus=8 --cfg=paper256 --resume=runs/00003-ffhq5k-paper256-apa

The options become a config tree (training.presets.make_config), saved as
training_options.json in a new run directory <outdir>/<NNNNN>-<description>;
--dry-run prints the tree and exits. See docs/training.md for every option.
"""

import glob
import json
import math
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

import click
import torch

import dnnlib
from torch_utils import cli, distributed
from training import methods, presets, training_state

ADA_PIPES = ('blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc')
STATE_GLOB = f'{training_state.STATE_PREFIX}*{training_state.STATE_SUFFIX}'
OPTIONS_FILE = 'training_options.json'

# ---------------------------------------------------------------------------------------
# Work of one process.


class TrainingStopped(click.ClickException):
    """A run stopped on an error its message explains (already written to log.txt)."""


def _user_errors() -> tuple:
    """Errors of a run that one line explains (a full disk, a damaged image or state, ...)."""
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    from training import dataset, training_loop  # pylint: disable=import-outside-toplevel
    return (OSError, dataset.DatasetError, training_state.TrainingStateError, netfile.NetworkFileError,
            training_loop.NonFiniteError)


def error_line(e: BaseException) -> str:
    """One line for an error of a run; a DataLoader worker's wrapped traceback is cut to
    its last line (the original error)."""
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    text = str(e)
    if 'Original Traceback' in text:
        last = [ln for ln in text.splitlines() if ln.strip()][-1]
        return ' '.join(last.split(':', 1)[-1].split()) if ':' in last else ' '.join(last.split())
    return netfile.error_line(e)


def _log_error(run_dir: Optional[str], line: str) -> None:
    if not run_dir:
        return
    try:
        with open(os.path.join(run_dir, 'log.txt'), 'a', encoding='utf-8') as f:
            f.write(f'Error: {line}\n')
    except OSError:
        pass  # The disk may be the problem; the line still reaches the terminal.


def subprocess_fn(rank: int, device: torch.device, c: Dict[str, Any]) -> None:
    """Trains on one process (the process group, if any, is already joined)."""
    # Imported here so `--help` and `--dry-run` stay fast.
    from training import training_loop  # pylint: disable=import-outside-toplevel

    world_size = int(c['num_gpus'])
    # Processes on one CPU share its cores instead of oversubscribing them (unless the
    # user fixed the thread count).
    if device.type == 'cpu' and world_size > 1 and not os.environ.get('OMP_NUM_THREADS'):
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    local_rank = device.index if device.type == 'cuda' else None
    try:
        training_loop.training_loop(rank=rank, local_rank=local_rank, **c)
    except _user_errors() as e:
        line = error_line(e)
        if rank == 0:
            _log_error(c.get('run_dir'), line)
        if world_size == 1:
            raise TrainingStopped(line) from None
        # A spawned worker: one line, then leave (the launcher reports the exit).
        print(f'Error (process {rank}): {line}', file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def _torchrun_fn(rank: int, device: torch.device, c: dnnlib.EasyDict, outdir: str, desc: str) -> None:
    """Under torchrun (the group is joined): rank 0 creates the run directory, then all train."""
    run_dir = make_run_dir(outdir, desc, c) if rank == 0 else None
    c.run_dir = distributed.broadcast_object(run_dir)
    subprocess_fn(rank, device, c)


# ---------------------------------------------------------------------------------------
# Run directory and options file.


def next_run_dir(outdir: str, desc: str) -> str:
    """`<outdir>/<NNNNN>-<desc>` with NNNNN one above the highest existing run number."""
    ids = []
    if os.path.isdir(outdir):
        for name in os.listdir(outdir):
            m = re.match(r'^(\d+)-', name)
            if m and os.path.isdir(os.path.join(outdir, name)):
                ids.append(int(m.group(1)))
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes `obj` as indented JSON to a temporary file beside `path`, then renames it."""
    with dnnlib.atomic_write(path, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')


def make_run_dir(outdir: str, desc: str, c: dnnlib.EasyDict) -> str:
    """Creates a fresh run directory and saves the options in it.

    Two runs started at the same moment may pick the same number; os.makedirs without
    exist_ok makes the second one take the next number instead of sharing a directory.
    """
    try:
        os.makedirs(outdir, exist_ok=True)
    except FileExistsError:
        raise click.BadParameter(f'{outdir} exists and is not a directory', param_hint='--outdir') from None
    except OSError as e:
        raise click.BadParameter(f'cannot create {outdir}: {e.strerror or e}', param_hint='--outdir') from None
    for _ in range(100):
        run_dir = next_run_dir(outdir, desc)
        try:
            os.makedirs(run_dir)
            break
        except FileExistsError:
            continue
        except OSError as e:
            raise click.BadParameter(f'cannot create a run directory in {outdir}: {e.strerror or e}',
                                     param_hint='--outdir') from None
    else:
        raise click.ClickException(f'could not create a new run directory in {outdir}')
    c.run_dir = run_dir
    try:
        write_json_atomic(os.path.join(run_dir, OPTIONS_FILE), presets.to_plain(c))
    except OSError as e:
        if not os.listdir(run_dir):
            os.rmdir(run_dir)  # Leave nothing behind for a run that never started.
        raise click.BadParameter(f'cannot write in {run_dir}: {e.strerror or e}', param_hint='--outdir') from None
    return run_dir


# ---------------------------------------------------------------------------------------
# Resume targets.


def find_training_state(run_dir: str) -> Optional[str]:
    """The newest training-state file of a run directory, or None when it holds none.

    The loop's own lookup (`training_state.find_training_state`: the
    `training-state-latest.json` pointer, else the highest kimg), so --resume picks the file
    the loop would.
    """
    try:
        return training_state.find_training_state(run_dir)
    except training_state.TrainingStateError:
        return None


def resolve_resume(resume: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """Sorts a `--resume` value into (network pickle, training-state file).

    Args:
        resume: A network pickle (path or URL), a run directory, or a training-state file.

    Returns:
        (resume_pkl, resume_state); at most one is set.

    Raises:
        click.BadParameter: The path does not exist or holds nothing to resume from.
    """
    if resume is None:
        return None, None
    if dnnlib.is_url(resume):
        return resume, None
    if os.path.isdir(resume):
        state = find_training_state(resume)
        if state is None:
            snaps = sorted(glob.glob(os.path.join(resume, 'network-snapshot-*.pkl')))
            hint = (f'; to start from its last network pickle (weights only), pass --resume={snaps[-1]}'
                    if snaps else '')
            raise click.BadParameter(f'{resume} holds no training state ({STATE_GLOB}){hint}', param_hint='--resume')
        return None, state
    if not os.path.isfile(resume):
        raise click.BadParameter(f'{resume} does not exist (give a network pickle, a run directory or a '
                                 f'training-state file)', param_hint='--resume')
    if resume.endswith('.pt'):
        return None, resume
    return resume, None


# Parts of the tree a training state must agree with (its tensors have these shapes).
_STRUCTURAL_KEYS = ('G_kwargs', 'D_kwargs', 'augment_kwargs', 'real_transform_kwargs', 'heads_kwargs')


def _diff(a: Any, b: Any, prefix: str = '') -> List[str]:
    """Dotted names where two plain trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f'{prefix}{k}.')
        return out
    return [] if a == b else [f'{prefix[:-1]}: {a!r} -> {b!r}']


def check_resume_state(state_path: str, c: dnnlib.EasyDict) -> List[str]:
    """Compares the new options with those saved beside a training state.

    Returns:
        Warnings for settings that changed but can continue (loss, lr, seed, duration...).

    Raises:
        click.BadParameter: The networks or methods differ, so the state cannot load.
    """
    options_path = os.path.join(os.path.dirname(os.path.abspath(state_path)), OPTIONS_FILE)
    if not os.path.isfile(options_path):
        return []
    try:
        with open(options_path) as f:
            old = json.load(f)
    except (OSError, ValueError, RecursionError):
        return [f'cannot read {options_path}; not checking that the options match the resumed run']
    if not isinstance(old, dict):
        return [f'{options_path} is not a dict of options; not checking that the options match the resumed run']
    new = presets.to_plain(c)
    structural = []
    for key in _STRUCTURAL_KEYS:
        structural += _diff(old.get(key), new.get(key), f'{key}.')
    old_res = (old.get('training_set_kwargs') or {}).get('resolution')
    if old_res != new['training_set_kwargs']['resolution']:
        structural.append(f'training_set_kwargs.resolution: {old_res!r} -> {new["training_set_kwargs"]["resolution"]!r}')
    if structural:
        raise click.BadParameter(
            f'the run in {os.path.dirname(options_path)} was trained with different networks or methods, so its '
            f'state cannot continue with these options: ' + '; '.join(structural[:6])
            + '. Use the same --cfg and method options, or start from its network pickle instead.',
            param_hint='--resume')
    ignore = set(_STRUCTURAL_KEYS) | {'run_dir', 'resume_state', 'resume_pkl', 'resume_kimg', 'total_kimg'}
    changed = []
    for key in sorted(set(old) | set(new)):
        if key not in ignore:
            changed += _diff(old.get(key), new.get(key), f'{key}.')
    return changed


def check_resume_state_file(resume: str) -> Tuple[str, List[str]]:
    """The state file to resume from, checked before any run directory exists: intact (a
    damaged newest state of a run directory gives way to the newest intact one, with a
    warning), and readable by the weights-only reader (memory-mapped: nothing is copied).

    Raises:
        click.BadParameter: naming the file and the problem.
    """
    try:
        path, warnings = training_state.find_intact_training_state(resume)
    except training_state.TrainingStateError as e:
        raise click.BadParameter(str(e), param_hint='--resume') from None
    try:
        state = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception as e:  # pylint: disable=broad-except
        # Never follow torch's advice to retry with weights_only=False: that runs the file.
        first = [ln for ln in str(e).splitlines() if ln.strip() and 'weights_only' not in ln]
        reason = (first[0].strip()[:200] if first else type(e).__name__)
        raise click.BadParameter(f'training state {path} was refused by the weights-only reader ({reason}); it is '
                                 f'damaged or not from this framework, and was not loaded any other way',
                                 param_hint='--resume') from None
    if not isinstance(state, dict) or not isinstance(state.get('progress'), dict) \
            or not isinstance(state.get('modules'), dict):
        raise click.BadParameter(f'{path} is not a training state of this framework', param_hint='--resume')
    bad = [k for k in ('cur_nimg', 'cur_tick', 'batch_idx')
           if type(state['progress'].get(k)) is not int or state['progress'][k] < 0]
    if bad:
        raise click.BadParameter(f'{path}: progress counters {", ".join(bad)} are not non-negative integers; the '
                                 f'state is damaged or not from this framework', param_hint='--resume')
    del state
    return path, warnings


def _tensor_shapes(module: torch.nn.Module) -> Dict[str, Tuple[int, ...]]:
    from torch_utils import misc  # pylint: disable=import-outside-toplevel
    return {name: tuple(t.shape) for name, t in misc.named_params_and_buffers(module)}


def describe_transfer(name: str, src: torch.nn.Module, dst: torch.nn.Module) -> dnnlib.EasyDict:
    """What copying `src` into `dst` by tensor name (as a network-pickle resume does) copies."""
    have, want = _tensor_shapes(src), _tensor_shapes(dst)
    copied = [k for k in want if have.get(k) == want[k]]
    mismatched = [k for k in want if k in have and have[k] != want[k]]
    fresh = [k for k in want if k not in have]
    unused = [k for k in have if k not in want]
    total = sum(math.prod(s) for s in want.values()) or 1
    frac = sum(math.prod(want[k]) for k in copied) / total
    return dnnlib.EasyDict(name=name, copied=copied, mismatched=mismatched, fresh=fresh, unused=unused,
                           fraction=frac, num=len(want))


def _names(names: List[str], limit: int = 4) -> str:
    return ', '.join(names[:limit]) + (f', ... ({len(names) - limit} more)' if len(names) > limit else '')


def check_resume_pkl(resume_pkl: str, c: dnnlib.EasyDict, info: dnnlib.EasyDict, allow_partial: bool) -> List[str]:
    """Loads a network-pickle --resume before any run directory exists and says what of it
    fits this run's networks.

    Returns:
        Notes for a partial fit (tensors copied, tensors that start fresh, tensors unused).

    Raises:
        click.BadParameter: the file is refused or damaged, holds no networks, has tensors of
            other shapes under the same names, or (without allow_partial) less than half of
            G's or D's weights fit.
    """
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    try:
        data = netfile.load_network(resume_pkl, keys=('G', 'D', 'G_ema'))
    except (OSError, netfile.NetworkFileError) as e:
        raise click.BadParameter(netfile.error_line(e), param_hint='--resume') from None
    nets = {k: v for k, v in data.items() if isinstance(v, torch.nn.Module)} if isinstance(data, dict) else {}
    if not nets:
        raise click.BadParameter(f'{resume_pkl} holds none of the networks G, D, G_ema', param_hint='--resume')
    common = dict(c_dim=info.label_dim if c.training_set_kwargs.get('use_labels') else 0,
                  img_resolution=info.resolution, img_channels=info.num_channels)
    try:
        new = dict(G=dnnlib.construct_class_by_name(**c.G_kwargs, **common),
                   D=dnnlib.construct_class_by_name(**c.D_kwargs, **common))
    except Exception as e:  # pylint: disable=broad-except
        raise click.ClickException(f'cannot build the networks of this run: {type(e).__name__}: {e}') from None
    new['G_ema'] = new['G']
    reports = [describe_transfer(k, nets[k], new[k]) for k in ('G', 'D', 'G_ema') if k in nets]
    old_res = getattr(nets.get('G_ema', nets.get('G')), 'img_resolution', None)
    where = (f'{resume_pkl} ({old_res}x{old_res}) into this {info.resolution}x{info.resolution} run'
             if old_res is not None and old_res != info.resolution else resume_pkl)
    for r in reports:
        if r.mismatched:
            raise click.BadParameter(f'{where}: {len(r.mismatched)} tensors of {r.name} have other shapes than this '
                                     f'run\'s ({_names(r.mismatched)}); the networks differ (--cbase, --cmax, --map, '
                                     f'--cond or the dataset resolution)', param_hint='--resume')
    notes = []
    for r in reports:
        if r.fresh or r.unused:
            notes.append(f'--resume: {r.name} copies {len(r.copied)} of its {r.num} tensors ({r.fraction:.0%} of its '
                         f'weights) from {where}'
                         + (f'; {len(r.fresh)} start fresh ({_names(r.fresh)})' if r.fresh else '')
                         + (f'; {len(r.unused)} of the file are unused ({_names(r.unused)})' if r.unused else ''))
    weak = [r for r in reports if r.name in ('G', 'D') and r.fraction < 0.5]
    if weak and not allow_partial:
        raise click.BadParameter(
            f'{where}: only {", ".join(f"{r.fraction:.0%} of {r.name}" for r in weak)}\'s weights fit this run, so '
            f'little would be transferred; pass --allow-partial-resume=1 to start from it anyway',
            param_hint='--resume')
    return notes


# ---------------------------------------------------------------------------------------
# Dataset facts.


def inspect_dataset(path: str, flag: str, resolution: Optional[int] = None) -> dnnlib.EasyDict:
    """Opens a dataset once to read what the config needs: name, resolution, size, labels."""
    from training.dataset import ImageFolderDataset  # pylint: disable=import-outside-toplevel
    try:
        ds = ImageFolderDataset(path=path, resolution=resolution, use_labels=False)
    except (OSError, ValueError) as e:
        raise click.BadParameter(str(e), param_hint=flag)
    info = dnnlib.EasyDict(name=ds.name, resolution=ds.resolution, num_images=len(ds),
                           num_channels=ds.num_channels, has_labels=False, label_dim=0, label_error=None)
    ds.close()
    try:
        labelled = ImageFolderDataset(path=path, use_labels=True)
        info.has_labels = labelled.has_labels
        info.label_dim = labelled.label_dim if labelled.has_labels else 0
        labelled.close()
    except (OSError, ValueError) as e:
        info.label_error = str(e)
    return info


def _resolve_data(value: str, flag: str) -> str:
    from training import named_datasets  # pylint: disable=import-outside-toplevel
    from training.dataset import resolve_data_path  # pylint: disable=import-outside-toplevel
    try:
        value = named_datasets.resolve_data_source(value, flag)
        return resolve_data_path(value)
    except (OSError, ValueError, RuntimeError) as e:
        raise click.BadParameter(str(e).replace('--data ', ''), param_hint=flag)


# ---------------------------------------------------------------------------------------
# Command line.

# The shared conventions of every tool (torch_utils/cli.py).
_BOOL = cli.BOOL
FiniteFloatRange = cli.FiniteFloatRange


def method_options(fn):
    """Adds every registered method's options (training/methods.py), each declared once there."""
    for opt in reversed(methods.all_options()):
        fn = opt.click_option()(fn)
    return fn


class MethodGroupedCommand(click.Command):
    """--help lists the core options first, then each method's options under its title."""

    def format_options(self, ctx, formatter):
        groups = {}
        for module in methods.method_modules():
            for opt in module.OPTIONS:
                groups[opt.dest] = module.TITLE
        sections = {}
        core = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            title = groups.get(param.name)
            (sections.setdefault(title, []) if title else core).append(record)
        with formatter.section('Options'):
            formatter.write_dl(core)
        for module in methods.method_modules():
            if module.TITLE in sections:
                with formatter.section(module.TITLE):
                    formatter.write_dl(sections.pop(module.TITLE))


MAX_BATCH = 1 << 16     # Images per step; far above any sensible setting, far below a hang.
MAX_KIMG = 1e9          # Ten thousand times a long StyleGAN2 run.


@click.command(cls=MethodGroupedCommand, context_settings=dict(max_content_width=120))
# Required.
@click.option('--outdir', metavar='DIR', required=True, help='Where to make the run directory')
@click.option('--data', metavar='ZIP|DIR|demo', default=None,
              help='Training data: a dataset zip, a folder of images, or "demo" (built in, no download)  '
                   '[required unless --rerun]')
@click.option('--desc', metavar='TEXT', default=None, help='Extra text at the end of the run-directory name')
@click.option('--rerun', metavar='JSON', default=None,
              help="Train again with the config tree of an earlier run's training_options.json (a new run "
                   "directory; only --outdir, --desc and --dry-run may be given with it)")
@click.option('--gpus', type=click.IntRange(min=1, max=1024), default=None,
              help='Number of processes: GPUs, or CPU processes without GPUs  [default: 1; WORLD_SIZE under torchrun]')
# Base configuration.
@click.option('--cfg', type=click.Choice(presets.CFG_NAMES), default='auto', show_default=True,
              help='Base configuration (see docs/training.md)')
@click.option('--batch', type=click.IntRange(min=1, max=MAX_BATCH), default=None, help='Total batch size  [default: preset]')
@click.option('--batch-gpu', type=click.IntRange(min=1, max=MAX_BATCH), default=None,
              help='Images per process per pass; smaller values accumulate gradients  [default: batch/gpus]')
@click.option('--gamma', type=FiniteFloatRange(min=0), default=None, help='R1 regularisation weight  [default: preset]')
@click.option('--kimg', type=FiniteFloatRange(min=0, max=MAX_KIMG, min_open=True), default=None,
              help='Training duration in thousands of images  [default: preset]')
@click.option('--tick', type=FiniteFloatRange(min=0, min_open=True), default=None,
              help='Progress-line interval in kimg  [default: 4; cpu preset: 1]')
@click.option('--snap', type=click.IntRange(min=1), default=None,
              help='Snapshot (network, samples, state, metrics) interval in ticks  [default: 50]')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Random seed')
# Dataset.
@click.option('--cond', **_BOOL, help='Train a conditional model on the dataset labels')
@click.option('--subset', type=click.IntRange(min=1), default=None, help='Train on a random subset of N images')
@click.option('--mirror', **_BOOL, help='Add x-flipped copies of the images')
@click.option('--metricdata', metavar='ZIP|DIR', default=None,
              help='Dataset the metrics compare against  [default: the full training set]')
@click.option('--metrics', metavar='LIST', default=None,
              help='Metrics at each snapshot, comma-separated, or "none"  [default: fid50k_full; cpu: none]')
@click.option('--detector', 'detector_values', metavar='[ROLE=]PATH', multiple=True,
              help='Replacement feature network for the metrics (TorchScript or network file, or "digits" for '
                   'the shipped digits detector: a domain FID on the demo data); ROLE is inception or vgg16. '
                   'Repeatable')
@click.option('--detector-dir', metavar='DIR', default=None,
              help='Folder holding the official detector files (checked before the cache and the download)')
@method_options
# Resume and transfer learning.
@click.option('--resume', metavar='PKL|DIR|PT', default=None,
              help='Network pickle (weights and augment p), or run directory / training-state file (exact continuation)')
@click.option('--resume-kimg', type=FiniteFloatRange(min=0, max=MAX_KIMG), default=0, show_default=True,
              help='With a network-pickle --resume: the kimg the counter starts from')
@click.option('--freezed', type=click.IntRange(min=0), default=0, show_default=True,
              help='Freeze the first N layers of D (FreezeD)')
@click.option('--resume-new-methods', **_BOOL,
              help='With a run directory or state --resume, let methods the state does not hold start fresh '
                   '(e.g. adding --lecam to a running run)')
@click.option('--allow-partial-resume', **_BOOL,
              help='With a network-pickle --resume: start even when less than half of G\'s or D\'s weights fit this run')
# Networks (smaller values for quick experiments).
@click.option('--cbase', type=click.IntRange(min=1, max=1 << 20), default=None, help='Channel base (channels = cbase / res)  [default: preset]')
@click.option('--cmax', type=click.IntRange(min=1, max=1 << 14), default=None, help='Maximum channels per layer  [default: preset]')
@click.option('--map', 'map_layers', type=click.IntRange(min=1, max=64), default=None, help='Mapping network depth  [default: preset]')
@click.option('--mbstd-group', type=click.IntRange(min=1), default=None, help='Minibatch-std group size  [default: preset]')
@click.option('--glr', type=FiniteFloatRange(min=0, min_open=True), default=None, help='G learning rate  [default: preset]')
@click.option('--dlr', type=FiniteFloatRange(min=0, min_open=True), default=None, help='D learning rate  [default: preset]')
@click.option('--pl-weight', type=FiniteFloatRange(min=0), default=None,
              help='Path length regularisation weight, 0 = off  [default: preset; 2, cifar and cpu: 0]')
@click.option('--style-mixing', type=click.FloatRange(min=0, max=1), default=None,
              help='Style mixing probability  [default: preset; 0.9, cifar and cpu: 0]')
# Performance.
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True,
              help='Where to train (auto: CUDA when available)')
@click.option('--fp32', **_BOOL, help='Disable mixed precision (always off on CPUs)')
@click.option('--nhwc', **_BOOL, help='Channels-last memory layout in the float16 layers')
@click.option('--allow-tf32', **_BOOL, help='Allow TF32 matrix multiplies and convolutions on Ampere and later')
@click.option('--cudnn-benchmark', type=bool, default=True, show_default=True, metavar='BOOL',
              help='cuDNN benchmark mode (picks the fastest convolution algorithms)')
@click.option('--compile', 'compile_nets', **_BOOL,
              help='torch.compile G and D for the main phases (the regularisers run eagerly); not bit-equal to eager')
@click.option('--nobench', **_BOOL, hidden=True, help='The established spelling of --cudnn-benchmark=0')
@click.option('--workers', type=click.IntRange(min=0, max=256), default=None,
              help='DataLoader worker processes (0 = load in the training process)  [default: 3; cpu: 0]')
@click.option('--dry-run', is_flag=True, help='Print the config tree and exit')
def main(**opts):
    """Train a StyleGAN2 network on limited data with APA, ADA and/or DiffAugment.

    \b
    Examples:
      python train.py --outdir=runs --data=demo --cfg=cpu
      python train.py --outdir=runs --data=afhqcat.zip --gpus=1 --cfg=paper256 --mirror=1
      python train.py --outdir=runs --data=ffhq5k.zip --gpus=8 --cfg=paper256 --with-dataaug=1
      python train.py --outdir=runs --data=ffhq5k.zip --gpus=8 --cfg=paper256 --resume=runs/00003-ffhq5k-paper256-apa

    See docs/training.md for every option, the presets and how the methods combine.
    """
    opts = dnnlib.EasyDict(opts)
    outdir = opts.pop('outdir')
    dry_run = opts.pop('dry_run')
    extra_desc = opts.pop('desc')
    if extra_desc is not None and not re.fullmatch(r'[A-Za-z0-9_.+=-]+', extra_desc):
        raise click.BadParameter(f'{extra_desc!r}: use letters, digits and _ . + = - only (it becomes part of a '
                                 f'directory name)', param_hint='--desc')
    rerun = opts.pop('rerun')
    if rerun is not None:
        return _rerun(rerun, opts, outdir, extra_desc, dry_run)
    if opts.data is None:
        raise click.UsageError('Missing option --data (or give --rerun with a training_options.json).')
    benchmark = opts.pop('cudnn_benchmark')
    opts.nobench = bool(opts.nobench) or not benchmark
    detector_dir = opts.pop('detector_dir')

    # Processes and devices: torchrun's variables win over --gpus.
    try:
        env = distributed.torchrun_env()
        device_type = distributed.resolve_device_type(opts.pop('device'))
    except distributed.DistributedError as e:
        raise click.BadParameter(str(e), param_hint='--device') from e
    if env is not None:
        if opts.gpus is not None and opts.gpus != env.world_size:
            raise click.BadParameter(f'{opts.gpus} disagrees with WORLD_SIZE={env.world_size} set by the launcher; '
                                     f'leave --gpus out under torchrun', param_hint='--gpus')
        opts.gpus = env.world_size
    opts.gpus = opts.gpus or 1
    try:
        local = None
        if env is not None:
            local = int(os.environ.get('LOCAL_WORLD_SIZE', env.world_size))
        distributed.check_world(device_type, opts.gpus, local)
    except distributed.DistributedError as e:
        raise click.BadParameter(str(e), param_hint='--gpus') from e

    # Data.
    data_path = _resolve_data(opts.pop('data'), '--data')
    info = inspect_dataset(data_path, '--data')
    if opts.cond and not info.has_labels and info.label_error:
        raise click.BadParameter(info.label_error, param_hint='--cond')
    metricdata = opts.pop('metricdata')
    metricdata_path = None
    if metricdata is not None:
        metricdata_path = _resolve_data(metricdata, '--metricdata')
        inspect_dataset(metricdata_path, '--metricdata', resolution=info.resolution)
    try:
        metrics = presets.parse_metrics(opts.pop('metrics'))
    except presets.ConfigError as e:
        raise click.BadParameter(e.message, param_hint=e.flag) from e
    metric_detector = _check_detector(opts.pop('detector_values'))

    # Resume target.
    allow_partial = opts.pop('allow_partial_resume')
    resume_arg = opts.pop('resume')
    resume_pkl, resume_state = resolve_resume(resume_arg)
    resume_notes = []
    if resume_state is not None:
        # A run directory may fall back to an older intact state; a file given is checked as is.
        resume_state, resume_notes = check_resume_state_file(resume_arg if os.path.isdir(resume_arg) else resume_state)

    # The config tree (pure: everything above was the file system's part).
    try:
        c, desc = presets.build(data_path=data_path, data_name=info.name, resolution=info.resolution,
                                num_images=info.num_images, has_labels=info.has_labels, metrics=metrics,
                                metricdata_path=metricdata_path, resume_pkl=resume_pkl, resume_state=resume_state,
                                device=device_type, **opts)
    except presets.ConfigError as e:
        raise click.BadParameter(e.message, param_hint=e.flag) from e
    c.metric_detector = metric_detector
    c.metric_detector_dir = detector_dir
    if extra_desc:
        desc += f'-{extra_desc}'
    rank0 = env is None or env.rank == 0
    if resume_pkl is not None:
        resume_notes += check_resume_pkl(resume_pkl, c, info, allow_partial)
    for line in resume_notes:
        if rank0:
            click.echo(f'Warning: {line}', err=True)
    if resume_state is not None:
        for line in check_resume_state(resume_state, c):
            if rank0:
                click.echo(f'Note: --resume: setting changed since the resumed run: {line}', err=True)

    if dry_run:
        if rank0:
            c.run_dir = next_run_dir(outdir, desc)
            click.echo(json.dumps(presets.to_plain(c), indent=2))
            click.echo('Dry run; exiting.')
        return

    # Every detector the metrics need is found (or downloaded) now, not at the first
    # snapshot; under torchrun rank 0 fetches it and the others find it in the cache later.
    if rank0:
        check_metric_detectors(c.metrics, metric_detector, detector_dir)

    if env is not None:
        distributed.run_worker(_torchrun_fn, env.rank, env.world_size, device_type, local_rank=env.local_rank,
                               master_addr=env.master_addr, master_port=env.master_port, args=(c, outdir, desc))
        return
    run_dir = make_run_dir(outdir, desc, c)
    _print_summary(c, info, run_dir)
    try:
        distributed.launch(subprocess_fn, c.num_gpus, device_type, args=(dict(c),))
    except torch.multiprocessing.ProcessExitedException as e:
        # The worker printed its one line (and rank 0 wrote it to log.txt).
        raise click.ClickException(f'training stopped: process {e.error_index} exited with code {e.exit_code}; '
                                   f'see its message above and {os.path.join(run_dir, "log.txt")}') from None


def check_metric_detectors(metric_names, spec: Optional[Dict[str, str]], detector_dir: Optional[str]) -> None:
    """Finds or downloads the official detector of every role the metrics use that --detector
    does not replace; a missing one is a --metrics error saying where to put the file."""
    if not metric_names:
        return
    from metrics import detectors, metric_main  # pylint: disable=import-outside-toplevel
    roles = sorted({role for name in metric_names for role in metric_main.detector_roles(name)})
    for role in roles:
        if spec is not None and spec.get(role):
            continue
        try:
            detectors.ensure_official_detector(role, detector_dir)
        except detectors.DetectorNotFoundError as e:
            raise click.BadParameter(f'{e}\n  (or train without these metrics: --metrics=none)',
                                     param_hint='--metrics') from None


def _rerun(path: str, opts: Dict[str, Any], outdir: str, extra_desc: Optional[str], dry_run: bool) -> None:
    """Trains with the config tree of an earlier run's training_options.json in a new run directory."""
    defaults = {p.name: p.default for p in main.params}
    given = sorted(k for k, v in opts.items() if v not in (defaults.get(k), None, ()) and k in defaults)
    if given:
        raise click.BadParameter(f'--rerun repeats a run as it was; drop --{given[0].replace("_", "-")} (edit a '
                                 f'copy of the JSON file to change a setting)', param_hint='--rerun')
    try:
        with open(path, encoding='utf-8') as f:
            tree = json.load(f)
    except (OSError, ValueError) as e:
        raise click.BadParameter(f'cannot read {path}: {e}', param_hint='--rerun') from None
    needed = ('training_set_kwargs', 'G_kwargs', 'D_kwargs', 'num_gpus', 'batch_size', 'total_kimg')
    missing = [k for k in needed if not isinstance(tree, dict) or k not in tree]
    if missing:
        raise click.BadParameter(f'{path} is not a training_options.json (it lacks {", ".join(missing)})',
                                 param_hint='--rerun')
    c = dnnlib.EasyDict(tree)
    old_dir = os.path.basename(os.path.dirname(os.path.abspath(path))) if c.get('run_dir') is None else \
        os.path.basename(os.path.normpath(c.run_dir))
    desc = re.sub(r'^\d+-', '', old_dir) or 'rerun'
    desc += '-rerun' + (f'-{extra_desc}' if extra_desc else '')
    c.pop('run_dir', None)
    device_type = c.get('device', 'cpu')
    try:
        distributed.check_world(device_type, int(c.num_gpus), None)
    except distributed.DistributedError as e:
        raise click.BadParameter(f'{path}: {e}', param_hint='--rerun') from e
    if dry_run:
        c.run_dir = next_run_dir(outdir, desc)
        click.echo(json.dumps(presets.to_plain(c), indent=2))
        click.echo('Dry run; exiting.')
        return
    check_metric_detectors(c.get('metrics') or [], c.get('metric_detector'), c.get('metric_detector_dir'))
    run_dir = make_run_dir(outdir, desc, c)
    click.echo(f'Rerunning {path} in {run_dir}')
    distributed.launch(subprocess_fn, c.num_gpus, device_type, args=(dict(c),))


def _check_detector(values) -> Optional[Dict[str, str]]:
    """The --detector spec ({role: path}), with every file checked now, not at the first snapshot."""
    from metrics import detectors, digits_detector  # pylint: disable=import-outside-toplevel
    spec = detectors.parse_detector_option(values)
    if spec is None:
        return None
    spec = {role: digits_detector.resolve(path) for role, path in spec.items()}
    for path in spec.values():
        if not os.path.isfile(path):
            raise click.BadParameter(f'detector file "{path}" does not exist', param_hint='--detector')
    return spec


def _print_summary(c: dnnlib.EasyDict, info: dnnlib.EasyDict, run_dir: str) -> None:
    ts = c.training_set_kwargs
    size = min(info.num_images, ts.max_size or info.num_images) * (2 if ts.xflip else 1)
    names = []
    transforms = c.real_transform_kwargs or []
    for t in ([transforms] if isinstance(transforms, dict) else transforms):
        name = t['class_name'].rsplit('.', 1)[-1]
        names.append('APA' + (f' (fixed p={t["p"]:g})' if not c.controllers else '') if name == 'PseudoAugment' else name)
    for aug in (c.augment_kwargs or {}).get('augments', []):
        names.append(aug['class_name'].rsplit('.', 1)[-1])
    for head in c.get('heads_kwargs') or []:
        names.append(head['class_name'].rsplit('.', 1)[-1])
    for ctrl in c.get('controllers') or []:
        if ctrl['class_name'] != presets.CONTROLLER_CLASS:   # Another rule than the adaptive one.
            names.append(f'{ctrl["class_name"].rsplit(".", 1)[-1]} ({ctrl["name"]} p)')
    lines = [
        ('Output directory', run_dir),
        ('Training data', ts.path),
        ('Training duration', f'{c.total_kimg:g} kimg'),
        ('Processes', f'{c.num_gpus} ({c.device})'),
        ('Batch', f'{c.batch_size} ({c.batch_gpu} per process per pass)'),
        ('Number of images', size),
        ('Image resolution', ts.resolution),
        ('Conditional model', ts.use_labels),
        ('Dataset x-flips', ts.xflip),
        ('Methods', ', '.join(names) or 'none'),
        ('Resume', c.resume_state or c.resume_pkl or 'no'),
    ]
    click.echo('\n'.join(f'{k + ":":<20} {v}' for k, v in lines) + '\n')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
