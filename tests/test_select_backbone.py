"""select_backbone.py: the linear probe, and the CLI ranking random-weight backbones on an
easy case (an untrained generator's fakes against real digits)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import select_backbone
from torch_utils import netfile
from training.heads import backbones as B


@pytest.fixture(autouse=True)
def tiny_backbones():
    """Two cheap VGG16-shaped backbones without official weights."""
    B.register_backbone('vgg16_tiny', B.VGG16Backbone, url=None, width=1 / 16, resolution=32)
    B.register_backbone('vgg16_tinier', B.VGG16Backbone, url=None, width=1 / 64, resolution=32)
    yield
    B.BACKBONES.pop('vgg16_tiny', None)
    B.BACKBONES.pop('vgg16_tinier', None)


def test_probe_accuracy_separable_and_not():
    rng = np.random.RandomState(0)
    a = rng.randn(200, 8)
    assert select_backbone.probe_accuracy(a, rng.randn(200, 8) + 3.0)['accuracy'] > 0.97
    chance = select_backbone.probe_accuracy(a, rng.randn(200, 8))
    assert 0.35 < chance['accuracy'] < 0.65 and chance['num_test'] == 200
    with pytest.raises(ValueError, match='at least 2'):
        select_backbone.probe_accuracy(a[:1], a[:5])


def test_format_table_orders_rows():
    rows = [dict(backbone='x', accuracy=0.9, train_accuracy=1.0, num_test=10),
            dict(backbone='y', accuracy=0.6, train_accuracy=0.7, num_test=10)]
    lines = select_backbone.format_table(rows).splitlines()
    assert lines[1].split()[:3] == ['1', 'x', '0.9000'] and lines[2].split()[:2] == ['2', 'y']


@pytest.fixture(scope='module')
def digits_and_generator(tmp_path_factory):
    """Real 16x16 digits (scikit-learn's bundled set) and a pickle of an untrained G."""
    from sklearn.datasets import load_digits
    from training.dataset import DatasetWriter
    from training.networks import Generator
    root = tmp_path_factory.mktemp('select')
    data = str(root / 'digits.zip')
    digits = load_digits().images[:64]                       # [64, 8, 8] in 0..16
    with DatasetWriter(data) as w:
        for img in digits:
            w.add(np.kron(img * 255 / 16, np.ones([2, 2])).astype(np.uint8))
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    pkl = str(root / 'net.pkl')
    netfile.save_network_pickle(pkl, dict(G_ema=G.eval().requires_grad_(False)))
    return data, pkl


def test_cli_ranks_backbones_and_the_probe_beats_chance(tmp_path, digits_and_generator):
    data, pkl = digits_and_generator
    out = str(tmp_path / 'rank.json')
    res = CliRunner().invoke(select_backbone.main, [
        '--network', pkl, '--data', data, '--cv', 'vgg16_tiny+vgg16_tinier', '--cv-weights', 'vgg16_tiny=random',
        '--cv-weights', 'vgg16_tinier=random', '--num', '48', '--device', 'cpu', '--json', out])
    assert res.exit_code == 0, res.output + repr(res.exception)
    with open(out, encoding='utf-8') as f:
        ranking = json.load(f)['ranking']
    assert {r['backbone'] for r in ranking} == {'vgg16_tiny', 'vgg16_tinier'}
    accs = [r['accuracy'] for r in ranking]
    assert accs == sorted(accs, reverse=True)
    assert accs[0] >= 0.8 and all(r['num_test'] == 48 for r in ranking)   # 96 images, half held out
    assert f'Best: {ranking[0]["backbone"]}' in res.output


def test_cli_errors_name_the_flag(tmp_path, digits_and_generator):
    data, pkl = digits_and_generator
    base = ['--network', pkl, '--data', data, '--device', 'cpu']
    cases = [(['--cv', 'resnet'], '--cv'), (['--cv', 'vgg16_tiny', '--cv-weights', 'bogus'], '--cv-weights'),
             (['--network', str(tmp_path / 'none.pkl')], '--network')]
    for extra, flag in cases:
        res = CliRunner().invoke(select_backbone.main, base + extra)
        assert res.exit_code != 0 and flag in res.output, res.output
    # Missing weights: a clear message naming the flag that provides them.
    res = CliRunner().invoke(select_backbone.main, base + ['--cv', 'vgg16_tiny'])
    assert res.exit_code != 0 and '--cv-weights vgg16_tiny=PATH' in res.output


def test_cli_device_follows_the_shared_convention(tmp_path, digits_and_generator):
    data, pkl = digits_and_generator
    res = CliRunner().invoke(select_backbone.main, ['--network', pkl, '--data', data, '--device', 'tpu'])
    assert res.exit_code == 2 and '--device' in res.output and 'cuda:N' in res.output
    if not torch.cuda.is_available():
        res = CliRunner().invoke(select_backbone.main, ['--network', pkl, '--data', data, '--device', 'cuda:0'])
        assert res.exit_code == 2 and '--device=cpu' in res.output
