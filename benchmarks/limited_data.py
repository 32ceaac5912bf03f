"""Limited-data benchmark: every method on the same small subsets, FID and D overfitting.

    python benchmarks/limited_data.py --outdir=runs/limited-data                # the digits, CPU
    python benchmarks/limited_data.py --outdir=runs/ld-smoke --sizes=50 --methods=noaug,apa \\
        --kimg=2 --snap-kimg=1 --num-gen=200                                    # a quick look
    python benchmarks/limited_data.py --outdir=runs/ld-cifar --data=cifar10.zip --sizes=10%,20% \\
        --cfg=cifar --gpus=8 --kimg=20000 --snap-kimg=500 --ada-kimg=500 --metric=fid10k_full \\
        --device=cuda --jobs=1                                                  # DiffAugment's CIFAR setting

For each data size, method and seed it runs `train.py` (a real run directory, resumable:
a run whose results exist is skipped, an unfinished one is continued) with everything but
the method held equal, then scores every network snapshot:

- FID of G_ema against the *full* dataset (the established protocol). On the built-in
  digits the detector is the shipped digits classifier (`--detector=digits`, a domain FID
  comparable only within this benchmark); on other data the official Inception network.
- D's raw output and its sign on the training reals, on held-out reals that D never saw
  (images of the dataset outside the subset), and on fakes of G: the overfitting signals
  of the APA paper (sec. 3, "overfitting and convergence analysis"). An overfitting D
  scores its training images high, held-out images lower, fakes low.
- Every adaptive p, from the run's stats.jsonl.

Adaptive methods are sized to the run: `--ada-kimg` (kimg for p to cross [0, 1]) defaults
to a tenth of `--kimg` here, since the training default of 500 kimg is made for runs of
thousands of kimg and would leave p near 0 in a CPU-sized run.

Writes into --outdir: runs/ (the run directories), results.json (every curve),
results.csv (one row per snapshot), fid.png, d_outputs.png, p.png and summary.md (the
table). `--report-only` redraws those from results.json.
"""

import argparse
import concurrent.futures
import csv
import glob
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DIFFAUG_POLICY = 'color,translation,cutout'
# Method name -> train.py options. Everything else comes from the shared options below.
LECAM_WEIGHT = 0.01   # Our loss is a batch mean; see docs/limited_data.md for the choice.
METHODS: Dict[str, List[str]] = {
    'noaug': ['--aug=noaug'],
    'apa': ['--aug=apa'],
    'ada': ['--aug=ada'],
    'diffaug': ['--aug=noaug', f'--diffaugment={DIFFAUG_POLICY}'],
    'apa+ada': ['--aug=apa', '--with-dataaug=1'],
    'ada+insgen': ['--aug=ada', '--insgen=1'],
    'insgen': ['--aug=noaug', '--insgen=1'],
    'apa+ada+diffaug': ['--aug=apa', '--with-dataaug=1', f'--diffaugment={DIFFAUG_POLICY}'],
    'lecam': ['--aug=noaug', f'--lecam={LECAM_WEIGHT:g}'],
    'ada+lecam': ['--aug=ada', f'--lecam={LECAM_WEIGHT:g}'],
    'ada-linear': ['--aug=ada', '--ada-linear=1'],
}
DEFAULT_METHODS = 'noaug,apa,ada,diffaug,apa+ada,ada+insgen'
# The digits configuration: 16x16 (the digits are 8x8 at source) and a narrow network, so
# that a run of tens of kimg takes minutes on one CPU core. R1 gamma 1 and a batch of 16 at
# lr 0.002: with gamma 0.01 a 100-image run collapsed to one shape, and a batch of 32 learnt
# about half as fast per kimg (FID 672 vs 399 after 40 kimg on all digits, both gamma 1).
# The setting of the recorded results (docs/limited_data.md): the cpu preset's network with
# the StyleGAN2 defaults for path length and style mixing, batch 16 and lr 0.002.
DIGITS_OPTIONS = ['--cfg=cpu', '--cmax=32', '--batch=16', '--gamma=1', '--glr=0.002', '--dlr=0.002',
                  '--pl-weight=2', '--style-mixing=0.9']
DIGITS_RESOLUTION = 16
HELD_OUT = 1000   # Held-out reals and fakes scored per snapshot (at most).


# ---------------------------------------------------------------------------------------
# Scoring one run (runs in its own process: `--score RUN_DIR`).

def _dataset_kwargs(run_dir: str) -> Dict[str, Any]:
    with open(os.path.join(run_dir, 'training_options.json'), encoding='utf-8') as f:
        return json.load(f)['training_set_kwargs']


def _run_dirs(run_dir: str) -> List[str]:
    """The run directory and the ones an interrupted run was continued in (train.py makes a
    new numbered directory on every resume), in order."""
    parent = os.path.dirname(os.path.abspath(run_dir))
    return sorted(d for d in glob.glob(os.path.join(parent, '0*')) if os.path.isdir(d))


def _stats_rows(run_dirs: Sequence[str]) -> List[Dict[str, Any]]:
    rows = []
    for d in run_dirs:
        path = os.path.join(d, 'stats.jsonl')
        if os.path.isfile(path):
            with open(path, encoding='utf-8') as f:
                rows += [json.loads(line) for line in f]
    return rows


def _p_curves(rows: Sequence[Dict[str, Any]]) -> Dict[str, List[List[float]]]:
    """{statistic name: [[kimg, value], ...]} of every Augment/*/p in the stats rows."""
    curves: Dict[str, List[List[float]]] = {}
    for row in rows:
        kimg = row.get('Progress/kimg', {}).get('mean')
        for key, value in row.items():
            if key.startswith('Augment/') and key.endswith('/p') and kimg is not None:
                curves.setdefault(key, []).append([kimg, value['mean']])
    return curves


def score_run(run_dir: str, metric: str, detector: Optional[str], device: str) -> Dict[str, Any]:
    """FID, D outputs and p of every network snapshot of a run directory."""
    import torch  # pylint: disable=import-outside-toplevel
    from metrics import metric_main  # pylint: disable=import-outside-toplevel
    from torch_utils import netfile  # pylint: disable=import-outside-toplevel
    import dnnlib  # pylint: disable=import-outside-toplevel

    dev = torch.device(device)
    run_dirs = _run_dirs(run_dir)
    ts_kwargs = _dataset_kwargs(run_dirs[0])
    train_set = dnnlib.construct_class_by_name(**dict(ts_kwargs, xflip=False))
    full_kwargs = dict(ts_kwargs, max_size=None, xflip=False)
    full_set = dnnlib.construct_class_by_name(**full_kwargs)
    train_idx = set(int(i) for i in train_set._raw_idx)  # pylint: disable=protected-access
    rng = np.random.RandomState(123)
    held = [i for i in range(len(full_set)) if int(full_set._raw_idx[i]) not in train_idx]  # pylint: disable=protected-access
    held = sorted(rng.choice(held, size=min(HELD_OUT, len(held)), replace=False).tolist()) if held else []
    train = sorted(rng.choice(len(train_set), size=min(HELD_OUT, len(train_set)), replace=False).tolist())

    def batch(dataset, indices):
        items = [dataset[i] for i in indices]
        img = torch.from_numpy(np.stack([x[0] for x in items])).to(dev).float() / 127.5 - 1
        lab = torch.from_numpy(np.stack([x[1] for x in items])).to(dev).float()
        return img, lab

    train_img, train_c = batch(train_set, train)
    held_img, held_c = (batch(full_set, held) if held else (None, None))
    spec = detector or None   # metrics.detectors resolves the name 'digits' itself.

    def d_scores(D, img, c):
        out = torch.cat([D(x, y) for x, y in zip(img.split(256), c.split(256))]).flatten()
        return {'mean': float(out.mean()), 'sign': float(out.sign().mean())}

    snapshots = []
    rows = _stats_rows(run_dirs)
    pkls = [p for d in run_dirs for p in sorted(glob.glob(os.path.join(d, 'network-snapshot-*.pkl')))]
    for pkl, kimg in zip(pkls, _snapshot_kimgs(rows, pkls)):
        data = netfile.load_network_pickle(pkl, keys=('G', 'D', 'G_ema'), device=dev)
        row: Dict[str, Any] = {'kimg': kimg, 'pkl': os.path.relpath(pkl, os.path.dirname(run_dirs[0]))}
        with torch.no_grad():
            D, G = data['D'], data['G']
            row['D_train'] = d_scores(D, train_img, train_c)
            if held_img is not None:
                row['D_heldout'] = d_scores(D, held_img, held_c)
            gen = torch.Generator(device='cpu').manual_seed(7)
            z = torch.randn([len(train), G.z_dim], generator=gen).to(dev)
            c = train_c[torch.randperm(len(train), generator=gen)] if G.c_dim else torch.zeros([len(train), 0], device=dev)
            fakes = torch.cat([G(zz, cc, noise_mode='random') for zz, cc in zip(z.split(256), c.split(256))])
            row['D_fake'] = d_scores(D, fakes, c)
        result = metric_main.calc_metric(metric=metric, G=data['G_ema'], dataset_kwargs=full_kwargs,
                                         device=dev, detector=spec)
        row['fid'] = float(next(iter(result['results'].values())))
        snapshots.append(row)
    return {'snapshots': snapshots, 'p': _p_curves(rows), 'num_train': len(train_set),
            'num_heldout_scored': len(held)}


def _snapshot_kimgs(rows: Sequence[Dict[str, Any]], pkls: List[str]) -> List[float]:
    """The kimg of each snapshot: the benchmark snapshots at every tick, so the i-th tick of
    the stats is the i-th snapshot (else the number in the file name is taken as kimg)."""
    kimgs = [row.get('Progress/kimg', {}).get('mean') for row in rows]
    if len(kimgs) == len(pkls) and None not in kimgs:
        return [float(k) for k in kimgs]
    # Names are network-snapshot-<kimg>.pkl, with the images past whole kimg after an
    # underscore when there are any ('000012_345' is 12.345 kimg).
    kimgs = []
    for p in pkls:
        whole, part = re.search(r'(\d+)(?:_(\d+))?\.pkl$', os.path.basename(p)).groups()
        kimgs.append(int(whole) + int(part or 0) / 1000)
    return kimgs


# ---------------------------------------------------------------------------------------
# Running the grid.

def parse_sizes(value: str, num_images: int) -> List[int]:
    """'100,500' or '10%,20%' -> image counts."""
    sizes = []
    for part in value.split(','):
        part = part.strip()
        if part.endswith('%'):
            sizes.append(max(1, int(round(float(part[:-1]) / 100 * num_images))))
        else:
            sizes.append(int(part))
        if sizes[-1] < 1 or sizes[-1] > num_images:
            raise SystemExit(f'--sizes: {part!r} is not between 1 and the {num_images} images of the dataset')
    return sizes


def run_one(args, data: str, size: int, method: str, seed: int, threads: int, log) -> Dict[str, Any]:
    """Trains (or continues) one run and scores it; results are cached in the run directory."""
    name = f'{size:05d}-{method}-seed{seed}'
    outdir = os.path.join(args.outdir, 'runs', name)
    result_path = os.path.join(outdir, 'result.json')
    if os.path.isfile(result_path):
        with open(result_path, encoding='utf-8') as f:
            return json.load(f)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # The newest run directory with a training state (a resume that found nothing to do
    # leaves a directory without one).
    run_dirs = sorted(d for d in glob.glob(os.path.join(outdir, '0*'))
                      if os.path.isdir(d) and glob.glob(os.path.join(d, 'training-state-*.pt')))
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), f'--outdir={outdir}', f'--data={data}',
           f'--subset={size}', f'--seed={seed}', f'--kimg={args.kimg}', f'--metrics=none',
           f'--gpus={args.gpus}', f'--device={args.device}'] + args.base_options + METHODS[method] + args.extra
    if any(o.startswith('--aug=apa') or o.startswith('--aug=ada') for o in METHODS[method]):
        cmd.append(f'--ada-kimg={args.ada_kimg}')
    if run_dirs:   # Continue exactly where an interrupted run stopped.
        cmd.append(f'--resume={run_dirs[-1]}')
    t0 = time.time()
    log(f'[{name}] training: {" ".join(cmd[1:])}')
    with open(os.path.join(args.outdir, 'runs', f'{name}.log'), 'a', encoding='utf-8') as f:
        subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    train_sec = time.time() - t0
    run_dir = sorted(d for d in glob.glob(os.path.join(outdir, '0*')) if os.path.isdir(d))[-1]
    t0 = time.time()
    score = [sys.executable, os.path.abspath(__file__), '--score', run_dir, f'--metric={args.metric}',
             f'--device={args.device}'] + \
        ([f'--detector={args.detector}'] if args.detector else [])
    out = subprocess.run(score, env=env, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result.update(size=size, method=method, seed=seed, run_dir=os.path.relpath(run_dir, args.outdir),
                  train_sec=round(train_sec, 1), score_sec=round(time.time() - t0, 1), command=cmd[1:])
    tmp = result_path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, result_path)
    last = result['snapshots'][-1]
    log(f'[{name}] done in {train_sec:.0f}+{result["score_sec"]:.0f} s: FID {last["fid"]:.2f}, '
        f'D train/held-out/fake {last["D_train"]["mean"]:.2f}/{last.get("D_heldout", {}).get("mean", float("nan")):.2f}/'
        f'{last["D_fake"]["mean"]:.2f}')
    return result


# ---------------------------------------------------------------------------------------
# Report.

def _final(result: Dict[str, Any], key: str) -> float:
    snaps = result['snapshots']
    if key == 'fid':
        return snaps[-1]['fid']
    if key == 'best_fid':
        return min(s['fid'] for s in snaps)
    if key == 'gap':   # Train minus held-out D output: the overfitting gap.
        s = snaps[-1]
        return s['D_train']['mean'] - s.get('D_heldout', {}).get('mean', float('nan'))
    return snaps[-1].get(key, {}).get('mean', float('nan'))


def _plots(outdir: str, results: List[Dict[str, Any]], title: str) -> None:
    """fid.png, d_outputs.png and p.png."""
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    sizes = sorted({r['size'] for r in results})
    methods = list(dict.fromkeys(r['method'] for r in results))
    colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(methods)}
    styles = ['-', '--', ':', '-.']

    # FID vs kimg, one panel per size; seeds as line styles.
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for r in results:
            if r['size'] != size:
                continue
            k = [s['kimg'] for s in r['snapshots']]
            ax.plot(k, [s['fid'] for s in r['snapshots']], styles[r['seed'] % len(styles)],
                    color=colors[r['method']], label=f'{r["method"]} (seed {r["seed"]})')
        ax.set_title(f'{size} training images')
        ax.set_xlabel('kimg')
        ax.set_ylabel('FID (lower is better)')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc='upper right')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, 'fid.png'), dpi=110)
    plt.close(fig)

    # D outputs: train (solid), held-out (dashed), fake (dotted), first seed; below, the
    # overfitting gap (train minus held-out) of every seed, which removes the swings that
    # train and held-out outputs share.
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.5 * len(sizes), 7), squeeze=False)
    seed0 = min(r['seed'] for r in results)
    for col, size in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        for r in results:
            if r['size'] != size:
                continue
            k = [s['kimg'] for s in r['snapshots']]
            if r['seed'] == seed0:
                for key, style in (('D_train', '-'), ('D_heldout', '--'), ('D_fake', ':')):
                    top.plot(k, [s.get(key, {}).get('mean', np.nan) for s in r['snapshots']], style,
                             color=colors[r['method']], label=r['method'] if key == 'D_train' else None)
            gap = [s['D_train']['mean'] - s.get('D_heldout', {}).get('mean', np.nan) for s in r['snapshots']]
            bottom.plot(k, gap, styles[r['seed'] % len(styles)], color=colors[r['method']],
                        label=f'{r["method"]} (seed {r["seed"]})')
        top.set_title(f'{size} images: D(x) on train (solid), held-out (dashed), fakes (dotted)', fontsize=9)
        top.set_ylabel('mean raw D output')
        bottom.set_title(f'{size} images: overfitting gap, D(train) - D(held-out)', fontsize=9)
        bottom.set_ylabel('gap')
        bottom.set_xlabel('kimg')
        bottom.axhline(0, color='k', lw=0.5)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    axes[1][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, 'd_outputs.png'), dpi=110)
    plt.close(fig)

    # Adaptive p.
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 3.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        for r in results:
            if r['size'] != size or r['seed'] != seed0:
                continue
            for i, (key, curve) in enumerate(sorted(r['p'].items())):
                curve = np.asarray(curve)
                label = r['method'] + ('' if len(r['p']) == 1 else f' {key.split("/")[1]}')
                ax.plot(curve[:, 0], curve[:, 1], styles[i % len(styles)], color=colors[r['method']], label=label)
        ax.set_title(f'{size} images: adaptive p')
        ax.set_xlabel('kimg')
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    if axes[0][-1].get_legend_handles_labels()[0]:   # No curves when no method adapts a p.
        axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(outdir, 'p.png'), dpi=110)
    plt.close(fig)



def write_report(outdir: str, results: List[Dict[str, Any]], title: str) -> str:
    """results.csv, plots (with matplotlib) and summary.md; returns the summary text."""
    with open(os.path.join(outdir, 'results.csv'), 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['size', 'method', 'seed', 'kimg', 'fid', 'D_train', 'D_heldout', 'D_fake',
                    'sign_train', 'sign_heldout', 'sign_fake'])
        for r in results:
            for s in r['snapshots']:
                w.writerow([r['size'], r['method'], r['seed'], s['kimg'], round(s['fid'], 4)]
                           + [round(s.get(k, {}).get('mean', float('nan')), 4) for k in ('D_train', 'D_heldout', 'D_fake')]
                           + [round(s.get(k, {}).get('sign', float('nan')), 4) for k in ('D_train', 'D_heldout', 'D_fake')])

    try:
        _plots(outdir, results, title)
    except ImportError:
        print('matplotlib is not installed: no plots (pip install matplotlib), the rest is written.')
    sizes = sorted({r['size'] for r in results})
    methods = list(dict.fromkeys(r['method'] for r in results))
    lines = ['| images | method | seeds | final FID | best FID | D train | D held-out | D fake | train - held-out | final p |',
             '|---|---|---|---|---|---|---|---|---|---|']
    for size in sizes:
        for method in methods:
            rs = [r for r in results if r['size'] == size and r['method'] == method]
            if not rs:
                continue

            def cell(key, rs=rs):
                vals = [_final(r, key) for r in rs]
                return f'{vals[0]:.2f}' if len(vals) == 1 else ' / '.join(f'{v:.2f}' for v in vals)
            ps = []
            for r in rs:
                finals = [f'{c[-1][1]:.2f}' for _, c in sorted(r['p'].items()) if c]
                ps.append(','.join(finals) or '-')
            lines.append(f'| {size} | {method} | {",".join(str(r["seed"]) for r in rs)} | {cell("fid")} | '
                         f'{cell("best_fid")} | {cell("D_train")} | {cell("D_heldout")} | {cell("D_fake")} | '
                         f'{cell("gap")} | {" / ".join(ps)} |')
    summary = '\n'.join(lines) + '\n'
    with open(os.path.join(outdir, 'summary.md'), 'w', encoding='utf-8') as f:
        f.write(summary)
    return summary


# ---------------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--outdir', default='runs/limited-data', help='Where runs, results and plots go')
    parser.add_argument('--data', default='demo', help='Dataset zip or folder, or "demo" (the digits at 16x16)')
    parser.add_argument('--sizes', default='100,500', help='Training-set sizes: counts or percentages, comma-separated')
    parser.add_argument('--methods', default=DEFAULT_METHODS, help=f'Comma-separated, from: {", ".join(METHODS)}')
    parser.add_argument('--seeds', default='0', help='Seeds of every run')
    parser.add_argument('--spread-seeds', default='1', help='Extra seeds for the smallest size ("" for none)')
    parser.add_argument('--spread-methods', default=None, help='Methods the extra seeds run [default: all of --methods]')
    parser.add_argument('--kimg', type=float, default=40, help='Length of every run')
    parser.add_argument('--snap-kimg', type=float, default=4, help='kimg between scored snapshots')
    parser.add_argument('--ada-kimg', type=float, default=None, help='kimg for p to cross [0, 1] [default: kimg / 10]')
    parser.add_argument('--cfg', default=None, help='train.py --cfg for other data [default: the digits options]')
    parser.add_argument('--gpus', type=int, default=1, help='Processes per run (train.py --gpus)')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'], help='Where to train and score')
    parser.add_argument('--jobs', type=int, default=None, help='Runs at a time [default: CPU cores on cpu, 1 on cuda]')
    parser.add_argument('--threads', type=int, default=None, help='Torch threads per run [default: cores / jobs]')
    parser.add_argument('--metric', default=None, help='FID metric [default: fid2k_full on the digits, fid10k_full otherwise]')
    parser.add_argument('--detector', default=None, help='Detector for the FID [default: digits on the digits, Inception otherwise]')
    parser.add_argument('--extra', default='', help='More train.py options for every run, space-separated')
    parser.add_argument('--report-only', action='store_true', help='Redraw the report from results.json')
    parser.add_argument('--score', metavar='RUN_DIR', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.score is not None:
        result = score_run(args.score, args.metric, args.detector, args.device)
        print(json.dumps(result))
        return

    os.makedirs(os.path.join(args.outdir, 'runs'), exist_ok=True)
    results_path = os.path.join(args.outdir, 'results.json')
    digits = args.data == 'demo'
    title = 'digits 16x16' if digits else os.path.basename(args.data)
    if args.report_only:
        with open(results_path, encoding='utf-8') as f:
            print(write_report(args.outdir, json.load(f)['results'], title))
        return

    if digits:
        from training import demo_dataset  # pylint: disable=import-outside-toplevel
        data = demo_dataset.ensure_demo_zip(DIGITS_RESOLUTION)   # The demo's own zip.
        args.base_options = list(DIGITS_OPTIONS) + ([f'--cfg={args.cfg}'] if args.cfg else [])
        args.detector = args.detector or 'digits'
        args.metric = args.metric or 'fid2k_full'
    else:
        data = args.data
        args.base_options = [f'--cfg={args.cfg or "auto"}']
        args.metric = args.metric or 'fid10k_full'
    from training.dataset import ImageFolderDataset  # pylint: disable=import-outside-toplevel
    num_images = len(ImageFolderDataset(data))
    args.ada_kimg = args.ada_kimg or max(args.kimg / 10, 0.1)
    # Snapshot interval in ticks of the preset's tick length: ticks of snap-kimg, one snapshot each.
    args.base_options += [f'--tick={args.snap_kimg}', '--snap=1']
    args.extra = args.extra.split()
    unknown = [m for m in args.methods.split(',') + (args.spread_methods or '').split(',') if m and m not in METHODS]
    if unknown:
        raise SystemExit(f'--methods: unknown {unknown[0]!r}; known: {", ".join(METHODS)}')
    sizes = parse_sizes(args.sizes, num_images)
    seeds = [int(s) for s in args.seeds.split(',') if s]
    spread = [int(s) for s in args.spread_seeds.split(',') if s]
    grid = [(size, method, seed) for size in sizes for method in args.methods.split(',') for seed in seeds]
    spread_methods = args.spread_methods.split(',') if args.spread_methods else args.methods.split(',')
    grid += [(min(sizes), method, seed) for method in spread_methods for seed in spread if seed not in seeds]
    jobs = args.jobs or (os.cpu_count() or 1 if args.device == 'cpu' else 1)
    jobs = max(1, min(jobs, len(grid)))
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    print(f'{len(grid)} runs of {args.kimg:g} kimg on {title} ({num_images} images), {jobs} at a time, '
          f'{threads} thread(s) each; ada-kimg {args.ada_kimg:g}; {args.metric} with '
          f'{args.detector or "the Inception detector"}.', flush=True)

    t0 = time.time()
    results = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_one, args, data, size, method, seed, threads, lambda m: print(m, flush=True))
                   for size, method, seed in grid]
        for fut in futures:
            results.append(fut.result())
    wall = time.time() - t0
    tmp = results_path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump({'title': title, 'data': args.data, 'num_images': num_images, 'kimg': args.kimg,
                   'ada_kimg': args.ada_kimg, 'metric': args.metric, 'detector': args.detector,
                   'wall_sec': round(wall, 1), 'results': results}, f, indent=1)
    os.replace(tmp, results_path)
    print(write_report(args.outdir, results, title))
    print(f'Wall time {wall / 60:.1f} min. Results: {results_path}')


if __name__ == '__main__':
    main()
