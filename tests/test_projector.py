"""projector.py: the schedules, the noise regulariser, projection of an image G made itself,
and the command line end to end (a stand-in VGG16 detector built here, since the published
vgg16.pt cannot be fetched in tests)."""

import math
import os
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import generate
import projector
from torch_utils import netfile
from training import networks


class StandInVGG(torch.nn.Module):
    """The interface of vgg16.pt: float images in [0, 255]; with return_lpips=True, features
    of two layers, each unit-normalised along channels and scaled by 1/sqrt(positions), so
    that the squared distance is an LPIPS-like distance. Random fixed weights."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(16, 3, 3, 3, generator=g) / 3)
        self.w2 = torch.nn.Parameter(torch.randn(32, 16, 3, 3, generator=g) / 12)

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        x = img / 127.5 - 1
        f1 = F.leaky_relu(F.conv2d(x, self.w1, padding=1), 0.2)
        f2 = F.leaky_relu(F.conv2d(F.avg_pool2d(f1, 2), self.w2, padding=1), 0.2)
        feats = []
        for f in (f1, f2):
            f = f / (f.square().sum(dim=1, keepdim=True) + 1e-8).sqrt()
            feats.append(f.flatten(1) / float(f.shape[2] * f.shape[3]) ** 0.5)
        return torch.cat(feats, dim=1)


def _tiny_G():
    torch.manual_seed(1)
    return networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()


NO_C = torch.zeros([1, 0])


def _target(G, seed=5):
    """An image G itself makes from a known w (seed 5), uint8 CHW; and that w."""
    w_true = generate.seeds_to_ws(G, [seed], NO_C, 1, None, 'cpu', 1)
    img = generate.synthesize_ws(G, w_true, 'const', 1)[0]
    return torch.from_numpy(img.transpose(2, 0, 1).copy()), w_true


def test_learning_rate_ramp():
    lr = lambda t: projector.learning_rate(t, 0.1, rampdown=0.25, rampup=0.05)  # noqa: E731
    assert lr(0) == 0
    assert lr(0.025) == pytest.approx(0.05)          # Halfway up the linear ramp.
    assert lr(0.05) == pytest.approx(0.1) and lr(0.5) == pytest.approx(0.1) and lr(0.75) == pytest.approx(0.1)
    assert lr(0.875) == pytest.approx(0.05)          # Halfway down the cosine: (1 - cos(pi/2)) / 2.
    assert lr(0.9375) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.25 * math.pi)))
    assert projector.w_noise_scale(0, 2.0, 0.05, 0.75) == pytest.approx(0.1)
    assert projector.w_noise_scale(0.375, 2.0, 0.05, 0.75) == pytest.approx(0.1 * 0.25)
    assert projector.w_noise_scale(0.8, 2.0, 0.05, 0.75) == 0


def test_noise_regularization_against_numpy():
    rng = np.random.RandomState(0)
    maps = [rng.randn(16, 16).astype(np.float32), rng.randn(4, 4).astype(np.float32)]

    def ref(n):  # Written out: shifted products at 16, 8 (after 2x2 means), 4 stops at <= 8.
        total = 0.0
        while True:
            total += np.mean(n * np.roll(n, 1, axis=1)) ** 2 + np.mean(n * np.roll(n, 1, axis=0)) ** 2
            if n.shape[0] <= 8:
                return total
            n = n.reshape(n.shape[0] // 2, 2, n.shape[1] // 2, 2).mean(axis=(1, 3))

    got = float(projector.noise_regularization([torch.from_numpy(m) for m in maps]))
    assert got == pytest.approx(sum(ref(m) for m in maps), rel=1e-5)
    # A smooth map (image structure) is penalised far more than white noise.
    smooth = torch.from_numpy(np.outer(np.sin(np.arange(16) / 3), np.cos(np.arange(16) / 3))).float()
    smooth = (smooth - smooth.mean()) / smooth.std()
    assert float(projector.noise_regularization([smooth])) > 50 * float(projector.noise_regularization([torch.from_numpy(maps[0])]))


def test_projection_of_a_generated_image_gets_close():
    G = _tiny_G()
    target, w_true = _target(G)
    calls = []
    result = projector.project(G, target, detector=StandInVGG(), num_steps=40, w_avg_samples=500,
                               progress=lambda step, total, dist: calls.append((step, total)))
    assert result.ws.shape == (40, G.num_ws, G.w_dim) and result.w.shape == (1, G.num_ws, G.w_dim)
    assert calls[-1] == (40, 40)
    # W: one w for every layer.
    assert torch.equal(result.w[0, 0], result.w[0, -1])
    # The feature distance falls by more than 5x, ...
    assert result.dist[-1] < result.dist[0] / 5
    assert np.isfinite(result.loss).all()
    # ... the image (rendered as generate.py renders the saved w) comes close to the target, ...
    tgt = target.numpy().transpose(1, 2, 0).astype(np.float64)
    start = generate.synthesize_ws(G, projector.w_statistics(G, NO_C, 500, torch.device('cpu'))[0].repeat(1, G.num_ws, 1), 'const', 1)[0]
    proj = generate.synthesize_ws(G, result.w, 'const', 1)[0]
    mse_start, mse_proj = np.mean((start - tgt) ** 2), np.mean((proj - tgt) ** 2)
    assert mse_proj < mse_start / 5, (mse_start, mse_proj)
    # ... and so does w itself (the first step's w is still at the mean).
    assert float((result.w - w_true).norm()) < 0.5 * float((result.ws[0] - w_true[0]).norm())
    # The caller's G is untouched, and the noise maps came out normalised.
    fresh = _tiny_G()
    for (name, a), (_, b) in zip(G.named_buffers(), fresh.named_buffers()):
        assert torch.equal(a, b), name
    for buf in result.noise.values():
        assert abs(float(buf.mean())) < 1e-4 and float(buf.square().mean()) == pytest.approx(1, rel=1e-4)


def test_projection_in_w_plus_and_seed_determinism():
    G = _tiny_G()
    target, _ = _target(G)
    a = projector.project(G, target, detector=StandInVGG(), num_steps=12, w_plus=True, w_avg_samples=200, seed=1)
    b = projector.project(G, target, detector=StandInVGG(), num_steps=12, w_plus=True, w_avg_samples=200, seed=1)
    assert torch.equal(a.ws, b.ws)
    assert a.dist[-1] < a.dist[0]
    # W+: the layers move apart.
    assert not torch.allclose(a.w[0, 0], a.w[0, -1])
    # A 16x16 network is below VGG16's smallest input: the detector is asked to resize.
    seen = []

    class Recording(StandInVGG):
        def forward(self, img, resize_images: bool = True, return_lpips: bool = False):
            seen.append((resize_images, return_lpips))
            return super().forward(img, resize_images, return_lpips)
    projector.project(G, target, detector=Recording(), num_steps=2, w_avg_samples=10)
    assert set(seen) == {(True, True)}
    with pytest.raises(ValueError, match='this network needs'):
        projector.project(G, target[:, :8], detector=StandInVGG(), num_steps=1, w_avg_samples=10)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('proj')
    pkl = str(root / 'net.pkl')
    netfile.save_network_pickle(pkl, dict(G_ema=_tiny_G()))
    det_dir = root / 'detectors'
    det_dir.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit.script deprecation notice.
        torch.jit.script(StandInVGG()).save(str(det_dir / 'vgg16.pt'))   # Found as the official file.
    target = str(root / 'target.png')
    G = _tiny_G()
    img = generate.synthesize_ws(G, generate.seeds_to_ws(G, [5], NO_C, 1, None, 'cpu', 1), 'const', 1)[0]
    # A larger, non-square target: centre-cropped and resized to 16x16.
    big = np.asarray(PIL.Image.fromarray(img).resize((64, 64), PIL.Image.NEAREST))
    PIL.Image.fromarray(np.concatenate([np.zeros([64, 16, 3], np.uint8), big, np.zeros([64, 16, 3], np.uint8)], axis=1)).save(target)
    return pkl, str(det_dir), target


def test_command_line_outputs_for_generate(setup, tmp_path):
    pkl, det_dir, target = setup
    out = str(tmp_path / 'out')
    res = CliRunner().invoke(projector.main, ['--network', pkl, '--target', target, '--outdir', out, '--num-steps', '6',
                                              '--detector-dir', det_dir, '--device', 'cpu', '--save-video=1',
                                              '--video-format', 'gif'])
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(out)) == ['proj.gif', 'proj.png', 'projected_w.npz', 'target.png']
    assert np.asarray(PIL.Image.open(os.path.join(out, 'target.png'))).shape == (16, 16, 3)
    with np.load(os.path.join(out, 'projected_w.npz')) as data:
        assert list(data.keys()) == ['w'] and data['w'].shape == (1, 6, 8) and data['w'].dtype == np.float32
    # generate.py reads the file and makes the same image as proj.png.
    gen = str(tmp_path / 'gen')
    assert CliRunner().invoke(generate.main, ['--network', pkl, '--projected-w', os.path.join(out, 'projected_w.npz'),
                                              '--outdir', gen, '--device', 'cpu']).exit_code == 0
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(os.path.join(gen, 'proj00.png'))),
                                  np.asarray(PIL.Image.open(os.path.join(out, 'proj.png'))))
    # The video: one frame per step (identical neighbours merged by GIF), target beside the projection.
    video = PIL.Image.open(os.path.join(out, 'proj.gif'))
    assert video.size == (32, 16)
    total = 0
    for k in range(video.n_frames):
        video.seek(k)
        total += video.info['duration']
    assert total == 6 * 100


@pytest.mark.parametrize('args, message', [
    (['--target', 'missing.png'], '--target'),
    (['--num-steps', '0'], '--num-steps'),
    (['--w-plus', 'maybe'], '--w-plus'),
    (['--class', '1'], 'unconditional'),
])
def test_bad_arguments(setup, tmp_path, args, message):
    pkl, det_dir, target = setup
    base = ['--network', pkl, '--target', target, '--outdir', str(tmp_path / 'o'), '--detector-dir', det_dir,
            '--device', 'cpu', '--num-steps', '1']
    res = CliRunner().invoke(projector.main, base + args)
    assert res.exit_code != 0 and message in res.output, res.output


def test_unreadable_target(setup, tmp_path):
    pkl, det_dir, _ = setup
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'not an image')
    res = CliRunner().invoke(projector.main, ['--network', pkl, '--target', str(bad), '--outdir', str(tmp_path / 'o'),
                                              '--detector-dir', det_dir, '--device', 'cpu'])
    assert res.exit_code != 0 and '--target' in res.output and 'not a readable image' in res.output
