"""rank_samples.py and metrics.sample_ranking: the Mahalanobis ranking against an independent
computation, the shared FID statistics cache, and the grids of the extremes."""

import csv
import io
import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import scipy.spatial.distance
import torch
from click.testing import CliRunner

import generate
import rank_samples
from metrics import detectors, metric_utils, sample_ranking
from torch_utils import netfile
from training import demo_dataset, networks

NUM_REAL = 300   # More than the digits detector's 128 features: a full-rank covariance.


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture(scope='module')
def real(tmp_path_factory):
    """A small digits dataset zip (the first 300 demo digits, 16x16 grayscale) and its images."""
    images = []
    for img, _label in demo_dataset.iter_demo_images():
        images.append(img)
        if len(images) == NUM_REAL:
            break
    path = str(tmp_path_factory.mktemp('data') / 'digits300.zip')
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zf:
        for i, img in enumerate(images):
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format='png')
            zf.writestr(f'00000/img{i:08d}.png', buf.getvalue())
        zf.writestr('dataset.json', json.dumps({'labels': None}))
    return path, np.stack(images)


@pytest.fixture(scope='module')
def pkl(tmp_path_factory):
    torch.manual_seed(3)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    path = str(tmp_path_factory.mktemp('net') / 'net.pkl')
    netfile.save_network_pickle(path, dict(G_ema=G.eval()))
    return path


def test_mahalanobis_matches_scipy_and_ridge():
    rng = np.random.RandomState(0)
    a = rng.randn(6, 6)
    sigma, mu = a @ a.T + 0.1 * np.eye(6), rng.randn(6)
    x = rng.randn(5, 6)
    d = sample_ranking.Mahalanobis(mu, sigma, ridge=0.0)(x)
    ref = [scipy.spatial.distance.mahalanobis(row, mu, np.linalg.inv(sigma)) for row in x]
    np.testing.assert_allclose(d, ref, rtol=1e-10)
    # A singular covariance: the ridge, relative to the mean variance, makes it invertible.
    low = a[:, :2] @ a[:, :2].T
    m = sample_ranking.Mahalanobis(mu, low, ridge=1e-3)
    assert m.rank == 2
    vi = np.linalg.inv(low + 1e-3 * np.trace(low) / 6 * np.eye(6))
    np.testing.assert_allclose(m(x), [scipy.spatial.distance.mahalanobis(row, mu, vi) for row in x], rtol=1e-8)
    with pytest.raises(ValueError, match='ridge'):
        sample_ranking.Mahalanobis(mu, low, ridge=0.0)


def test_extremes_kept_while_streaming():
    det = lambda images, return_features: images[:, 0].reshape(images.shape[0], -1).to(torch.float32)  # noqa: E731
    dist = sample_ranking.Mahalanobis(np.zeros(4), np.eye(4), 0.0)
    values = np.array([3, 0, 7, 1, 7, 5, 2, 6], np.uint8)
    batches = [(list(range(i, i + 3)), torch.from_numpy(np.repeat(values[i:i + 3], 4)).reshape(-1, 1, 2, 2))
               for i in range(0, 8, 3)]
    r = sample_ranking.rank_samples(iter(batches), det, dist, k=3)
    np.testing.assert_allclose(r.distances, values * 2.0)                  # |(v, v, v, v)| = 2v.
    assert [s for _, s, _ in r.worst] == [2, 4, 7]                          # 7, 7 (earlier first), 6.
    assert [s for _, s, _ in r.best] == [1, 3, 6]
    assert list(r.order()[:3]) == [2, 4, 7]
    assert r.worst[0][2].shape == (2, 2, 1) and (r.worst[0][2] == 7).all()


def _read_csv(path):
    with open(path) as f:
        return [(int(row['rank']), int(row['seed']), float(row['distance'])) for row in csv.DictReader(f)]


def test_ranking_against_independent_numpy(real, pkl, tmp_path, cache_dir):
    data_path, real_images = real
    out = str(tmp_path / 'rank')
    res = CliRunner().invoke(rank_samples.main, ['--network', pkl, '--metricdata', data_path, '--detector', 'digits',
                                                 '--seeds', '0-39', '--k', '4', '--outdir', out, '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out)) == ['best.png', 'ranking.csv', 'ranking.json', 'worst.png']
    rows = _read_csv(os.path.join(out, 'ranking.csv'))
    assert [r for r, _, _ in rows] == list(range(40)) and sorted(s for _, s, _ in rows) == list(range(40))

    # Independently: the digits network on the real images, NumPy mean and covariance, the
    # generator's images of each seed as generate.py makes them, SciPy's Mahalanobis distance.
    net = detectors.get_detector('inception', 'digits', 'cpu')
    real_t = torch.from_numpy(real_images[:, None]).repeat(1, 3, 1, 1)
    feats_real = net(real_t, return_features=True).numpy().astype(np.float64)
    mu, sigma = feats_real.mean(axis=0), np.cov(feats_real, rowvar=False, bias=True)
    vi = np.linalg.inv(sigma + 1e-6 * np.trace(sigma) / sigma.shape[0] * np.eye(sigma.shape[0]))
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    imgs = generate.synthesize_ws(G, generate.seeds_to_ws(G, range(40), torch.zeros([1, 0]), 1, None, 'cpu', 8), 'const', 8)
    feats_gen = net(torch.from_numpy(imgs).permute(0, 3, 1, 2).repeat(1, 3, 1, 1), return_features=True).numpy()
    ref = np.array([scipy.spatial.distance.mahalanobis(f, mu, vi) for f in feats_gen.astype(np.float64)])
    got = {s: d for _, s, d in rows}
    np.testing.assert_allclose([got[s] for s in range(40)], ref, rtol=1e-4)
    ref_order = list(np.argsort(-ref, kind='stable'))
    assert [s for _, s, _ in rows] == ref_order

    # The grids: 4 cells (2x2), the worst first, each cell generate.py's image of that seed.
    worst = np.asarray(PIL.Image.open(os.path.join(out, 'worst.png')))
    best = np.asarray(PIL.Image.open(os.path.join(out, 'best.png')))
    assert worst.shape == best.shape == (32, 32)
    np.testing.assert_array_equal(worst[:16, :16], imgs[ref_order[0]][:, :, 0])
    np.testing.assert_array_equal(worst[16:, 16:], imgs[ref_order[3]][:, :, 0])
    np.testing.assert_array_equal(best[:16, :16], imgs[ref_order[-1]][:, :, 0])
    summary = json.load(open(os.path.join(out, 'ranking.json')))
    assert [e['seed'] for e in summary['worst']] == ref_order[:4]
    assert [e['seed'] for e in summary['best']] == ref_order[::-1][:4]
    assert summary['num_real'] == NUM_REAL and summary['feature_dims'] == 128 and summary['covariance_rank'] == 128


def test_real_statistics_are_fids_cache_entry(real, pkl, tmp_path, cache_dir, monkeypatch):
    data_path, _ = real
    args = ['--network', pkl, '--metricdata', data_path, '--detector', 'digits', '--seeds', '0-9', '--k', '2',
            '--device', 'cpu']
    assert CliRunner().invoke(rank_samples.main, args + ['--outdir', str(tmp_path / 'a')]).exit_code == 0
    files = os.listdir(cache_dir / 'gan-metrics')
    assert len(files) == 1
    # It is the file FID's statistics of the full dataset are cached in.
    from generate import load_checked_network
    network, G = load_checked_network(pkl, keys=['G_ema', 'training_set_kwargs'])
    opts = metric_utils.MetricOptions(dataset_kwargs=rank_samples.dataset_kwargs_for(data_path, network, G, None),
                                      device='cpu', detector=detectors.parse_detector_option(['digits']))
    ds = metric_utils.construct_dataset(opts)
    path = metric_utils.stats_cache_path(opts, ds, opts.get_detector('inception'), dict(return_features=True),
                                         dict(capture_mean_cov=True, max_items=len(ds)))
    assert os.path.basename(path) == files[0]

    # A second run reads it: the dataset is never opened for features again.
    def no_reading(*a, **k):
        raise AssertionError('the dataset features were recomputed')
    monkeypatch.setattr(metric_utils, '_dataset_units', no_reading)
    res = CliRunner().invoke(rank_samples.main, args + ['--outdir', str(tmp_path / 'b')])
    assert res.exit_code == 0, res.output
    assert _read_csv(os.path.join(tmp_path / 'a', 'ranking.csv')) == _read_csv(os.path.join(tmp_path / 'b', 'ranking.csv'))
    # --cache=0 recomputes (and so runs into the patched reader).
    res = CliRunner().invoke(rank_samples.main, args + ['--outdir', str(tmp_path / 'c'), '--cache=0'])
    assert res.exit_code != 0


@pytest.mark.parametrize('args, message', [
    (['--k', '0'], '--k'),
    (['--ridge', 'nan'], '--ridge'),
    (['--metricdata', 'nowhere.zip'], '--metricdata'),
    (['--detector', 'missing.pt'], 'missing.pt'),
])
def test_bad_arguments(real, pkl, tmp_path, cache_dir, args, message):
    base = ['--network', pkl, '--metricdata', real[0], '--detector', 'digits', '--seeds', '0-3', '--outdir',
            str(tmp_path / 'o'), '--device', 'cpu']
    res = CliRunner().invoke(rank_samples.main, base + args)
    assert res.exit_code != 0 and message in res.output, res.output
