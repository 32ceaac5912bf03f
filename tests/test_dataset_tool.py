"""dataset_tool.py: every source format, the options, and every bad-input case."""

import gzip
import io
import json
import os
import pickle
import sys
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import dataset_tool
from dataset_tool import DatasetToolError, convert_dataset
from training.dataset import ImageFolderDataset, archive_image_name, subset_indices


# ---------------------------------------------------------------------------------------
# Helpers.

def _rgb(seed, size=(8, 8)):
    """A random RGB image of the given (W, H)."""
    return np.random.RandomState(seed).randint(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)


def _save(path, arr, mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(arr).convert(mode or ('L' if arr.ndim == 2 else 'RGB')).save(path)


def _read_zip(path):
    """Returns ({name: HWC array}, labels json) of a dataset zip."""
    with zipfile.ZipFile(path) as z:
        images = {}
        for n in z.namelist():
            if n.endswith('.png'):
                assert z.getinfo(n).compress_type == zipfile.ZIP_STORED
                arr = np.array(PIL.Image.open(io.BytesIO(z.read(n))))
                images[n] = arr[:, :, None] if arr.ndim == 2 else arr
        return images, json.loads(z.read('dataset.json'))['labels']


def _folder(tmp_path, n=6, labels=True):
    """A nested folder of n 8x8 RGB PNGs, with labels i % 3 in dataset.json."""
    src = tmp_path / 'src'
    names = [f'a/img{i}.png' if i % 2 else f'b/c/img{i}.png' for i in range(n)]
    for i, name in enumerate(names):
        _save(str(src / name), _rgb(i))
    if labels:
        (src / 'dataset.json').write_text(json.dumps({'labels': [[name, i % 3] for i, name in enumerate(names)]}))
    return src, names


def _no_leftovers(directory):
    return [f for f in os.listdir(directory) if '.tmp-' in f]


# ---------------------------------------------------------------------------------------
# Sources.

def test_folder_source_with_labels_roundtrips(tmp_path):
    src, names = _folder(tmp_path, n=6)
    dest = tmp_path / 'out.zip'
    report = convert_dataset(str(src), str(dest), progress=False)
    assert report.num_images == 6 and report.shape == (8, 8, 3) and report.has_labels
    images, labels = _read_zip(dest)
    # Sorted source order; pixels exact (PNG is lossless); labels follow their image.
    order = sorted(range(6), key=lambda i: names[i])
    for k, i in enumerate(order):
        assert np.array_equal(images[archive_image_name(k)], _rgb(i))
        assert labels[k] == [archive_image_name(k), i % 3]


def test_zip_source_and_folder_dest(tmp_path):
    zpath = tmp_path / 'in.zip'
    with zipfile.ZipFile(zpath, 'w', compression=zipfile.ZIP_DEFLATED) as z:
        for i in range(3):
            buf = io.BytesIO()
            PIL.Image.fromarray(_rgb(i)).save(buf, format='png')
            z.writestr(f'x/{i}.png', buf.getvalue())
        z.writestr('dataset.json', json.dumps({'labels': {f'x/{i}.png': [0.5 * i, 1.0] for i in range(3)}}))
    dest = tmp_path / 'outdir'
    convert_dataset(str(zpath), str(dest), progress=False)
    ds = ImageFolderDataset(str(dest), use_labels=True)
    assert len(ds) == 3 and not ds.has_onehot_labels and ds.label_shape == [2]
    assert np.array_equal(ds[2][0], _rgb(2).transpose(2, 0, 1))
    assert np.allclose(ds[2][1], [1.0, 1.0])


def _write_cifar(path, per_batch=4):
    rng = np.random.RandomState(1)
    batches = []
    with tarfile.open(path, 'w:gz') as tar:
        for b in range(1, 6):
            data = rng.randint(0, 256, size=(per_batch, 3072), dtype=np.uint8)
            labels = [int(x) for x in rng.randint(0, 10, size=per_batch)]
            batches.append((data, labels))
            payload = pickle.dumps({b'batch_label': b'x', b'data': data, b'labels': labels}, protocol=2)
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{b}')
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        extra = pickle.dumps({b'data': np.zeros((1, 3072), np.uint8), b'labels': [0]}, protocol=2)
        info = tarfile.TarInfo('cifar-10-batches-py/test_batch')  # Must be ignored.
        info.size = len(extra)
        tar.addfile(info, io.BytesIO(extra))
    return batches


def test_cifar10_archive(tmp_path):
    path = tmp_path / 'cifar-10-python.tar.gz'
    batches = _write_cifar(path)
    dest = tmp_path / 'cifar.zip'
    report = convert_dataset(str(path), str(dest), progress=False)
    assert report.num_images == 20 and report.shape == (32, 32, 3)
    images, labels = _read_zip(dest)
    data = np.concatenate([b[0] for b in batches])
    lab = sum((b[1] for b in batches), [])
    for i in (0, 7, 19):
        # CIFAR stores planes (R, G, B), each 32x32 row-major.
        assert np.array_equal(images[archive_image_name(i)], data[i].reshape(3, 32, 32).transpose(1, 2, 0))
        assert labels[i][1] == lab[i]


def test_cifar_unpickler_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('echo pwned',))
    path = tmp_path / 'evil.tar.gz'
    with tarfile.open(path, 'w:gz') as tar:
        payload = pickle.dumps({'data': Evil(), 'labels': [0]}, protocol=2)
        info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DatasetToolError, match='refusing to load'):
        convert_dataset(str(path), str(tmp_path / 'o.zip'), progress=False)


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b''.join(int(d).to_bytes(4, 'big') for d in arr.shape)
    with gzip.open(path, 'wb') as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_mnist_idx_files_padded_to_32(tmp_path):
    rng = np.random.RandomState(2)
    images = rng.randint(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(tmp_path / 'train-images-idx3-ubyte.gz', images)
    _write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', labels)
    dest = tmp_path / 'mnist.zip'
    report = convert_dataset(str(tmp_path), str(dest), progress=False)
    assert report.shape == (32, 32, 1) and report.has_labels
    out, lab = _read_zip(dest)
    img = out[archive_image_name(2)][:, :, 0]
    assert np.array_equal(img[2:30, 2:30], images[2]) and img[:2].sum() == 0 and img[:, 30:].sum() == 0
    assert [x[1] for x in lab] == [3, 1, 4, 1, 5]


def test_mnist_truncated_idx_is_an_error(tmp_path):
    path = tmp_path / 'train-images-idx3-ubyte.gz'
    with gzip.open(path, 'wb') as f:
        f.write(bytes([0, 0, 8, 3]) + (10).to_bytes(4, 'big') + (28).to_bytes(4, 'big') * 2 + b'\0' * 100)
    with pytest.raises(DatasetToolError, match='truncated'):
        convert_dataset(str(path), str(tmp_path / 'o.zip'), progress=False)


def test_lmdb_without_package_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / 'db').mkdir()
    (tmp_path / 'db' / 'data.mdb').write_bytes(b'')
    monkeypatch.setitem(sys.modules, 'lmdb', None)  # Import fails even if lmdb is installed.
    with pytest.raises(DatasetToolError, match='pip install lmdb'):
        convert_dataset(str(tmp_path / 'db'), str(tmp_path / 'o.zip'), progress=False)


def _lmdb(path, records):
    lmdb = pytest.importorskip('lmdb')
    env = lmdb.open(str(path), map_size=1 << 24, subdir=True)
    with env.begin(write=True) as txn:
        for key, value in records:
            txn.put(key, value)
    env.close()
    assert (path / 'data.mdb').is_file()


def _encoded(arr, fmt, **kwargs):
    buf = io.BytesIO()
    PIL.Image.fromarray(arr).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_lmdb_source_real_database(tmp_path):
    """An LSUN-style LMDB (keys: names, values: encoded webp/png images), written with the
    real lmdb package: every record comes out in key order, pixel for pixel."""
    imgs = [_rgb(i, (8, 8)) for i in range(5)]
    records = [(f'{i:04d}'.encode(), _encoded(imgs[i], 'webp', lossless=True) if i % 2 else _encoded(imgs[i], 'png'))
               for i in range(5)]
    _lmdb(tmp_path / 'db', records[::-1])  # LMDB sorts by key whatever the insertion order.
    report = convert_dataset(str(tmp_path / 'db'), str(tmp_path / 'o.zip'), progress=False)
    assert report.num_images == 5 and report.shape == (8, 8, 3) and not report.has_labels
    out, _ = _read_zip(tmp_path / 'o.zip')
    for i in range(5):
        assert np.array_equal(out[archive_image_name(i)], imgs[i])


def test_lmdb_source_subset_and_transform(tmp_path):
    """--subset with --seed decodes exactly the selected records (the same indices as the
    loader's max_size), and the transform applies to them."""
    imgs = [_rgb(i, (16, 12)) for i in range(7)]
    _lmdb(tmp_path / 'db', [(f'{i:04d}'.encode(), _encoded(imgs[i], 'png')) for i in range(7)])
    report = convert_dataset(str(tmp_path / 'db'), str(tmp_path / 'o.zip'), transform='center-crop', width=8,
                             height=8, subset=3, seed=1, progress=False)
    assert report.num_images == 3 and report.shape == (8, 8, 3)
    full = tmp_path / 'full.zip'
    convert_dataset(str(tmp_path / 'db'), str(full), transform='center-crop', width=8, height=8, progress=False)
    whole, _ = _read_zip(full)
    sub, _ = _read_zip(tmp_path / 'o.zip')
    chosen = sorted(subset_indices(7, 3, seed=1))
    assert [np.array_equal(sub[archive_image_name(k)], whole[archive_image_name(j)]) for k, j in enumerate(chosen)] \
        == [True] * 3


def test_lmdb_undecodable_record_names_its_key(tmp_path):
    _lmdb(tmp_path / 'db', [(b'good', _encoded(_rgb(0), 'png')), (b'zz-bad', b'not an image')])
    with pytest.raises(DatasetToolError, match='zz-bad'):
        convert_dataset(str(tmp_path / 'db'), str(tmp_path / 'o.zip'), progress=False)


def test_demo_source(tmp_path):
    from training import demo_dataset
    report = convert_dataset('demo', str(tmp_path / 'demo.zip'), max_images=50, progress=False)
    res = demo_dataset.DEMO_RESOLUTION
    assert report.num_images == 50 and report.shape == (res, res, 1) and report.has_labels
    images, labels = _read_zip(tmp_path / 'demo.zip')
    first = next(demo_dataset.iter_demo_images())
    assert np.array_equal(images[archive_image_name(0)][:, :, 0], first[0])
    assert [lab[1] for lab in labels[:10]] == list(range(10))  # The digits ship as 0, 1, ..., 9, ...


# ---------------------------------------------------------------------------------------
# Options.

def test_subset_is_reproducible_and_matches_loader_max_size(tmp_path):
    src, _ = _folder(tmp_path, n=12)
    full = tmp_path / 'full.zip'
    convert_dataset(str(src), str(full), progress=False)
    outs = []
    for k, seed in enumerate([5, 5, 6]):
        dest = tmp_path / f's{k}.zip'
        assert convert_dataset(str(src), str(dest), subset=4, seed=seed, progress=False).num_images == 4
        outs.append(_read_zip(dest)[0])
    same = all(np.array_equal(outs[0][n], outs[1][n]) for n in outs[0])
    differ = any(not np.array_equal(outs[0][n], outs[2][n]) for n in outs[0])
    assert same and differ
    # The subset equals the loader's max_size subset with the same seed.
    ds = ImageFolderDataset(str(full), max_size=4, random_seed=5)
    for k in range(4):
        assert np.array_equal(ds[k][0], outs[0][archive_image_name(k)].transpose(2, 0, 1))
    assert list(subset_indices(12, 4, 5)) == [ds.get_details(k).raw_idx for k in range(4)]


def test_subset_then_max_images(tmp_path):
    src, _ = _folder(tmp_path, n=12)
    a = convert_dataset(str(src), str(tmp_path / 'a.zip'), subset=6, seed=3, progress=False)
    b = convert_dataset(str(src), str(tmp_path / 'b.zip'), subset=6, seed=3, max_images=2, progress=False)
    assert (a.num_images, b.num_images) == (6, 2)
    ia, ib = _read_zip(tmp_path / 'a.zip')[0], _read_zip(tmp_path / 'b.zip')[0]
    assert all(np.array_equal(ia[n], ib[n]) for n in ib)
    with pytest.raises(DatasetToolError, match='only 12 images'):
        convert_dataset(str(src), str(tmp_path / 'c.zip'), subset=13, progress=False)


def test_transforms_geometry(tmp_path):
    # A 32x16 image whose columns are numbered: crops show which columns survive.
    cols = np.tile(np.arange(32, dtype=np.uint8)[None, :] * 8, (16, 1))
    img = np.stack([cols, cols, np.full_like(cols, 200)], axis=2)
    src = tmp_path / 'src'
    _save(str(src / 'wide.png'), img)

    def run(name, transform, w, h):
        dest = tmp_path / f'{name}.zip'
        convert_dataset(str(src), str(dest), transform=transform, width=w, height=h, progress=False)
        return _read_zip(dest)[0][archive_image_name(0)]

    crop = run('crop', 'center-crop', 16, 16)  # Columns 8..23, no resampling.
    assert crop.shape == (16, 16, 3) and np.array_equal(crop[:, :, 0], cols[:, 8:24])
    wide = run('wide', 'center-crop-wide', 32, 16)  # Whole image, letterboxed into 32x32.
    assert wide.shape == (32, 32, 3)
    assert wide[:8].max() == 0 and wide[24:].max() == 0 and np.array_equal(wide[8:24], img)
    long = run('long', 'resize-long', 16, 16)  # Scaled to 16x8, padded top and bottom.
    assert long.shape == (16, 16, 3) and long[:4].max() == 0 and long[12:].max() == 0
    assert abs(int(long[4:12, :, 2].mean()) - 200) <= 2  # The constant plane stays constant.


def test_resize_uses_lanczos(tmp_path):
    src = tmp_path / 'src'
    arr = _rgb(0, (16, 16))
    _save(str(src / 'a.png'), arr)
    convert_dataset(str(src), str(tmp_path / 'o.zip'), width=8, height=8, progress=False)
    out = _read_zip(tmp_path / 'o.zip')[0][archive_image_name(0)]
    ref = np.asarray(PIL.Image.fromarray(arr).resize((8, 8), PIL.Image.Resampling.LANCZOS))
    assert np.array_equal(out, ref)


# ---------------------------------------------------------------------------------------
# Bad input: a clear error naming the file, nothing written, or a reported skip.

def test_corrupt_image_error_and_skip(tmp_path):
    src, _ = _folder(tmp_path, n=4, labels=False)
    (src / 'z_bad.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)
    dest = tmp_path / 'o.zip'
    with pytest.raises(DatasetToolError, match=r'z_bad\.png: cannot be read.*Nothing was written'):
        convert_dataset(str(src), str(dest), progress=False)
    assert not dest.exists() and not _no_leftovers(tmp_path)
    report = convert_dataset(str(src), str(dest), skip_bad=True, progress=False)
    assert report.num_images == 4 and [s[0] for s in report.skipped] == ['z_bad.png']


def test_truncated_image_is_reported(tmp_path):
    src, _ = _folder(tmp_path, n=2, labels=False)
    buf = io.BytesIO()
    PIL.Image.fromarray(_rgb(9, (64, 64))).save(buf, format='jpeg')
    (src / 'cut.jpg').write_bytes(buf.getvalue()[:300])
    with pytest.raises(DatasetToolError, match=r'cut\.jpg: cannot be read'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), progress=False)


def test_mixed_channels_error_or_explicit_conversion(tmp_path):
    src, _ = _folder(tmp_path, n=3, labels=False)
    _save(str(src / 'gray.png'), _rgb(7)[:, :, 0])
    with pytest.raises(DatasetToolError, match=r'gray\.png: has 1 channel.*--channels'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), progress=False)
    report = convert_dataset(str(src), str(tmp_path / 'o3.zip'), channels='3', progress=False)
    assert report.shape == (8, 8, 3) and report.conversions == {'grayscale converted to RGB': 1}
    report = convert_dataset(str(src), str(tmp_path / 'o1.zip'), channels='1', progress=False)
    assert report.shape == (8, 8, 1) and report.conversions == {'RGB converted to grayscale': 3}


def test_alpha_rejected_unless_converted(tmp_path):
    src = tmp_path / 'src'
    rgba = np.concatenate([_rgb(1), np.full((8, 8, 1), 255, np.uint8)], axis=2)
    _save(str(src / 'opaque.png'), rgba, 'RGBA')
    rgba[:4, :, 3] = 0  # Top half transparent.
    _save(str(src / 'transparent.png'), rgba, 'RGBA')
    with pytest.raises(DatasetToolError, match=r'transparent\.png: has a transparent alpha channel'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), progress=False)
    report = convert_dataset(str(src), str(tmp_path / 'o.zip'), channels='3', progress=False)
    assert report.conversions == {'opaque alpha channel dropped': 1, 'alpha composited over black': 1}
    out = _read_zip(tmp_path / 'o.zip')[0][archive_image_name(1)]
    assert out[:4].max() == 0 and np.array_equal(out[4:], _rgb(1)[4:])


def test_palette_and_16_bit_images_are_converted_and_counted(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    PIL.Image.fromarray(_rgb(0)).convert('P', palette=PIL.Image.Palette.ADAPTIVE, colors=8).save(src / 'p.png')
    report = convert_dataset(str(src), str(tmp_path / 'p.zip'), progress=False)
    assert report.shape == (8, 8, 3) and report.conversions == {}  # A palette is colour: RGB, lossless.
    deep = tmp_path / 'deep'
    deep.mkdir()
    PIL.Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(deep / 'a.png')
    PIL.Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)).save(deep / 'b.png')
    report = convert_dataset(str(deep), str(tmp_path / 'd.zip'), progress=False)
    assert report.shape == (8, 8, 1) and report.conversions == {'16-bit reduced to 8-bit': 2}
    out = _read_zip(tmp_path / 'd.zip')[0]
    assert out[archive_image_name(0)].min() == 255 and out[archive_image_name(1)].max() == 100


def test_dest_of_the_other_kind_is_not_overwritten(tmp_path):
    src, _ = _folder(tmp_path, n=2)
    (tmp_path / 'o.zip').mkdir()
    with pytest.raises(DatasetToolError, match='is a folder'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), overwrite=True, progress=False)
    assert (tmp_path / 'o.zip').is_dir()


def test_different_sizes_need_a_transform(tmp_path):
    src, _ = _folder(tmp_path, n=2, labels=False)
    _save(str(src / 'big.png'), _rgb(3, (16, 12)))
    with pytest.raises(DatasetToolError, match=r'big\.png: is 16x12 but .* is 8x8; pass --transform'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), progress=False)
    report = convert_dataset(str(src), str(tmp_path / 'o.zip'), transform='center-crop', width=8, height=8,
                             progress=False)
    assert report.num_images == 3


@pytest.mark.parametrize('size,kwargs,match', [
    ((12, 12), {}, 'power-of-two'),
    ((8, 8), dict(width=12, height=12), 'power-of-two'),
    ((8, 8), dict(width=16, height=8), 'square'),
    ((8, 8), dict(transform='center-crop'), 'needs an output size'),
    ((8, 8), dict(transform='center-crop-wide', width=8, height=16), 'width >= height'),
])
def test_bad_output_size(tmp_path, size, kwargs, match):
    src = tmp_path / 'src'
    _save(str(src / 'a.png'), _rgb(0, size))
    with pytest.raises(DatasetToolError, match=match):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), progress=False, **kwargs)
    assert not (tmp_path / 'o.zip').exists() and not _no_leftovers(tmp_path)


def test_empty_and_missing_sources(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('no images here')
    with pytest.raises(DatasetToolError, match='holds no images'):
        convert_dataset(str(tmp_path / 'empty'), str(tmp_path / 'o.zip'), progress=False)
    with pytest.raises(DatasetToolError, match='no such file'):
        convert_dataset(str(tmp_path / 'nope'), str(tmp_path / 'o.zip'), progress=False)
    assert not (tmp_path / 'o.zip').exists()


def test_all_skipped_writes_nothing(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'a.png').write_bytes(b'not an image')
    with pytest.raises(DatasetToolError, match='all 1 selected images were skipped'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), skip_bad=True, progress=False)
    assert not (tmp_path / 'o.zip').exists() and not _no_leftovers(tmp_path)


def test_existing_destination(tmp_path):
    src, _ = _folder(tmp_path, n=2)
    dest = tmp_path / 'o.zip'
    dest.write_bytes(b'keep me')
    with pytest.raises(DatasetToolError, match=r'o\.zip already exists.*--overwrite'):
        convert_dataset(str(src), str(dest), progress=False)
    assert dest.read_bytes() == b'keep me'
    convert_dataset(str(src), str(dest), overwrite=True, progress=False)
    assert len(_read_zip(dest)[0]) == 2
    (tmp_path / 'd').mkdir()
    with pytest.raises(DatasetToolError, match='already exists'):
        convert_dataset(str(src), str(tmp_path / 'd'), progress=False)


def test_missing_label_names_the_file(tmp_path):
    src, names = _folder(tmp_path, n=3)
    _save(str(src / 'new.png'), _rgb(5))
    with pytest.raises(DatasetToolError, match=r'new\.png: has no label in dataset\.json'):
        convert_dataset(str(src), str(tmp_path / 'o.zip'), progress=False)


# ---------------------------------------------------------------------------------------
# Command line.

def test_cli_help_documents_every_option():
    result = CliRunner().invoke(dataset_tool.main, ['--help'])
    assert result.exit_code == 0
    for opt in ('--source', '--dest', '--max-images', '--subset', '--seed', '--transform', '--resolution',
                '--width', '--height', '--channels', '--skip-bad', '--overwrite', '--progress'):
        assert opt in result.output
    for transform in dataset_tool.TRANSFORMS[1:]:
        assert transform in result.output


def test_cli_converts_and_reports_errors(tmp_path):
    src, _ = _folder(tmp_path, n=4)
    runner = CliRunner()
    result = runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'o.zip'),
                                               '--resolution', '16x16', '--no-progress'])
    assert result.exit_code == 0, result.output
    assert 'Wrote 4 images (16x16, 3 channels, labelled)' in result.output
    assert ImageFolderDataset(str(tmp_path / 'o.zip')).resolution == 16
    result = runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', str(tmp_path / 'o.zip')])
    assert result.exit_code == 1 and 'already exists' in result.output
    result = runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', 'x.zip', '--resolution', '16by16'])
    assert result.exit_code == 2 and 'WxH' in result.output


@pytest.mark.parametrize('flags', [['--overwrite'], ['--overwrite=1'], ['--overwrite', 'true'], ['--overwrite=yes']])
def test_cli_bool_spellings(tmp_path, flags):
    """Booleans follow torch_utils.cli: bare flag or =1/true/yes; the older --no-progress works."""
    src, _ = _folder(tmp_path, n=2)
    dest = str(tmp_path / 'o.zip')
    runner = CliRunner()
    assert runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', dest, '--progress=0']).exit_code == 0
    result = runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', dest, '--no-progress', *flags])
    assert result.exit_code == 0, result.output
    result = runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', dest, '--overwrite=0',
                                               '--skip-bad=1', '--progress=false'])
    assert result.exit_code == 1 and 'already exists' in result.output
    result = runner.invoke(dataset_tool.main, ['--source', str(src), '--dest', dest, '--overwrite=maybe'])
    assert result.exit_code == 2 and '--overwrite' in result.output
