"""style_mixing.py: the grid's layout, the mixing of ws, and agreement with generate.py."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
import style_mixing
from torch_utils import netfile
from training import networks


def _tiny_G():
    torch.manual_seed(1)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
    return G.eval()


@pytest.fixture(scope='module')
def pkl(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('net') / 'net.pkl')
    netfile.save_network_pickle(path, dict(G_ema=_tiny_G()))
    return path


def _read(path):
    return np.asarray(PIL.Image.open(path))


def _run(args):
    return CliRunner().invoke(style_mixing.main, (args if '--device' in args else args + ['--device', 'cpu']))


def test_mix_ws_takes_exactly_the_given_layers():
    rows, cols = torch.randn(2, 6, 4), torch.randn(3, 6, 4)
    ws = style_mixing.mix_ws(rows, cols, [1, 2, 5]).reshape(2, 3, 6, 4)
    for i in range(2):
        for j in range(3):
            for layer in range(6):
                src = cols[j] if layer in (1, 2, 5) else rows[i]
                assert torch.equal(ws[i, j, layer], src[layer])


def test_grid_cells_and_agreement_with_generate(pkl, tmp_path):
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    out, gen = str(tmp_path / 'm'), str(tmp_path / 'g')
    rows, cols = [3, 7], [11, 2, 5]
    res = _run(['--network', pkl, '--rows', '3,7', '--cols', '11,2,5', '--styles', '0-2', '--trunc', '0.7',
                '--outdir', out])
    assert res.exit_code == 0, res.output
    names = set(os.listdir(out))
    assert names == {'grid.png'} | {f'{r}-{c}.png' for r in rows for c in cols} | {f'{s}-{s}.png' for s in rows + cols}
    grid = _read(os.path.join(out, 'grid.png'))
    assert grid.shape == (16 * 3, 16 * 4, 3)
    assert (grid[:16, :16] == 0).all()   # The corner is empty.

    # Row and column images are generate.py's images of the same seeds and truncation.
    assert CliRunner().invoke(generate.main, ['--network', pkl, '--seeds', '2,3,5,7,11', '--trunc', '0.7',
                                              '--outdir', gen, '--device', 'cpu']).exit_code == 0
    for j, s in enumerate(cols):
        np.testing.assert_array_equal(grid[:16, (j + 1) * 16:(j + 2) * 16], _read(os.path.join(gen, f'seed{s:04d}.png')))
        np.testing.assert_array_equal(_read(os.path.join(out, f'{s}-{s}.png')), _read(os.path.join(gen, f'seed{s:04d}.png')))
    for i, s in enumerate(rows):
        np.testing.assert_array_equal(grid[(i + 1) * 16:(i + 2) * 16, :16], _read(os.path.join(gen, f'seed{s:04d}.png')))

    # A cell is the image of the row's ws with layers 0-2 from the column, and sits where it should.
    ws = generate.seeds_to_ws(G, [7, 2], torch.zeros([1, 0]), 0.7, None, 'cpu', 2)
    mixed = ws[0].clone()
    mixed[0:3] = ws[1][0:3]
    ref = generate.synthesize_ws(G, mixed[None], 'const', 1)[0]
    np.testing.assert_array_equal(_read(os.path.join(out, '7-2.png')), ref)
    np.testing.assert_array_equal(grid[32:48, 32:48], ref)       # Row 2 (seed 7), column 2 (seed 2).
    # Mixing changes the image (not the row's nor the column's).
    assert not np.array_equal(ref, _read(os.path.join(gen, 'seed0007.png')))
    assert not np.array_equal(ref, _read(os.path.join(gen, 'seed0002.png')))


def test_all_styles_from_the_column_is_the_column_image(pkl, tmp_path):
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    out = str(tmp_path / 'm')
    res = _run(['--network', pkl, '--rows', '4', '--cols', '9', '--styles', f'0-{G.num_ws - 1}', '--outdir', out])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(_read(os.path.join(out, '4-9.png')), _read(os.path.join(out, '9-9.png')))
    # And no styles from the column: the row image.
    images = style_mixing.style_mix_images(G, [4], [9], [], 1, 'const', torch.device('cpu'), torch.zeros([1, 0]))
    np.testing.assert_array_equal(images[(4, 9)], images[(4, 4)])
    # The default, layers 0-6, is every layer of this 6-ws network: the column image again.
    out2 = str(tmp_path / 'd')
    assert _run(['--network', pkl, '--rows', '4', '--cols', '9', '--outdir', out2]).exit_code == 0
    np.testing.assert_array_equal(_read(os.path.join(out2, '4-9.png')), _read(os.path.join(out, '9-9.png')))


@pytest.mark.parametrize('args, message', [
    (['--styles', '0-99'], 'this network has'),
    (['--styles', 'x'], '--styles'),
    (['--trunc', 'nan'], 'finite'),
    (['--device', 'tpu'], '--device'),
    (['--rows', 'a'], '--rows'),
])
def test_bad_arguments(pkl, tmp_path, args, message):
    res = _run(['--network', pkl, '--rows', '0', '--cols', '1', '--outdir', str(tmp_path / 'x')] + args)
    assert res.exit_code != 0 and message in res.output, res.output
