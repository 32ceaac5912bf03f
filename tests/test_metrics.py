"""Metrics: each formula against an independent NumPy/SciPy/scikit-learn computation on
synthetic features, then the feature machinery (statistics, cache, generation, detectors,
registry, reporting) with small stand-in networks and a tiny dataset zip."""

import io
import json
import os
import warnings
import zipfile

import numpy as np
import PIL.Image
import pytest
import scipy.linalg
import scipy.stats
import torch
from sklearn.metrics import pairwise_distances
from sklearn.metrics.pairwise import polynomial_kernel
from sklearn.neighbors import NearestNeighbors

import dnnlib
from metrics import (detectors, frechet_inception_distance as fid_mod, inception_score as is_mod,
                     kernel_inception_distance as kid_mod, metric_main, metric_utils,
                     perceptual_path_length as ppl_mod, precision_recall as pr_mod)

# ---------------------------------------------------------------------------------------
# Stand-ins shared with test_calc_metrics.py.


class TinyDetector(torch.nn.Module):
    """Stand-in for the official detectors: same call signature, tiny fixed random network."""

    def __init__(self, num_features: int = 16, num_classes: int = 10):
        super().__init__()
        g = torch.Generator().manual_seed(1234)
        self.register_buffer('proj', torch.randn([3 * 4 * 4, num_features], generator=g) / 4)
        self.register_buffer('head', torch.randn([num_features, num_classes], generator=g))
        self.register_buffer('bias', torch.randn([num_classes], generator=g))

    def forward(self, img: torch.Tensor, return_features: bool = False, no_output_bias: bool = False,
                return_lpips: bool = False, resize_images: bool = True) -> torch.Tensor:
        assert img.shape[1] == 3
        x = torch.nn.functional.adaptive_avg_pool2d(img.to(torch.float32), 4) / 127.5 - 1
        f = torch.tanh(x.flatten(1) @ self.proj)
        if return_features:
            return f
        if return_lpips:
            return f / f.square().sum(dim=1, keepdim=True).sqrt()
        logits = f @ self.head
        if not no_output_bias:
            logits = logits + self.bias
        return torch.softmax(logits, dim=1)


def save_tiny_detector(path: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit.script deprecation notice.
        torch.jit.save(torch.jit.script(TinyDetector()), path)
    return path


def write_dataset_zip(path: str, images: np.ndarray, labels=None) -> str:
    """Writes uint8 NHWC images as a dataset zip in the archive format (PNG via PIL)."""
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zf:
        names = []
        for i, img in enumerate(images):
            name = f'{i // 1000:05d}/img{i:08d}.png'
            buf = io.BytesIO()
            PIL.Image.fromarray(img.squeeze()).save(buf, format='png')
            zf.writestr(name, buf.getvalue())
            names.append(name)
        meta = {'labels': None if labels is None else [[n, int(l)] for n, l in zip(names, labels)]}
        zf.writestr('dataset.json', json.dumps(meta))
    return path


def random_images(n: int, res: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 images (a few blurred colour blobs), NHWC."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, size=[n, 4, 4, channels])
    up = np.repeat(np.repeat(low, res // 4, axis=1), res // 4, axis=2)
    return np.clip(up + rng.normal(0, 10, size=up.shape), 0, 255).astype(np.uint8)


class ReplayG(torch.nn.Module):
    """Generator stand-in that returns the dataset images in call order (so FID vs data = 0)."""

    def __init__(self, images: np.ndarray, c_dim: int = 0):
        super().__init__()
        self.register_buffer('images', torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1)
        self.z_dim, self.c_dim, self.w_dim = 8, c_dim, 8
        self.img_resolution, self.img_channels = images.shape[1], images.shape[3]
        self.counter = 0

    def forward(self, z, c, **kwargs):
        idx = torch.arange(self.counter, self.counter + z.shape[0]) % self.images.shape[0]
        self.counter += z.shape[0]
        return self.images[idx]


# ---------------------------------------------------------------------------------------
# FID.


def _random_spd(d, rng, rank=None):
    a = rng.normal(size=[d, rank or d])
    return a @ a.T / d


def test_frechet_distance_commuting_covariances():
    # Covariances sharing eigenvectors: tr sqrt(S1 S2) = sum sqrt(a_i b_i) exactly.
    rng = np.random.default_rng(0)
    d = 12
    q, _ = np.linalg.qr(rng.normal(size=[d, d]))
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    assert fid_mod.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_scipy_on_general_covariances():
    rng = np.random.default_rng(1)
    d = 20
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    root = scipy.linalg.sqrtm(s1 @ s2)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(root).real
    assert fid_mod.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)
    assert fid_mod._trace_sqrt_product_sym(s1, s2) == pytest.approx(np.trace(root).real, rel=1e-7)


def test_frechet_distance_of_identical_low_rank_statistics_is_zero():
    # Fewer samples than features give singular covariances, where sqrtm is fragile.
    rng = np.random.default_rng(2)
    feats = rng.normal(size=[30, 64])
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False, bias=True)
    assert abs(fid_mod.frechet_distance(mu, cov, mu, cov)) < 1e-6 * np.trace(cov)


def test_frechet_distance_falls_back_when_sqrtm_is_complex(monkeypatch):
    rng = np.random.default_rng(3)
    d = 8
    s1, s2 = _random_spd(d, rng), _random_spd(d, rng)
    expected = np.trace(s1 + s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
    monkeypatch.setattr(fid_mod.scipy.linalg, 'sqrtm', lambda a: np.full(a.shape, 1 + 1j))
    with pytest.warns(RuntimeWarning, match='imaginary'):
        value = fid_mod.frechet_distance(np.zeros(d), s1, np.zeros(d), s2)
    assert value == pytest.approx(expected, rel=1e-7)


# ---------------------------------------------------------------------------------------
# FeatureStats.


def test_feature_stats_mean_cov_truncation_and_file_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=[50, 5]).astype(np.float32)
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_cov=True, max_items=37)
    for chunk in np.array_split(x, 7):
        stats.append(chunk)
    assert stats.num_items == 37 and stats.is_full()
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:37].astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:37].astype(np.float64), rowvar=False, bias=True), rtol=1e-10, atol=1e-12)
    stats.save(str(tmp_path / 's.npz'))
    loaded = metric_utils.FeatureStats.load(str(tmp_path / 's.npz'))
    np.testing.assert_array_equal(loaded.get_all(), x[:37])
    np.testing.assert_array_equal(loaded.get_mean_cov()[1], cov)
    assert [p.name for p in tmp_path.iterdir()] == ['s.npz']  # No temporary file left.


# ---------------------------------------------------------------------------------------
# KID.


def test_kid_matches_sklearn_polynomial_kernel_mmd():
    rng = np.random.default_rng(5)
    real = rng.normal(size=[40, 6]).astype(np.float32)
    gen = (rng.normal(size=[40, 6]) * 1.3 + 0.4).astype(np.float32)
    d, m = real.shape[1], real.shape[0]
    k = lambda a, b: polynomial_kernel(a.astype(np.float64), b.astype(np.float64), degree=3, gamma=1 / d, coef0=1)
    kxx, kyy, kxy = k(gen, gen), k(real, real), k(gen, real)
    expected = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                - 2 * kxy.mean())
    # Subsets of the full size are permutations, so every subset gives the full-sample MMD.
    value = kid_mod.kernel_inception_distance(real, gen, num_subsets=5, max_subset_size=1000)
    assert value == pytest.approx(expected, rel=1e-5)
    assert value > 0.05
    # Smaller subsets: an average of unbiased estimates, near the full value.
    sub = kid_mod.kernel_inception_distance(real, gen, num_subsets=200, max_subset_size=20, seed=1)
    assert sub == pytest.approx(expected, rel=0.3)
    same = kid_mod.kernel_inception_distance(real, real.copy(), num_subsets=3, max_subset_size=1000)
    assert same < 0.02 * expected  # Unbiased: can be slightly negative, but near 0.


# ---------------------------------------------------------------------------------------
# Precision / recall.


def _pr_reference(real, gen, k):
    def radii(x):
        dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        return dist[:, k]

    def coverage(probes, manifold):
        return float(np.mean((pairwise_distances(probes, manifold) <= radii(manifold)[None]).any(axis=1)))
    return coverage(gen, real), coverage(real, gen)


def test_precision_recall_matches_sklearn_neighbours():
    rng = np.random.default_rng(6)
    real = rng.normal(size=[57, 4])
    gen = rng.normal(size=[43, 4]) * 0.5 + 0.8  # Narrower and shifted: precision != recall.
    p_ref, r_ref = _pr_reference(real, gen, 3)
    # Small tiles exercise the batching and padding of rows and columns.
    got = pr_mod.precision_recall(torch.from_numpy(real), torch.from_numpy(gen), nhood_size=3,
                                  row_batch_size=7, col_batch_size=5)
    assert got['precision'] == pytest.approx(p_ref, abs=1e-12)
    assert got['recall'] == pytest.approx(r_ref, abs=1e-12)
    assert abs(p_ref - r_ref) > 0.1


# ---------------------------------------------------------------------------------------
# IS.


def test_inception_score_matches_scipy_entropy():
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.full(10, 0.3), size=103)
    scores = []
    bounds = np.linspace(0, 103, 11)  # The protocol's splits: rows i*n//10 .. (i+1)*n//10.
    for lo, hi in zip(np.floor(bounds[:-1]).astype(int), np.floor(bounds[1:]).astype(int)):
        part = probs[lo:hi]
        marginal = part.mean(0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(p, marginal) for p in part])))
    mean, std = is_mod.inception_score(probs, num_splits=10)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10)
    assert std == pytest.approx(np.std(scores), rel=1e-8)
    # Confident, evenly spread predictions over K classes score K.
    onehot = np.eye(10)[np.arange(200) % 10]
    assert is_mod.inception_score(onehot)[0] == pytest.approx(10, rel=1e-12)


# ---------------------------------------------------------------------------------------
# PPL pieces.


def test_slerp_matches_angle_formula():
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=[5, 7]), rng.normal(size=[5, 7])
    t = rng.uniform(0, 1, size=[5, 1])
    ua, ub = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    omega = np.arccos(np.sum(ua * ub, axis=1, keepdims=True))
    expected = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / np.sin(omega)
    got = ppl_mod.slerp(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_face_crop_and_percentile_filter():
    img = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)
    crop = ppl_mod.face_crop(img)
    assert crop.shape == (1, 1, 8, 8)
    assert crop[0, 0, 0, 0].item() == 6 * 16 + 4  # Row 3/8, column 2/8.
    rng = np.random.default_rng(9)
    dist = rng.lognormal(size=1000)
    s = np.sort(dist)
    assert ppl_mod.filtered_mean(dist) == pytest.approx(s[9:991].mean(), rel=1e-12)  # Drops 1% each side.


class LinearG(torch.nn.Module):
    """ws = z repeated, image = A w: PPL in W with 'end' sampling is known in distribution."""

    def __init__(self, dim=64, res=8):
        super().__init__()
        self.z_dim = self.w_dim = dim
        self.c_dim, self.img_resolution, self.img_channels, self.num_ws = 0, res, 1, 2
        self.scale = 0.1
        self.mapping = lambda z, c, **kw: z.unsqueeze(1).repeat(1, 2, 1)
        self.synthesis = self._synthesis

    def _synthesis(self, ws, noise_mode='const'):
        # The first 64 pixels carry w; the rest stay 0.
        img = torch.zeros([ws.shape[0], 1, self.img_resolution, self.img_resolution])
        img.view(ws.shape[0], -1)[:, :self.w_dim] = ws[:, 0] * self.scale
        return img


class FlatLPIPS(torch.nn.Module):
    def forward(self, img, resize_images: bool = True, return_lpips: bool = False):
        return img.flatten(1)


def test_ppl_end_sampling_in_w_matches_distribution():
    # Each of the 3 (repeated) channels moves by 127.5 * scale * eps * (w1 - w0), so a sample
    # is 3 (127.5 scale)^2 |w1 - w0|^2 with |w1 - w0|^2 ~ 2 chi2(dim): mean 6 (127.5 scale)^2 dim.
    # The trimmed mean of 400 samples lies within a few percent of it.
    G = LinearG()
    opts = metric_utils.MetricOptions(G=G, device='cpu', detector={'vgg16': FlatLPIPS()}, cache=False)
    value = ppl_mod.compute_ppl(opts, num_samples=400, epsilon=1e-4, space='w', sampling='end', crop=False)
    expected = 3 * (127.5 * G.scale) ** 2 * 2 * G.w_dim
    assert value == pytest.approx(expected, rel=0.05)
    # Same seed, same value; another seed, another value.
    assert ppl_mod.compute_ppl(opts, 400, 1e-4, 'w', 'end', False) == value
    opts.seed = 1
    assert ppl_mod.compute_ppl(opts, 400, 1e-4, 'w', 'end', False) != value


# ---------------------------------------------------------------------------------------
# Machinery: dataset features, generation, cache.


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


@pytest.fixture
def tiny_data(tmp_path):
    images = random_images(70)
    path = write_dataset_zip(str(tmp_path / 'tiny.zip'), images)
    return images, dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path)


class CountingDetector(TinyDetector):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, img, return_features: bool = False, **kwargs):
        self.calls += 1
        return super().forward(img, return_features=return_features, **kwargs)


def test_rank_rounds_cover_every_unit_once():
    for num_gpus in (1, 2, 3):
        units = []
        for rank in range(num_gpus):
            opts = metric_utils.MetricOptions(num_gpus=num_gpus, rank=rank, device='cpu', batch_size=10)
            rounds = metric_utils.rank_rounds(95, opts)
            assert len(rounds) == -(-10 // num_gpus)  # Same number of rounds on every rank.
            units += rounds
        assert sorted(units)[:10] == list(range(10)) and len(set(units)) == len(units)


def test_fid_of_generator_replaying_the_dataset_is_zero(tiny_data, cache_dir):
    images, dataset_kwargs = tiny_data
    det = TinyDetector()
    result = metric_main.calc_metric('fid70_full', G=ReplayG(images), dataset_kwargs=dataset_kwargs,
                                     device='cpu', detector=det, batch_size=16)
    assert result.metric == 'fid70_full' and result.num_gpus == 1
    assert abs(result.results.fid70_full) < 1e-6
    # A generator of other images is far away.
    other = metric_main.calc_metric('fid70_full', G=ReplayG(random_images(70, seed=5) // 2),
                                    dataset_kwargs=dataset_kwargs, device='cpu', detector=det, batch_size=16)
    assert other.results.fid70_full > 0.1


def test_dataset_statistics_are_cached_by_options(tiny_data, cache_dir):
    _images, dataset_kwargs = tiny_data
    det = CountingDetector()
    opts = metric_utils.MetricOptions(dataset_kwargs=dataset_kwargs, device='cpu', detector=det, batch_size=16)
    first = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                           capture_mean_cov=True)
    calls = det.calls
    assert calls == 5  # ceil(70 / 16) units.
    again = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                           capture_mean_cov=True)
    assert det.calls == calls  # Read from the cache file.
    np.testing.assert_array_equal(first.get_mean_cov()[1], again.get_mean_cov()[1])
    assert len(os.listdir(cache_dir / 'gan-metrics')) == 1
    # Another option (mirroring, or a cap on the items) is another cache entry.
    opts.dataset_kwargs = dnnlib.EasyDict(dataset_kwargs, xflip=True)
    flipped = metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                             capture_mean_cov=True)
    assert flipped.num_items == 140 and det.calls > calls
    metric_utils.compute_feature_stats_for_dataset(opts, 'inception', dict(return_features=True),
                                                   max_items=30, capture_mean_cov=True)
    assert len(os.listdir(cache_dir / 'gan-metrics')) == 3


def test_generation_is_deterministic_and_leaves_rng_alone(cache_dir):
    from training import networks
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=256, channel_max=16))
    opts = metric_utils.MetricOptions(G=G, device='cpu', batch_size=8, gen_batch=4)
    Gc = metric_utils.prepare_generator(opts)
    labels = metric_utils.LabelSampler(opts, 0)
    torch.manual_seed(77)
    state = torch.get_rng_state()
    a = metric_utils.generate_unit(Gc, 3, labels, opts)
    assert torch.equal(torch.get_rng_state(), state)
    b = metric_utils.generate_unit(Gc, 3, labels, opts)
    assert a.dtype == torch.uint8 and a.shape == (8, 3, 16, 16)
    assert torch.equal(a, b)  # Random noise too is reseeded per unit.
    assert not torch.equal(a, metric_utils.generate_unit(Gc, 4, labels, opts))
    # Sample i depends on (seed, i) only, not on the batching.
    z, _ = metric_utils.sample_latents(0, [24, 25], 8)
    z_alone, _ = metric_utils.sample_latents(0, [25], 8)
    np.testing.assert_array_equal(z[1], z_alone[0])


def test_conditional_labels_come_from_the_dataset(tmp_path, cache_dir):
    images = random_images(20)
    labels = np.arange(20) % 4
    path = write_dataset_zip(str(tmp_path / 'cond.zip'), images, labels)
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=path, use_labels=True)
    seen = []

    class RecordingG(ReplayG):
        def forward(self, z, c, **kw):
            seen.append(c.clone())
            return super().forward(z, c)
    opts = metric_utils.MetricOptions(G=RecordingG(images, c_dim=4), dataset_kwargs=kwargs, device='cpu',
                                      detector=TinyDetector(), batch_size=8)
    metric_utils.compute_feature_stats_for_generator(opts, 'inception', dict(return_features=True),
                                                     max_items=16, capture_all=True)
    c = torch.cat(seen).numpy()
    _, idx = metric_utils.sample_latents(0, range(16), 8, num_labels=20)
    np.testing.assert_array_equal(c, np.eye(4, dtype=np.float32)[labels[idx]])


# ---------------------------------------------------------------------------------------
# Detectors.


def test_detector_drops_keywords_forward_does_not_take():
    class Plain(torch.nn.Module):
        def forward(self, x):
            return x.float().mean([2, 3])
    det = detectors.get_detector('inception', Plain(), 'cpu')
    out = det(torch.full([2, 3, 4, 4], 7, dtype=torch.uint8), return_features=True)
    assert out.shape == (2, 3) and float(out[0, 0]) == 7


def test_official_detector_lookup_and_offline_error(tmp_path, cache_dir, monkeypatch):
    def offline(url, *args, **kwargs):
        raise dnnlib.DownloadError(url, None, OSError('network unreachable'))
    monkeypatch.setattr(dnnlib, 'open_url', offline)
    monkeypatch.delenv(detectors.DETECTOR_DIR_ENV, raising=False)
    with pytest.raises(detectors.DetectorNotFoundError) as err:
        detectors.load_official_detector('inception')
    msg = str(err.value)
    assert 'inception-2015-12-05.pt' in msg and detectors.official_detector_url('inception') in msg
    assert os.path.join(str(cache_dir), 'detectors', 'inception-2015-12-05.pt') in msg
    assert detectors.DETECTOR_DIR_ENV in msg

    # A file placed in the folder named by the environment variable is used, under the official name.
    folder = tmp_path / 'dets'
    folder.mkdir()
    save_tiny_detector(str(folder / 'vgg16.pt'))
    monkeypatch.setenv(detectors.DETECTOR_DIR_ENV, str(folder))
    det = detectors.load_official_detector('vgg16')
    assert det.name == 'vgg16' and det.identity == 'vgg16.pt'
    assert det(torch.zeros([2, 3, 8, 8], dtype=torch.uint8), return_features=True).shape == (2, 16)


def test_detector_file_and_option_parsing(tmp_path):
    path = save_tiny_detector(str(tmp_path / 'feat.pt'))
    det = detectors.load_detector_file(path)
    assert det.name == 'feat' and det.identity.startswith('feat.pt:')
    assert detectors.parse_detector_option([]) is None
    assert detectors.parse_detector_option(['vgg16=v.pt', 'a.pt']) == {'inception': 'a.pt', 'vgg16': 'v.pt'}
    (tmp_path / 'junk.pt').write_bytes(b'not a network')
    with pytest.raises(ValueError, match='neither a TorchScript file'):
        detectors.load_detector_file(str(tmp_path / 'junk.pt'))


# ---------------------------------------------------------------------------------------
# Registry and reporting.


def test_registry_names_and_results(tmp_path):
    for name in metric_main.ESTABLISHED_METRICS + ['fid10k_full', 'fid500', 'pr2003_full', 'ppl_wend200']:
        assert metric_main.is_valid_metric(name), name
    for name in ['fid', 'fid0', 'fid50k_ful', 'ppl_xend', 'pr50k']:
        assert not metric_main.is_valid_metric(name), name
    with pytest.raises(ValueError, match='Valid metrics: fid50k_full'):
        metric_main.get_metric_fn('nope')
    assert metric_main.detector_roles('pr50k3_full') == ['vgg16']
    assert metric_main.detector_roles('kid50k') == ['inception']

    @metric_main.register_metric
    def const_metric(opts):
        return dict(const_metric=1.5)
    result = metric_main.calc_metric('const_metric', device='cpu')
    line = metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'net.pkl'))
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'net.pkl'))
    rows = [json.loads(l) for l in (tmp_path / 'metric-const_metric.jsonl').read_text().splitlines()]
    assert len(rows) == 2 and json.loads(line) == rows[0]
    assert rows[0]['results'] == {'const_metric': 1.5} and rows[0]['snapshot_pkl'] == 'net.pkl'
    assert set(rows[0]) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}
    assert sorted(os.listdir(tmp_path)) == ['metric-const_metric.jsonl']


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_data, cache_dir):
    # Same numbers on CUDA (PR in float16 there) as on the CPU, up to precision.
    images, dataset_kwargs = tiny_data
    results = {}
    for device in ('cpu', 'cuda'):
        for metric in ('fid70_full', 'pr703_full'):
            r = metric_main.calc_metric(metric, G=ReplayG(random_images(70, seed=5)), dataset_kwargs=dataset_kwargs,
                                        device=device, detector=TinyDetector(), batch_size=16, cache=False)
            results[(device, metric)] = r.results
    assert results[('cuda', 'fid70_full')].fid70_full == pytest.approx(results[('cpu', 'fid70_full')].fid70_full, rel=1e-3)
    for key in ('pr703_full_precision', 'pr703_full_recall'):
        assert results[('cuda', 'pr703_full')][key] == pytest.approx(results[('cpu', 'pr703_full')][key], abs=0.03)
