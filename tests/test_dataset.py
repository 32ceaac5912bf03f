"""training.dataset: the archive format, ImageFolderDataset, InfiniteSampler, --data values."""

import io
import itertools
import json
import os
import pickle
import stat
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch

import dnnlib
from training import dataset as dataset_mod
from training import demo_dataset
from training.dataset import (DatasetWriter, ImageFolderDataset, InfiniteSampler, archive_image_name,
                              resolve_data_path, subset_indices)


def _images(n, c=3, res=8, seed=0):
    return np.random.RandomState(seed).randint(0, 256, size=(n, res, res, c), dtype=np.uint8)


def _make(tmp_path, name='ds.zip', n=10, c=3, res=8, labels='int'):
    """Writes a dataset; labels: 'int' (i % 4), 'float' (2-vectors) or None."""
    imgs = _images(n, c, res)
    with DatasetWriter(str(tmp_path / name)) as w:
        for i in range(n):
            lab = {'int': i % 4, 'float': [i * 0.5, -1.0], None: None}[labels]
            w.add(imgs[i], lab)
    return str(tmp_path / name), imgs


# ---------------------------------------------------------------------------------------
# Format.

def test_archive_names_follow_the_established_layout():
    assert archive_image_name(0) == '00000/img00000000.png'
    assert archive_image_name(1234) == '00001/img00001234.png'
    assert archive_image_name(123456) == '00123/img00123456.png'


def test_writer_output_is_uncompressed_zip_of_pngs_with_labels(tmp_path):
    path, imgs = _make(tmp_path, n=3)
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
        assert sorted(i.filename for i in infos) == ['00000/img00000000.png', '00000/img00000001.png',
                                                     '00000/img00000002.png', 'dataset.json']
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        labels = json.loads(z.read('dataset.json'))
        # An uncompressed PNG is at least as large as the raw pixels.
        assert z.getinfo('00000/img00000000.png').file_size >= 8 * 8 * 3
    assert labels == {'labels': [['00000/img00000000.png', 0], ['00000/img00000001.png', 1],
                                 ['00000/img00000002.png', 2]]}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask  # Usual permissions, not owner-only.
    path2, _ = _make(tmp_path, name='u.zip', n=2, labels=None)
    with zipfile.ZipFile(path2) as z:
        assert json.loads(z.read('dataset.json')) == {'labels': None}


def test_writer_discards_on_error(tmp_path):
    dest = tmp_path / 'x.zip'
    with pytest.raises(ValueError, match='shape'):
        with DatasetWriter(str(dest)) as w:
            w.add(_images(1)[0])
            w.add(_images(1, res=16)[0])
    assert not dest.exists() and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='not a power of two'):
        DatasetWriter(str(dest)).add(np.zeros((12, 12), np.uint8))


def test_reads_established_zip_written_by_hand(tmp_path):
    """A zip laid out by other tools (deflated, labels JSON) reads unchanged."""
    imgs = _images(3, c=1, res=4)
    path = tmp_path / 'old.zip'
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            buf = io.BytesIO()
            PIL.Image.fromarray(imgs[i, :, :, 0]).save(buf, format='png')
            z.writestr(f'00000/img{i:08d}.png', buf.getvalue())
        z.writestr('dataset.json', json.dumps({'labels': [[f'00000/img{i:08d}.png', 6 - i] for i in range(3)]}))
    ds = ImageFolderDataset(str(path), use_labels=True)
    assert ds.image_shape == [1, 4, 4] and ds.label_shape == [7]
    img, lab = ds[1]
    assert np.array_equal(img[0], imgs[1, :, :, 0]) and lab.argmax() == 5 and lab.sum() == 1


# ---------------------------------------------------------------------------------------
# ImageFolderDataset.

@pytest.mark.parametrize('as_folder', [False, True])
def test_dataset_properties_and_items(tmp_path, as_folder):
    path, imgs = _make(tmp_path, name='ds' if as_folder else 'ds.zip', n=10)
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.name == 'ds' and len(ds) == 10
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.label_shape == [4] and ds.label_dim == 4 and ds.has_labels and ds.has_onehot_labels
    img, lab = ds[6]
    assert img.dtype == np.uint8 and np.array_equal(img, imgs[6].transpose(2, 0, 1))
    assert lab.dtype == np.float32 and list(lab) == [0, 0, 1, 0]
    assert np.array_equal(ds.get_label(6), lab)
    d = ds.get_details(6)
    assert d.raw_idx == 6 and d.xflip is False and int(d.raw_label) == 2


def test_unlabelled_use_and_missing_labels(tmp_path):
    path, _ = _make(tmp_path, n=4)
    ds = ImageFolderDataset(path)  # use_labels=False: labels exist but are not used.
    assert ds[0][1].shape == (0,) and ds.label_shape == [0] and not ds.has_labels and ds.label_dim == 0
    path2, _ = _make(tmp_path, name='nolabels.zip', n=4, labels=None)
    with pytest.raises(ValueError, match='"nolabels" has no labels.*--cond'):
        ImageFolderDataset(path2, use_labels=True)
    folder = tmp_path / 'plain'
    folder.mkdir()
    PIL.Image.fromarray(_images(1)[0]).save(folder / 'a.png')
    with pytest.raises(ValueError, match='has no labels'):
        ImageFolderDataset(str(folder), use_labels=True)


def test_float_labels(tmp_path):
    path, _ = _make(tmp_path, n=4, labels='float')
    ds = ImageFolderDataset(path, use_labels=True)
    assert ds.label_shape == [2] and ds.has_labels and not ds.has_onehot_labels
    assert np.allclose(ds[3][1], [1.5, -1.0]) and ds[3][1].dtype == np.float32


def test_xflip_doubles_with_mirrored_copies(tmp_path):
    path, imgs = _make(tmp_path, n=5)
    ds = ImageFolderDataset(path, xflip=True, use_labels=True)
    assert len(ds) == 10
    for i in range(5):
        assert np.array_equal(ds[5 + i][0], ds[i][0][:, :, ::-1])
        assert np.array_equal(ds[5 + i][1], ds[i][1])
    assert ds.get_details(7).xflip is True and ds.get_details(7).raw_idx == 2
    assert not np.array_equal(ds[7][0], ds[2][0])


def test_max_size_subset_is_deterministic(tmp_path):
    path, _ = _make(tmp_path, n=20)
    raw = lambda ds: [ds.get_details(i).raw_idx for i in range(len(ds))]
    a = ImageFolderDataset(path, max_size=6, random_seed=1)
    b = ImageFolderDataset(path, max_size=6, random_seed=1)
    c = ImageFolderDataset(path, max_size=6, random_seed=2)
    assert len(a) == 6 and raw(a) == raw(b) and raw(a) != raw(c)
    assert raw(a) == sorted(raw(a)) and len(set(raw(a))) == 6
    # The rule of the established tools: legacy RandomState shuffle, first max_size, sorted.
    expect = np.arange(20)
    np.random.RandomState(1).shuffle(expect)
    assert raw(a) == sorted(expect[:6].tolist()) == subset_indices(20, 6, 1).tolist()
    assert len(ImageFolderDataset(path, max_size=6, xflip=True)) == 12
    assert len(ImageFolderDataset(path, max_size=100)) == 20


def test_shape_checks(tmp_path):
    path, _ = _make(tmp_path, n=2, res=8)
    with pytest.raises(ValueError, match='resolution 8, but resolution=16'):
        ImageFolderDataset(path, resolution=16)
    assert ImageFolderDataset(path, resolution=8).resolution == 8

    def folder(name, arrays):
        d = tmp_path / name
        d.mkdir()
        for i, a in enumerate(arrays):
            PIL.Image.fromarray(a).save(d / f'{i}.png')
        return str(d)

    with pytest.raises(ValueError, match='not square'):
        ImageFolderDataset(folder('rect', [np.zeros((8, 16, 3), np.uint8)]))
    with pytest.raises(ValueError, match='not a power of two'):
        ImageFolderDataset(folder('npot', [np.zeros((12, 12, 3), np.uint8)]))
    with pytest.raises(ValueError, match='4 channels'):
        ImageFolderDataset(folder('rgba', [np.zeros((8, 8, 4), np.uint8)]))
    # Every image's header is checked when the dataset opens, not when a step first draws it.
    with pytest.raises(ValueError, match=r'1\.png is 8x8 with 1 channels, but 0\.png is 8x8 with 3.*all images must match'):
        ImageFolderDataset(folder('mixed', [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)]))
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(str(tmp_path / 'missing.zip'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='contains no images'):
        ImageFolderDataset(str(tmp_path / 'empty'))


def test_corrupt_image_names_the_file(tmp_path):
    path = tmp_path / 'bad.zip'
    with zipfile.ZipFile(path, 'w') as z:
        buf = io.BytesIO()
        PIL.Image.fromarray(_images(1)[0]).save(buf, format='png')
        z.writestr('00000/img00000000.png', buf.getvalue())
        z.writestr('00000/img00000001.png', b'broken')
    with pytest.raises(ValueError, match=r'1 of 2 images are unusable; first: 00000/img00000001\.png: not a PNG'):
        ImageFolderDataset(str(path))


def test_pickle_and_dataloader_workers(tmp_path):
    path, imgs = _make(tmp_path, n=6)
    ds = ImageFolderDataset(path, use_labels=True)
    ds[0]  # Opens the zip handle, which must not travel with the pickle.
    clone = pickle.loads(pickle.dumps(ds))
    assert np.array_equal(clone[4][0], imgs[4].transpose(2, 0, 1))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1)
    batches = list(loader)
    assert batches[1][0].shape == (3, 3, 8, 8) and torch.equal(batches[1][0][2], torch.from_numpy(ds[5][0]))


def test_pyspng_is_the_png_decoder_and_agrees_with_pillow(tmp_path, monkeypatch):
    """The real pyspng (pinned in requirements-dev) decodes the PNGs; Pillow, used when
    pyspng is missing, gives the same arrays for grey and RGB images."""
    pyspng = pytest.importorskip('pyspng')
    assert dataset_mod.pyspng is pyspng
    calls = []
    real_load = pyspng.load
    monkeypatch.setattr(pyspng, 'load', lambda data: calls.append(len(data)) or real_load(data))
    for c in (1, 3):
        path, imgs = _make(tmp_path, name=f'ds{c}.zip', n=3, c=c, res=16)
        with_spng = [ImageFolderDataset(path)[i][0] for i in range(3)]
        decoded = len(calls)
        monkeypatch.setattr(dataset_mod, 'pyspng', None)
        with_pil = [ImageFolderDataset(path)[i][0] for i in range(3)]
        assert len(calls) == decoded  # The Pillow path does not touch pyspng.
        monkeypatch.setattr(dataset_mod, 'pyspng', pyspng)
        for i in range(3):
            assert with_spng[i].dtype == np.uint8 and with_spng[i].shape == (c, 16, 16)
            assert np.array_equal(with_spng[i], imgs[i].transpose(2, 0, 1))
            assert np.array_equal(with_spng[i], with_pil[i])
    assert len(calls) >= 2 * 3  # Every image read with pyspng present went through it.


def test_pyspng_refuses_a_corrupt_png_with_the_member_name(tmp_path):
    pytest.importorskip('pyspng')
    path, _ = _make(tmp_path, n=2)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    good = members['00000/img00000001.png']
    members['00000/img00000001.png'] = good[:len(good) // 2]  # Truncated: header fine, data cut.
    bad = str(tmp_path / 'bad.zip')
    with zipfile.ZipFile(bad, 'w') as z:
        for n, data in members.items():
            z.writestr(n, data)
    ds = ImageFolderDataset(bad)
    assert ds[0][0].shape == (3, 8, 8)
    with pytest.raises(dataset_mod.DatasetError, match=r'cannot decode image 00000/img00000001\.png'):
        ds[1]


# ---------------------------------------------------------------------------------------
# InfiniteSampler.

def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


def test_sampler_is_deterministic_and_covers_the_dataset():
    data = list(range(50))
    a = _take(InfiniteSampler(data, seed=3), 5000)
    assert a == _take(InfiniteSampler(data, seed=3), 5000)
    assert a != _take(InfiniteSampler(data, seed=4), 5000)
    counts = np.bincount(a, minlength=50)
    assert counts.min() > 50 and counts.max() < 150  # 100 each on average.
    assert _take(InfiniteSampler(data, shuffle=False), 120) == list(range(50)) * 2 + list(range(20))
    once = _take(InfiniteSampler(data, seed=3, window_size=0), 100)
    assert sorted(once[:50]) == list(range(50)) and once[:50] == once[50:]  # No window: one fixed order.


@pytest.mark.parametrize('start', [0, 1, 7, 4095, 4096, 4097, 9000])
def test_sampler_resumes_exactly(start):
    data = list(range(37))
    full = _take(InfiniteSampler(data, seed=1), start + 200)
    assert _take(InfiniteSampler(data, seed=1, start_index=start), 200) == full[start:]
    assert _take(InfiniteSampler(data, shuffle=False, start_index=start), 5) == [(start + k) % 37 for k in range(5)]


@pytest.mark.parametrize('start', [0, 5, 4098])
def test_sampler_ranks_interleave_the_global_stream(start):
    data = list(range(23))
    replicas = 3
    full = _take(InfiniteSampler(data, seed=2), start + 300)[start:]
    per_rank = [_take(InfiniteSampler(data, rank=r, num_replicas=replicas, seed=2, start_index=start), 100)
                for r in range(replicas)]
    # Global step g belongs to rank g % replicas.
    pos = [0] * replicas
    merged = []
    for g in range(start, start + 300):
        r = g % replicas
        merged.append(per_rank[r][pos[r]])
        pos[r] += 1
    assert merged == full


def test_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match='rank 2'):
        InfiniteSampler(list(range(4)), rank=2, num_replicas=2)
    with pytest.raises(ValueError, match='empty'):
        InfiniteSampler([])
    with pytest.raises(ValueError, match='window_size'):
        InfiniteSampler(list(range(4)), window_size=1.5)


# ---------------------------------------------------------------------------------------
# --data values and the demo dataset.

def test_resolve_data_path(tmp_path):
    path, _ = _make(tmp_path, n=2)
    assert resolve_data_path(path) == path
    assert resolve_data_path(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ValueError, match=r"--data 'nowhere\.zip': no such file"):
        resolve_data_path('nowhere.zip')
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(ValueError, match='not a zip archive'):
        resolve_data_path(str(tmp_path / 'notes.txt'))


def test_demo_is_built_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(dnnlib.util, '_cache_dir', str(tmp_path / 'cache'))
    path = resolve_data_path('demo')
    assert path.startswith(str(tmp_path / 'cache')) and os.path.isfile(path)
    mtime = os.stat(path).st_mtime_ns
    assert resolve_data_path('demo') == path and os.stat(path).st_mtime_ns == mtime  # Reused, not rebuilt.
    assert [f for f in os.listdir(os.path.dirname(path)) if f != 'demo.zip'] == []  # No temporaries left.
    ds = ImageFolderDataset(path, use_labels=True)
    assert len(ds) == 1797 and ds.image_shape == [1, 16, 16] and ds.label_shape == [10] and ds.name == 'demo'
    labels = np.array([ds.get_details(i).raw_label for i in range(len(ds))])
    assert np.array_equal(np.bincount(labels), np.bincount(demo_dataset.load_digits_raw()[1]))
    # Real digits: dark background, bright strokes, a filter without heavy ringing.
    mean = np.mean([ds[i][0].mean() for i in range(0, 1797, 97)])
    assert 40 < mean < 120 and ds[0][0][0, 0, 0] < 10
