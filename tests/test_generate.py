"""generate.py: seeds, determinism, truncation, grids, videos and GIFs, projected ws, bad arguments."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from torch_utils import netfile
from training import networks

# ---------------------------------------------------------------------------------------
# Parsing.


def test_parse_seeds():
    assert generate.parse_seeds('0-3,10,20-22') == [0, 1, 2, 3, 10, 20, 21, 22]
    assert generate.parse_seeds('7') == [7]
    for bad in ['a', '3-1', '-2', '1,,2', '5-']:
        with pytest.raises(ValueError):
            generate.parse_seeds(bad)


def test_parse_grid():
    assert generate.parse_grid('4x2') == (4, 2)
    for bad in ['4', '0x2', 'x', '4*2']:
        with pytest.raises(ValueError):
            generate.parse_grid(bad)


def test_seed_to_z_matches_numpy_legacy_stream():
    z = generate.seed_to_z(123, 16)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, np.random.RandomState(123).randn(16).astype(np.float32))


def test_make_grid_layout():
    imgs = np.stack([np.full([2, 3, 1], i, np.uint8) for i in range(6)])  # 6 images of 2x3
    grid = generate.make_grid(imgs, cols=3, rows=2)
    assert grid.shape == (4, 9, 1)
    # Row-major: image k sits at row k // 3, column k % 3.
    for k in range(6):
        r, c = divmod(k, 3)
        assert (grid[r * 2:(r + 1) * 2, c * 3:(c + 1) * 3] == k).all()


def test_interpolate_ws_frames_and_endpoints():
    keys = torch.randn(3, 4, 5)
    loop = generate.interpolate_ws(keys, frames=6, loop=True)
    assert loop.shape == (18, 4, 5)
    assert torch.equal(loop[0], keys[0]) and torch.equal(loop[6], keys[1]) and torch.equal(loop[12], keys[2])
    once = generate.interpolate_ws(keys, frames=6, loop=False)
    assert once.shape == (13, 4, 5) and torch.equal(once[-1], keys[2])


# ---------------------------------------------------------------------------------------
# End to end with a tiny network file.


def _tiny_G(c_dim=0):
    torch.manual_seed(1)
    G = networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    # Move w_avg away from zero so that truncation has a visible effect.
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
    return G.eval()


@pytest.fixture(scope='module')
def pkl(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('net') / 'net.pkl')
    netfile.save_network_pickle(path, dict(G=_tiny_G(), G_ema=_tiny_G()))
    return path


@pytest.fixture(scope='module')
def cond_pkl(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('net') / 'cond.pkl')
    netfile.save_network_pickle(path, dict(G_ema=_tiny_G(c_dim=3)))
    return path


def _run(args):
    result = CliRunner().invoke(generate.main, args, catch_exceptions=False)
    return result


def _read(path):
    return np.asarray(PIL.Image.open(path))


def test_seed_images_written_and_batch_independent(pkl, tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    assert _run(['--network', pkl, '--seeds', '0-4', '--outdir', a, '--batch', '1', '--device', 'cpu']).exit_code == 0
    assert _run(['--network', pkl, '--seeds', '0-4', '--outdir', b, '--batch', '5', '--device', 'cpu']).exit_code == 0
    names = sorted(os.listdir(a))
    assert names == [f'seed{s:04d}.png' for s in range(5)]
    images = [_read(os.path.join(a, n)) for n in names]
    assert images[0].shape == (16, 16, 3) and images[0].dtype == np.uint8
    for n, img in zip(names, images):
        np.testing.assert_array_equal(img, _read(os.path.join(b, n)))
    # Different seeds give different images.
    assert not np.array_equal(images[0], images[1])
    # A seed's image does not depend on which other seeds share its batch.
    c = str(tmp_path / 'c')
    assert _run(['--network', pkl, '--seeds', '3,9', '--outdir', c, '--batch', '2', '--device', 'cpu']).exit_code == 0
    np.testing.assert_array_equal(_read(os.path.join(c, 'seed0003.png')), images[3])


def test_truncation_psi_zero_is_the_average_image(pkl, tmp_path):
    out = str(tmp_path / 'o')
    assert _run(['--network', pkl, '--seeds', '0-3', '--trunc', '0', '--outdir', out, '--device', 'cpu']).exit_code == 0
    images = [_read(os.path.join(out, f'seed{s:04d}.png')) for s in range(4)]
    for img in images[1:]:
        np.testing.assert_array_equal(img, images[0])
    # And it is the image of w_avg itself.
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    ws = G.mapping.w_avg[None, None].repeat(1, G.num_ws, 1)
    ref = generate.synthesize_ws(G, ws, 'const', 1)[0]
    np.testing.assert_array_equal(images[0], ref)


def test_grid_is_the_tiled_seed_images(pkl, tmp_path):
    out = str(tmp_path / 'g')
    assert _run(['--network', pkl, '--seeds', '0-5', '--grid', '3x2', '--outdir', out, '--device', 'cpu']).exit_code == 0
    grid = _read(os.path.join(out, 'grid-seeds0-5.png'))
    assert grid.shape == (32, 48, 3)
    single = str(tmp_path / 's')
    assert _run(['--network', pkl, '--seeds', '4', '--outdir', single, '--device', 'cpu']).exit_code == 0
    # Seed 4 is the fifth cell: row 1, column 1.
    np.testing.assert_array_equal(grid[16:32, 16:32], _read(os.path.join(single, 'seed0004.png')))


def test_video_written_and_readable(pkl, tmp_path):
    imageio = pytest.importorskip('imageio')
    pytest.importorskip('imageio_ffmpeg')
    out = str(tmp_path / 'v')
    res = _run(['--network', pkl, '--seeds', '0,1,2', '--video', '--frames', '4', '--outdir', out, '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    path = os.path.join(out, 'video-seeds0-2.mp4')
    reader = imageio.get_reader(path, format='FFMPEG')
    frames = [f for f in reader]
    reader.close()
    assert len(frames) == 12
    assert frames[0].shape == (16, 16, 3)


@pytest.mark.parametrize('keys, frames, loop, hold', [(3, 4, True, 0), (3, 4, False, 0), (2, 3, True, 2), (4, 1, False, 3)])
def test_video_frame_schedule(pkl, keys, frames, loop, hold):
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    key_ws = torch.randn(keys, G.num_ws, G.w_dim)
    out = list(generate.iter_video_frames(G, key_ws, frames, loop, hold, 'const', batch=3))
    assert len(out) == generate.video_frame_count(keys, frames, loop, hold)
    # Without holds the frames are those of interpolate_ws, whatever the batching.
    ref = generate.synthesize_ws(G, generate.interpolate_ws(key_ws, frames, loop), 'const', 5)
    if hold == 0:
        np.testing.assert_array_equal(np.stack(out), ref)
    # With holds, each keyframe is shown 1 + hold times in a row, then its transition follows.
    key_img = generate.synthesize_ws(G, key_ws, 'const', keys)
    for k in range(keys):
        start = k * (frames + hold)
        for j in range(1 + hold):
            np.testing.assert_array_equal(out[start + j], key_img[k])
    assert len(out) - keys * hold == len(ref)


def test_grid_video_frames_tile_the_cells(pkl):
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    key_ws = torch.randn(3 * 2, G.num_ws, G.w_dim)   # 3 keyframes of a 2x1 grid.
    out = list(generate.iter_video_frames(G, key_ws, 4, True, 0, 'const', batch=5, grid=(2, 1)))
    assert len(out) == 12 and out[0].shape == (16, 32, 3)
    # Cell i of keyframe k is row k * cells + i; the first frame is keyframe 0, frame 4 keyframe 1.
    keys_img = generate.synthesize_ws(G, key_ws, 'const', 6)
    np.testing.assert_array_equal(out[0], generate.make_grid(keys_img[0:2], 2, 1))
    np.testing.assert_array_equal(out[4], generate.make_grid(keys_img[2:4], 2, 1))
    # Halfway between keyframes 1 and 2, cell 1 is the image of the midpoint of its own ws.
    mid = generate.synthesize_ws(G, torch.lerp(key_ws[3:4], key_ws[5:6], 0.5), 'const', 1)[0]
    np.testing.assert_array_equal(out[6][:, 16:], mid)


def _gif_frames(path):
    img = PIL.Image.open(path)
    frames, durations = [], []
    for k in range(img.n_frames):
        img.seek(k)
        frames.append(np.asarray(img.convert('RGB')))
        durations.append(img.info['duration'])
    return frames, durations, img.info.get('loop')


@pytest.mark.parametrize('flags', [['--video'], ['--video=1'], ['--video', 'true']])
def test_gif_written_with_expected_frames(pkl, tmp_path, flags):
    out = str(tmp_path / 'g')
    res = _run(['--network', pkl, '--seeds', '0,1,2', *flags, '--video-format', 'gif', '--frames', '4',
                '--fps', '25', '--outdir', out, '--device', 'cpu'])
    assert res.exit_code == 0, res.output
    frames, durations, loop = _gif_frames(os.path.join(out, 'video-seeds0-2.gif'))
    assert len(frames) == 12 and frames[0].shape == (16, 16, 3)
    assert durations == [40] * 12 and loop == 0
    # Close to the first keyframe's image (a GIF has at most 256 colours).
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    key = generate.synthesize_ws(G, generate.seeds_to_ws(G, [0], torch.zeros([1, 0]), 1, None, 'cpu', 1), 'const', 1)[0]
    assert np.abs(frames[0].astype(int) - key.astype(int)).mean() < 4


def test_gif_grid_hold_and_no_loop(pkl, tmp_path):
    out = str(tmp_path / 'g')
    # Old spelling --no-loop still works; --loop=0 is the new one.
    for loop_flag in (['--no-loop'], ['--loop=0']):
        res = _run(['--network', pkl, '--seeds', '0-5', '--grid', '2x1', '--video', '--video-format', 'gif',
                    '--frames', '3', '--hold', '2', '--fps', '10', '--outdir', out, '--device', 'cpu', *loop_flag])
        assert res.exit_code == 0, res.output
        assert f'Saved {generate.video_frame_count(3, 3, False, 2)} frames' in res.output   # 2*(3+2)+1+2 = 13
        frames, durations, _ = _gif_frames(os.path.join(out, 'video-seeds0-5.gif'))
        # Held frames are stored once with a longer duration (identical GIF frames are merged).
        assert frames[0].shape == (16, 32, 3)
        assert len(frames) == 7 and sum(durations) == 13 * 100
        assert durations[0] == durations[3] == durations[6] == 300


def test_mp4_without_its_writer_is_one_clear_error(pkl, tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, 'imageio_ffmpeg', None)  # Import fails as if not installed.
    res = CliRunner().invoke(generate.main, ['--network', pkl, '--seeds', '0,1', '--video', '--outdir',
                                             str(tmp_path / 'v'), '--device', 'cpu'])
    assert res.exit_code != 0 and '--video-format' in res.output and 'imageio-ffmpeg' in res.output
    assert not os.path.exists(tmp_path / 'v')


def test_projected_w(pkl, tmp_path):
    G = netfile.load_network(pkl, keys=('G_ema',))['G_ema']
    w = np.random.RandomState(0).randn(2, G.num_ws, G.w_dim).astype(np.float32)
    npz = str(tmp_path / 'w.npz')
    np.savez(npz, w=w)
    out = str(tmp_path / 'p')
    assert _run(['--network', pkl, '--projected-w', npz, '--outdir', out, '--device', 'cpu']).exit_code == 0
    assert sorted(os.listdir(out)) == ['proj00.png', 'proj01.png']
    np.testing.assert_array_equal(_read(os.path.join(out, 'proj01.png')),
                                  generate.synthesize_ws(G, torch.from_numpy(w), 'const', 2)[1])
    bad = str(tmp_path / 'bad.npz')
    np.savez(bad, w=w[:, :1])
    res = CliRunner().invoke(generate.main, ['--network', pkl, '--projected-w', bad, '--outdir', out, '--device', 'cpu'])
    assert res.exit_code != 0 and 'w has shape' in res.output


def test_conditional_network_needs_class(cond_pkl, pkl, tmp_path):
    out = str(tmp_path / 'c')
    res = CliRunner().invoke(generate.main, ['--network', cond_pkl, '--seeds', '0', '--outdir', out, '--device', 'cpu'])
    assert res.exit_code != 0 and '--class' in res.output
    res = CliRunner().invoke(generate.main, ['--network', cond_pkl, '--seeds', '0', '--class', '5', '--outdir', out, '--device', 'cpu'])
    assert res.exit_code != 0 and '--class' in res.output
    assert _run(['--network', cond_pkl, '--seeds', '0', '--class', '2', '--outdir', out, '--device', 'cpu']).exit_code == 0
    res = CliRunner().invoke(generate.main, ['--network', pkl, '--seeds', '0', '--class', '1', '--outdir', out, '--device', 'cpu'])
    assert res.exit_code != 0 and 'unconditional' in res.output


@pytest.mark.parametrize('args, message', [
    (['--seeds', 'x'], 'neither a seed nor a range'),
    (['--seeds', '0-2', '--grid', '2x2'], 'needs 4 seeds'),
    (['--seeds', '0', '--video'], 'at least two seeds'),
    (['--seeds', '0-3', '--projected-w', 'w.npz', '--video'], 'cannot be combined'),
    (['--seeds', '0-3', '--grid', '2x2', '--video'], 'two seeds per grid cell'),
    (['--seeds', '0-6', '--grid', '2x2', '--video=1'], 'multiple of 4 seeds'),
    (['--seeds', '0', '--trunc', 'nan'], 'not a finite number'),
    (['--seeds', '0', '--device', 'tpu'], '--device'),
    ([], '--seeds is required'),
    (['--seeds', '0', '--trunc-cutoff', '-1'], '--trunc-cutoff'),
])
def test_bad_arguments_rejected(pkl, tmp_path, args, message):
    res = CliRunner().invoke(generate.main, ['--network', pkl, '--outdir', str(tmp_path / 'x'), '--device', 'cpu'] + args)
    assert res.exit_code != 0
    assert message in res.output


def test_missing_network_file(tmp_path):
    res = CliRunner().invoke(generate.main, ['--network', str(tmp_path / 'nope.pkl'), '--seeds', '0', '--outdir', str(tmp_path)])
    assert res.exit_code != 0
    assert 'nope.pkl' in res.output
