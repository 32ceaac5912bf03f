#!/usr/bin/env python
"""Compute quality metrics (FID, KID, precision/recall, IS, PPL) of a network file.

Examples:

\b
  # FID against the full dataset, on 8 GPUs:
  python calc_metrics.py --network=run/network-snapshot-001000.pkl --metrics=fid50k_full \\
      --metricdata=datasets/ffhq-256x256.zip --mirror=1 --gpus=8
\b
  # Several metrics, and a CLIP-feature FID with a TorchScript image encoder:
  python calc_metrics.py --network=net.pkl --metrics=fid50k_full,kid50k_full,pr50k3_full
  python calc_metrics.py --network=net.pkl --metrics=fid10k_full --detector=clip-vit-b32.pt

\b
  # Under torchrun (one process per GPU, here or on several machines), like train.py:
  torchrun --nproc-per-node=8 calc_metrics.py --network=net.pkl --metrics=fid50k_full

Results are printed as JSON lines and, for a local network file, appended to
metric-<name>.jsonl beside it.
"""

import os
from typing import Any, Dict, List, Optional

import click
import torch

import dnnlib
from metrics import detectors, metric_main
from torch_utils import cli, distributed, host_memory

# ---------------------------------------------------------------------------------------
# Work of one process.


def _print0(rank: int, *args) -> None:
    if rank == 0:
        print(*args, flush=True)


def subprocess_fn(rank: int, device: torch.device, args: dnnlib.EasyDict) -> None:
    """Computes every requested metric on one rank; rank 0 prints and records the results."""
    if device.type == 'cpu':
        host_memory.keep_freed_host_memory()  # same bits, fewer page faults per batch
        # Ranks on the CPU share its cores instead of oversubscribing them (unless the user
        # fixed the thread count; with equal counts, N ranks reproduce 1 rank bit for bit).
        if not os.environ.get('OMP_NUM_THREADS'):
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.num_gpus))

    if args.get('device_index') is not None and device.type == 'cuda':
        device = torch.device('cuda', args.device_index)  # --device=cuda:N with one process.
        torch.cuda.set_device(device)
    G = args.G.to(device)
    for metric in args.metrics:
        _print0(rank, f'Calculating {metric}...')
        result = metric_main.calc_metric(
            metric, G=G, dataset_kwargs=args.dataset_kwargs, num_gpus=args.num_gpus, rank=rank,
            device=device, progress=(args.verbose and rank == 0), cache=args.cache,
            detector=args.detector, detector_dir=args.detector_dir, seed=args.seed,
            batch_size=args.batch)
        if rank == 0:
            metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
    _print0(rank, 'Done.' if args.verbose else '')


# ---------------------------------------------------------------------------------------
# Options.

def parse_metric_list(value: str) -> List[str]:
    """Splits 'a,b,c' and checks every name; raises ValueError naming the bad one."""
    names = [m.strip() for m in value.split(',') if m.strip()]
    if not names:
        raise ValueError('no metric given')
    for name in names:
        metric_main.get_metric_fn(name)  # Raises with the list of valid names.
    return names


def dataset_kwargs_for(metricdata: Optional[str], network: Dict[str, Any], G, mirror: Optional[bool],
                       verbose: bool = True) -> dnnlib.EasyDict:
    """Dataset options of the metrics: --metricdata, else the training set recorded in the file.

    When falling back to the training set, a `max_size` subset limit is dropped: limited-data
    runs are scored against the full dataset.
    """
    from training import dataset as dataset_module  # pylint: disable=import-outside-toplevel
    if metricdata is not None:
        from training import named_datasets  # pylint: disable=import-outside-toplevel
        try:
            path = dataset_module.resolve_data_path(named_datasets.resolve_data_source(metricdata, '--metricdata'))
        except ValueError as e:
            raise click.BadParameter(str(e).replace('--data', '--metricdata'), param_hint='--metricdata')
        kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path)
    elif network.get('training_set_kwargs'):
        kwargs = dnnlib.EasyDict(network['training_set_kwargs'])
        if kwargs.get('max_size') is not None and verbose:
            print(f'Note: the network was trained on a subset of {kwargs.max_size} images; '
                  f'the metrics use the whole dataset at {kwargs.get("path")}.')
        kwargs.max_size = None
    else:
        raise click.UsageError('The network file does not record its training set; give the metric '
                               'dataset with --metricdata.')
    kwargs.resolution = G.img_resolution
    kwargs.use_labels = (G.c_dim != 0)
    if mirror is not None:
        kwargs.xflip = mirror
    return kwargs


@click.command(epilog=__doc__.split('Examples:')[1] if __doc__ else None)
@click.option('--network', 'network_pkl', metavar='PATH|URL', required=True,
              help='Network file (pickle) to evaluate.')
@click.option('--metrics', 'metrics_list', metavar='LIST', default='fid50k_full', show_default=True,
              help='Comma-separated metric names: ' + ', '.join(metric_main.list_valid_metrics()) +
              ' (other sample counts work too, e.g. fid2k_full).')
@click.option('--metricdata', metavar='ZIP|DIR|NAME|URL',
              help='Dataset the metrics compare against: a zip, a folder, demo, a named dataset such as '
              '100-shot-obama or the URL of a zip  [default: the training set in the network file]')
@click.option('--mirror', **dict(cli.BOOL, default=None, show_default=False),
              help='Add x-flipped dataset images  [default: as in training]')
@click.option('--gpus', 'num_gpus', type=click.IntRange(min=1), default=None,
              help='Number of processes (GPUs; CPU processes with --device=cpu)  [default: 1, or WORLD_SIZE '
              'under torchrun]')
@cli.device_option()
@click.option('--detector', 'detector_values', metavar='[ROLE=]PATH', multiple=True,
              help='Replacement feature network (TorchScript or network file, or "digits" for the shipped '
              'digits detector: a domain FID for the demo data); ROLE is inception '
              '(FID/KID/IS) or vgg16 (PR/PPL), no ROLE replaces both. Repeatable.')
@click.option('--detector-dir', metavar='DIR', type=click.Path(file_okay=False),
              help=f'Folder holding the official detector files (also ${detectors.DETECTOR_DIR_ENV}).')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True,
              help='Seed of latents, labels and noise.')
@click.option('--batch', type=click.IntRange(min=1), default=64, show_default=True,
              help='Images per detector call.')
@click.option('--cache', **dict(cli.BOOL, default=True), help='Reuse dataset statistics cached on disk.')
@click.option('--no-cache', 'no_cache', is_flag=True, hidden=True, help='Older spelling of --cache=0.')
@click.option('--jsonl', **dict(cli.BOOL, default=True),
              help='Append results to metric-<name>.jsonl beside a local network file.')
@click.option('--no-jsonl', 'no_jsonl', is_flag=True, hidden=True, help='Older spelling of --jsonl=0.')
@click.option('--verbose', **dict(cli.BOOL, default=True), help='Print progress.')
def main(network_pkl, metrics_list, metricdata, mirror, num_gpus, device, detector_values, detector_dir,
         seed, batch, cache, no_cache, jsonl, no_jsonl, verbose):
    """Compute quality metrics of a network file against a dataset.

    FID, KID, IS use the Inception-v3 detector and precision/recall and PPL the VGG16
    detector published with stylegan2-ada-pytorch; they are downloaded once into the cache
    (or read from --detector-dir). Dataset statistics are cached too.
    """
    try:
        metrics = parse_metric_list(metrics_list)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint='--metrics')

    cache = cache and not no_cache
    jsonl = jsonl and not no_jsonl

    # Processes: torchrun's variables (one process per GPU, possibly on several machines)
    # win over --gpus, as in train.py.
    try:
        env = distributed.torchrun_env()
    except distributed.DistributedError as e:
        raise click.ClickException(f'torchrun environment: {e}') from None
    if env is not None:
        if num_gpus is not None and num_gpus != env.world_size:
            raise click.BadParameter(f'{num_gpus} disagrees with WORLD_SIZE={env.world_size} set by the launcher; '
                                     f'leave --gpus out under torchrun', param_hint='--gpus')
        num_gpus = env.world_size
    num_gpus = num_gpus or 1
    rank0 = env is None or env.rank == 0
    verbose = verbose and rank0

    dev = cli.resolve_device(device)
    device_index = dev.index
    if dev.type == 'cuda':
        if device_index is not None and (num_gpus > 1 or env is not None):
            raise click.BadParameter(f'{device} names one GPU, but {num_gpus} processes were asked for; use '
                                     f'--device=cuda', param_hint='--device')
        local = num_gpus if env is None else 1
        if local > torch.cuda.device_count():
            raise click.BadParameter(f'{num_gpus} requested, but only {torch.cuda.device_count()} CUDA '
                                     f'device(s) are visible.', param_hint='--gpus')
    device = dev.type

    # Load the generator (a safe loader: nothing in the file is executed).
    from generate import load_checked_network  # pylint: disable=import-outside-toplevel
    if verbose:
        print(f'Loading network from "{network_pkl}"...')
    network, G = load_checked_network(network_pkl, keys=['G_ema', 'training_set_kwargs'])

    dataset_kwargs = dataset_kwargs_for(metricdata, network, G, mirror, verbose=rank0)
    try:  # Fail here, with one clear message, rather than in every process.
        ds = dnnlib.construct_class_by_name(**dataset_kwargs)
        if verbose:
            print(f'Metric dataset: {dataset_kwargs.get("path")} ({len(ds)} images'
                  f'{", x-flipped copies included" if dataset_kwargs.get("xflip") else ""})')
        del ds
    except (OSError, ValueError) as e:
        raise click.ClickException(f'Cannot open the metric dataset: {e}')

    # Find (or download) the detectors once, before any process starts.
    detector_spec = detectors.parse_detector_option(detector_values)
    for role in sorted({r for m in metrics for r in metric_main.detector_roles(m)}):
        try:
            detectors.get_detector(role, detector_spec, 'cpu', detector_dir)
        except (detectors.DetectorNotFoundError, OSError, ValueError) as e:
            raise click.ClickException(str(e))

    local_file = os.path.isfile(network_pkl)
    args = dnnlib.EasyDict(
        G=G, metrics=metrics, dataset_kwargs=dataset_kwargs, num_gpus=num_gpus, device=device,
        detector=detector_spec, detector_dir=detector_dir,
        seed=seed, batch=batch, cache=cache, verbose=verbose, network_pkl=network_pkl, device_index=device_index,
        run_dir=os.path.dirname(os.path.abspath(network_pkl)) if (jsonl and local_file) else None)

    if env is not None:
        # Started by torchrun: this process is one rank of the group the launcher set up.
        distributed.run_worker(subprocess_fn, env.rank, env.world_size, device, local_rank=env.local_rank,
                               master_addr=env.master_addr, master_port=env.master_port, args=(args,))
        return

    # One process runs here; more are spawned into one process group (NCCL on GPUs, gloo on
    # CPUs) and leave it through distributed.leave_and_exit.
    if num_gpus > 1 and verbose:
        print(f'Launching {num_gpus} processes...')
    distributed.launch(subprocess_fn, num_gpus, device, args=(args,))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
