"""Network files: round trips, atomic writes, refusal of unsafe pickles, legacy pickles."""

import collections
import io
import os
import pickle
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from dnnlib import EasyDict
from torch_utils import netfile
from training import networks

# ---------------------------------------------------------------------------------------
# Tiny modules and helpers.

_BIAS = {'on': True}  # Flipped by a test to make the class disagree with a saved file.


@netfile.register
class TinyNet(torch.nn.Module):
    def __init__(self, in_features, out_features, scale=1.0, head_kwargs=None):
        super().__init__()
        self.scale = scale
        self.fc = torch.nn.Linear(in_features, out_features, bias=_BIAS['on'])
        self.register_buffer('count', torch.zeros([], dtype=torch.int64))
        self.register_buffer('scratch', torch.zeros([3]), persistent=False)
        self.head_kwargs = head_kwargs

    def forward(self, x):
        return self.fc(x) * self.scale


@netfile.register
class Wrapper(torch.nn.Module):
    """Takes a registered module as a constructor argument."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.gain = torch.nn.Parameter(torch.full([], 2.0))

    def forward(self, x):
        return self.inner(x) * self.gain


@netfile.register
class TinyHead(torch.nn.Module):
    """A head built from plain torch.nn modules, as some forks have."""

    def __init__(self, width):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, width), torch.nn.LeakyReLU(0.2),
                                       torch.nn.Linear(width, 4))

    def forward(self, x):
        return torch.nn.functional.normalize(self.mlp(x), dim=1)


class Unregistered(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)


def tiny_G(c_dim=0):
    return networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=8, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=64, channel_max=8))


def tiny_D(c_dim=0):
    return networks.Discriminator(c_dim=c_dim, img_resolution=8, img_channels=3, channel_base=64,
                                  channel_max=8, epilogue_kwargs=dict(mbstd_group_size=2))


def randomize(module):
    """Non-trivial values in every tensor (incl. zero-initialised biases, w_avg, noise strength)."""
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point() and 'resample_filter' not in name:
                t.copy_(torch.randn_like(t) * 0.5)
    return module.eval().requires_grad_(False)


def G_images(G, c_dim=0):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(1))
    c = torch.zeros([2, c_dim])
    if c_dim:
        c[:, 0] = 1
    with torch.no_grad():
        return G(z, c, truncation_psi=0.7, noise_mode='const')


def D_logits(D, c_dim=0):
    img = torch.randn([2, 3, 8, 8], generator=torch.Generator().manual_seed(2))
    c = torch.zeros([2, c_dim])
    with torch.no_grad():
        return D(img, c)


def save_bytes(data):
    buf = io.BytesIO()
    netfile.save_network_pickle(buf, data)
    return buf.getvalue()


def load_bytes(data, **kwargs):
    return netfile.load_network_pickle(io.BytesIO(data), **kwargs)


# ---------------------------------------------------------------------------------------
# Our format.

def test_round_trip_tiny_modules_and_plain_values():
    net = TinyNet(3, 2, scale=0.5, head_kwargs=EasyDict(a=1, b=[1, 2]))
    with torch.no_grad():
        net.count.fill_(7)
        net.scratch.fill_(5)
    wrapped = Wrapper(TinyNet(2, 2))
    values = dict(
        f16=torch.arange(6, dtype=torch.float16).reshape(2, 3),
        bf16=torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        boolean=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.25, dtype=torch.float64),
        empty=torch.zeros([0, 4]),
        transposed=torch.arange(12.).reshape(3, 4).t(),
        array=np.arange(5, dtype=np.int16), npscalar=np.float32(2.5), size=torch.Size([2, 3]),
        dtype=torch.float16, device=torch.device('cpu'), nested=collections.OrderedDict(a=(1, 'x', None)),
        items={1, 2}, raw=b'\x00\x01', number=1.5 + 2j)
    blob = save_bytes(dict(net=net, wrapped=wrapped, again=net, values=values,
                           training_set_kwargs=EasyDict(path='data.zip', resolution=8)))
    out = load_bytes(blob)

    assert out.format == 'netfile' and out.notes == []
    assert isinstance(out['net'], TinyNet) and out['again'] is out['net']
    assert out['net'].scale == 0.5 and out['net'].head_kwargs == {'a': 1, 'b': [1, 2]}
    assert isinstance(out['net'].head_kwargs, EasyDict)
    assert int(out['net'].count) == 7
    assert float(out['net'].scratch.sum()) == 0  # Non-persistent buffers are not stored.
    assert not out['net'].training and not any(p.requires_grad for p in out['net'].parameters())
    x = torch.randn(4, 3)
    assert torch.equal(out['net'](x), net.eval()(x))
    y = torch.randn(4, 2)
    assert torch.equal(out['wrapped'](y), wrapped(y))
    assert float(out['wrapped'].gain) == 2.0

    got = out['values']
    for key in ('f16', 'bf16', 'boolean', 'scalar', 'empty', 'transposed'):
        assert got[key].dtype == values[key].dtype and torch.equal(got[key], values[key]), key
    assert got['array'].dtype == np.int16 and np.array_equal(got['array'], values['array'])
    assert got['npscalar'] == np.float32(2.5) and got['size'] == torch.Size([2, 3])
    assert got['dtype'] is torch.float16 and got['device'] == torch.device('cpu')
    assert got['nested'] == values['nested'] and type(got['nested']) is collections.OrderedDict
    assert got['items'] == {1, 2} and got['raw'] == b'\x00\x01' and got['number'] == 1.5 + 2j
    assert out['training_set_kwargs'].resolution == 8


def test_round_trip_generator_and_discriminator(tmp_path):
    G, D = randomize(tiny_G(c_dim=2)), randomize(tiny_D(c_dim=2))
    path = tmp_path / 'network-snapshot-000000.pkl'
    netfile.save_network_pickle(path, dict(G=G, D=D, G_ema=G, augment_pipe=None,
                                           training_set_kwargs=dict(resolution=8)))
    out = netfile.load_network_pickle(str(path))
    assert type(out['G']) is networks.Generator and out['G_ema'] is out['G']
    assert out['augment_pipe'] is None
    ref = G_images(G, 2)
    assert torch.isfinite(ref).all() and float(ref.abs().max()) > 0
    assert torch.equal(G_images(out['G'], 2), ref)
    assert torch.equal(D_logits(out['D'], 2), D_logits(D, 2))
    # Only what is asked for is built; the rest is noted.
    part = netfile.load_network(str(path), keys=('G_ema', 'nonexistent'))
    assert list(part) == ['G_ema']
    assert any("'D'" in n and 'not requested' in n for n in part.notes)
    assert any("'nonexistent'" in n for n in part.notes)


@pytest.mark.gpu
def test_cuda_modules_save_and_load_to_device():
    G = randomize(tiny_G()).cuda()
    blob = save_bytes(dict(G_ema=G))
    on_cpu = load_bytes(blob)['G_ema']
    assert all(t.device.type == 'cpu' for t in on_cpu.state_dict().values())
    assert all(torch.equal(a.cpu(), b) for a, b in zip(G.state_dict().values(), on_cpu.state_dict().values()))
    on_gpu = load_bytes(blob, device='cuda')['G_ema']
    assert all(t.device.type == 'cuda' for t in on_gpu.state_dict().values())
    z = torch.randn([2, 8], device='cuda')
    c = torch.zeros([2, 0], device='cuda')
    with torch.no_grad():
        assert torch.equal(on_gpu(z, c, noise_mode='const'), G(z, c, noise_mode='const'))


def test_file_object_and_url_paths(tmp_path):
    path = tmp_path / 'net.pkl'
    with open(path, 'wb') as f:
        netfile.save_network_pickle(f, dict(net=TinyNet(2, 2)))
    assert isinstance(netfile.load_network(path.as_uri())['net'], TinyNet)
    with pytest.raises(FileNotFoundError):
        netfile.load_network(str(tmp_path / 'missing.pkl'))


def test_unsaveable_objects_fail_before_writing(tmp_path):
    path = tmp_path / 'net.pkl'
    with pytest.raises(netfile.UnsupportedObjectError, match=r"'D'.*Unregistered.*not registered"):
        netfile.save_network_pickle(path, dict(G=TinyNet(2, 2), D=Unregistered()))
    with pytest.raises(netfile.UnsupportedObjectError, match=r"'opts'.*functools.partial"):
        import functools
        netfile.save_network_pickle(path, dict(opts=dict(fn=functools.partial(print))))
    with pytest.raises(netfile.UnsupportedObjectError, match=r'global (os|posix).system'):
        netfile.save_network_pickle(path, dict(opts=[os.system]))
    with pytest.raises(netfile.UnsupportedObjectError, match=r"torch.nn.modules.linear.Linear.*not registered"):
        netfile.save_network_pickle(path, dict(layer=torch.nn.Linear(2, 2)))
    assert os.listdir(tmp_path) == []
    # A file object receives nothing either.
    buf = io.BytesIO()
    with pytest.raises(netfile.UnsupportedObjectError):
        netfile.save_network_pickle(buf, dict(x=object()))
    assert buf.getvalue() == b''


def test_atomic_write_survives_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / 'net.pkl'
    old = TinyNet(3, 2)
    netfile.save_network_pickle(path, dict(net=old))
    before = path.read_bytes()

    # The check pass succeeds; the real pass dies after a few tensors have gone to disk.
    real = netfile._tensor_to_data
    calls = {'n': 0}

    def failing(tensor, with_bytes=True):
        if with_bytes:
            calls['n'] += 1
            if calls['n'] == 3:
                raise OSError('simulated disk failure')
        return real(tensor, with_bytes)

    monkeypatch.setattr(netfile, '_tensor_to_data', failing)
    with pytest.raises(OSError, match='simulated disk failure'):
        netfile.save_network_pickle(path, dict(net=TinyNet(3, 2), extra=TinyNet(3, 2)))
    assert calls['n'] == 3
    assert sorted(os.listdir(tmp_path)) == ['net.pkl']  # No temporary file left behind.
    assert path.read_bytes() == before
    x = torch.randn(2, 3)
    assert torch.equal(netfile.load_network_pickle(path)['net'](x), old.eval()(x))


def test_class_mismatch_names_class_and_keys(monkeypatch):
    blob = save_bytes(dict(net=TinyNet(3, 2)))
    monkeypatch.setitem(_BIAS, 'on', False)
    with pytest.raises(netfile.NetworkFileError, match=r"(?s)TinyNet.*not in the class.*'fc.bias'"):
        load_bytes(blob)


def test_damaged_file_is_reported():
    blob = save_bytes(dict(net=TinyNet(3, 2)))
    with pytest.raises(netfile.NetworkFileError, match='damaged'):
        load_bytes(blob[:len(blob) // 2])


# ---------------------------------------------------------------------------------------
# Unsafe pickles: nothing runs, the error names the global.

def _call(module, name, *args):
    """Protocol-0 pickle that calls module.name(*args) with string arguments."""
    arg_ops = b''.join(b'V' + a.encode() + b'\n' for a in args)
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n(' + arg_ops + b'tR'


def _malicious(marker):
    touch = f'touch {marker}'
    py = f'open({str(marker)!r}, "w").close()'
    return {
        'os.system': _call('os', 'system', touch) + b'.',
        'posix.system': _call('posix', 'system', touch) + b'.',
        'builtins.eval': _call('builtins', 'eval', py) + b'.',
        'builtins.exec': _call('builtins', 'exec', py) + b'.',
        'subprocess.Popen': b'csubprocess\nPopen\n((Vtouch\nV' + str(marker).encode() + b'\nltR.',
        'builtins.__import__': _call('builtins', '__import__', 'os') + b'.',
        # getattr(__import__('os'), 'system')(touch)
        'builtins.getattr': (b'cbuiltins\ngetattr\n(' + _call('builtins', '__import__', 'os') + b'Vsystem\ntR(V'
                             + touch.encode() + b'\ntR.'),
        # copyreg._reconstructor with a class outside the allowlist
        'subprocess.Popen ': b'ccopyreg\n_reconstructor\n(csubprocess\nPopen\ncbuiltins\nobject\nNtR.',
        # ... and with an allowed class that it must still refuse to instantiate this way
        'numpy.ndarray': b'ccopyreg\n_reconstructor\n(cnumpy\nndarray\ncbuiltins\nobject\nNtR.',
        # a legitimate-looking dict whose value hides the call
        'os.system  ': b'(dp0\nVG\n' + _call('os', 'system', touch) + b's.',
    }


@pytest.mark.parametrize('global_name', list(_malicious('m')))
def test_malicious_pickles_are_refused(tmp_path, global_name):
    marker = tmp_path / 'marker'
    blob = _malicious(marker)[global_name]
    with pytest.raises(netfile.UnsafeNetworkFileError) as info:
        load_bytes(blob)
    name = global_name.strip()
    assert name in str(info.value)
    if name == 'numpy.ndarray':
        assert 'copyreg._reconstructor' in str(info.value)
    assert not marker.exists()


def test_malicious_payload_is_live_under_plain_pickle(tmp_path):
    """The payloads above really run code when loaded without the safe loader."""
    marker = tmp_path / 'marker'
    pickle.loads(_malicious(marker)['builtins.exec'])
    assert marker.exists()


def test_malicious_storage_stream_is_refused(tmp_path):
    """Storage bytes are a torch.save stream; torch's weights-only reader must refuse code in it."""
    marker = tmp_path / 'marker'
    inner = _malicious(marker)['builtins.exec']
    blob = (b'\x80\x04ctorch.storage\n_load_from_bytes\nC' + bytes([len(inner)]) + inner + b'\x85R.')
    with pytest.raises(netfile.UnsafeNetworkFileError, match='weights-only'):
        load_bytes(blob)
    assert not marker.exists()


def test_ndarray_may_not_be_called_directly():
    with pytest.raises(netfile.UnsafeNetworkFileError, match='numpy.ndarray may not be called'):
        load_bytes(b'cnumpy\nndarray\n(I1000\ntR.')


def test_constructor_arguments_may_not_name_other_objects(tmp_path):
    marker = tmp_path / 'marker'
    blob = save_bytes(dict(net=TinyNet(2, 2, head_kwargs=dict(class_name='os.system', command=f'touch {marker}'))))
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r"class_name='os.system'"):
        load_bytes(blob)
    # Naming a registered class is fine.
    ok = save_bytes(dict(net=TinyNet(2, 2, head_kwargs=dict(class_name='training.networks.Generator'))))
    assert isinstance(load_bytes(ok)['net'], TinyNet)
    assert not marker.exists()


def test_saved_records_are_validated():
    """A hand-made tensor record that lies about its size is refused."""
    blob = (b'\x80\x04ctorch_utils.netfile\n_rebuild_tensor\n(Vfloat32\n(K\x04tC\x04abcdtR.')
    with pytest.raises(netfile.UnsafeNetworkFileError, match='needs 16 bytes'):
        load_bytes(blob)


# ---------------------------------------------------------------------------------------
# Legacy pickles (stylegan2-ada-pytorch and forks), written here the way the original does.

_LEGACY_SRC = '''
open({marker!r}, "w").write("module_src was executed")
import torch
class Generator(torch.nn.Module):
    pass
'''


def _fake_persistence():
    module = types.ModuleType('torch_utils.persistence')

    def _reconstruct_persistent_obj(meta):
        raise AssertionError('never called when writing')

    _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    return module


class _LegacyPickler(pickle.Pickler):
    """Emits every non-torch.nn module as the original's persistent object; tensors as stock pickle."""

    def __init__(self, file, module_src, rename=None, edit=None, protocol=4):
        super().__init__(file, protocol=protocol)
        self.module_src = module_src
        self.rename = rename or {}
        self.edit = edit  # edit(module, state): changes the stored __dict__ copy in place.
        self.reconstruct = sys.modules['torch_utils.persistence']._reconstruct_persistent_obj

    def reducer_override(self, obj):
        if isinstance(obj, torch.nn.Module) and not type(obj).__module__.startswith('torch.nn'):
            state = dict(vars(obj))  # The object's __dict__, as object.__reduce__ gives it.
            if self.edit is not None:
                self.edit(obj, state)
            name = type(obj).__name__
            meta = dict(type='class', version=4, module_src=self.module_src,
                        class_name=self.rename.get(name, name), state=state)
            return self.reconstruct, (meta,)
        return NotImplemented


def write_legacy(monkeypatch, data, marker, **kwargs):
    monkeypatch.setitem(sys.modules, 'torch_utils.persistence', _fake_persistence())
    buf = io.BytesIO()
    _LegacyPickler(buf, _LEGACY_SRC.format(marker=str(marker)), **kwargs).dump(data)
    monkeypatch.delitem(sys.modules, 'torch_utils.persistence')
    return buf.getvalue()


def test_legacy_pickle_rebuilds_our_networks(tmp_path, monkeypatch):
    marker = tmp_path / 'marker'
    G, D, G_ema = randomize(tiny_G()), randomize(tiny_D()), randomize(tiny_G())
    # Protocol 3 is what Python 3.7 (the original's release environment) wrote by default.
    blob = write_legacy(monkeypatch, dict(G=G, D=D, G_ema=G_ema, augment_pipe=None,
                                          training_set_kwargs=EasyDict(path='x.zip', xflip=False)),
                        marker, protocol=3)
    # The file really has the original's layout: persistent objects with embedded source,
    # nested for submodules, and tensors through storages in torch.save streams.
    assert b'_reconstruct_persistent_obj' in blob and b'_load_from_bytes' in blob
    raw = netfile._RestrictedUnpickler(io.BytesIO(blob)).load()
    fc = raw['G'].state['_modules']['mapping'].state['_modules']['fc0']
    assert fc.class_name == 'FullyConnectedLayer' and 'module_src was executed' in fc.module_src
    assert torch.equal(fc.state['_parameters']['weight'], G.mapping.fc0.weight)

    out = load_bytes(blob)
    assert out.format == 'legacy' and not marker.exists()
    assert not any(name.startswith('_imported_module_') for name in sys.modules)
    assert type(out['G_ema']) is networks.Generator and type(out['D']) is networks.Discriminator
    assert not out['G_ema'].training and not any(p.requires_grad for p in out['G_ema'].parameters())
    ref = G_images(G_ema)
    assert torch.isfinite(ref).all() and float(ref.std()) > 0
    assert torch.equal(G_images(out['G_ema']), ref)
    assert torch.equal(G_images(out['G']), G_images(G))
    assert torch.equal(D_logits(out['D']), D_logits(D))
    assert out['training_set_kwargs'] == dict(path='x.zip', xflip=False)


def test_legacy_mapping_at_top_level_and_conversion(tmp_path, monkeypatch):
    marker = tmp_path / 'marker'
    G = randomize(tiny_G())
    blob = write_legacy(monkeypatch, dict(mapping=G.mapping, G_ema=G), marker)
    src = tmp_path / 'legacy.pkl'
    src.write_bytes(blob)
    dst = tmp_path / 'converted.pkl'
    netfile.convert_network_pickle(str(src), str(dst))
    out = netfile.load_network_pickle(dst)
    assert out.format == 'netfile' and not marker.exists()
    z = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(out['mapping'](z, None), G.mapping(z, None))
    assert torch.equal(G_images(out['G_ema']), G_images(G))


def test_legacy_unknown_class_is_named_or_skipped(tmp_path, monkeypatch):
    marker = tmp_path / 'marker'
    blob = write_legacy(monkeypatch, dict(G=tiny_G(), G_ema=tiny_G()), marker,
                        rename={'Generator': 'MyFancyGenerator'})
    with pytest.raises(netfile.NetworkFileError, match=r"(?s)'MyFancyGenerator'.*'Discriminator'.*'Generator'"):
        load_bytes(blob)
    # A file whose unneeded entry is unknown still gives the entries asked for.
    G = randomize(tiny_G())
    blob = write_legacy(monkeypatch, dict(D=TinyNet(2, 2), G_ema=G), marker, rename={'TinyNet': 'MyFancyD'})
    out = load_bytes(blob, keys=('G_ema',))
    assert list(out) == ['G_ema'] and any("'D'" in n for n in out.notes)
    assert torch.equal(G_images(out['G_ema']), G_images(G))
    assert not marker.exists()


def test_legacy_missing_parameter_is_named(tmp_path, monkeypatch):
    def drop_noise_strength(module, state):
        state['_parameters'] = {k: v for k, v in state['_parameters'].items() if k != 'noise_strength'}

    blob = write_legacy(monkeypatch, dict(G=tiny_G()), tmp_path / 'marker', edit=drop_noise_strength)
    with pytest.raises(netfile.NetworkFileError,
                       match=r"(?s)'G'.*Generator.*missing from the file.*synthesis.b4.conv1.noise_strength"):
        load_bytes(blob)


def test_legacy_generator_with_synthesis_options_as_keywords(tmp_path, monkeypatch):
    """The stylegan3 code base's StyleGAN2 generator records its synthesis options flat."""
    G = randomize(tiny_G())

    def flatten_kwargs(module, state):
        if module is G:
            kwargs = dict(state['_init_kwargs'])
            kwargs.update(kwargs.pop('synthesis_kwargs'))
            state['_init_kwargs'] = kwargs

    blob = write_legacy(monkeypatch, dict(G_ema=G), tmp_path / 'marker', edit=flatten_kwargs)
    assert torch.equal(G_images(load_bytes(blob)['G_ema']), G_images(G))


def test_legacy_plain_torch_nn_submodules(tmp_path, monkeypatch):
    monkeypatch.setattr(netfile, '_legacy_classes', dict(netfile._legacy_classes))
    netfile.register_legacy_class('TinyHead', f'{TinyHead.__module__}.{TinyHead.__qualname__}')
    head = TinyHead(6).eval()
    layer = torch.nn.Linear(6, 3)
    blob = write_legacy(monkeypatch, dict(DHead=head, plain=layer), tmp_path / 'marker')
    assert b'torch.nn.modules.linear' in blob  # Stock pickling of plain torch.nn classes.
    out = load_bytes(blob)
    x = torch.randn(5, 6)
    with torch.no_grad():
        assert torch.equal(out['DHead'](x), head(x))
        assert type(out['plain']) is torch.nn.Linear and torch.equal(out['plain'](x), layer(x))


# ---------------------------------------------------------------------------------------
# Command line.

def test_cli_convert_and_info(tmp_path, monkeypatch):
    from click.testing import CliRunner
    G = randomize(tiny_G())
    src = tmp_path / 'legacy.pkl'
    src.write_bytes(write_legacy(monkeypatch, dict(G_ema=G, D=TinyNet(2, 2)), tmp_path / 'marker',
                                 rename={'TinyNet': 'Unknown'}))
    dst = tmp_path / 'ours.pkl'
    runner = CliRunner()
    result = runner.invoke(netfile._cli(), ['convert', str(src), str(dst)])
    assert result.exit_code != 0 and "'Unknown'" in result.output
    result = runner.invoke(netfile._cli(), ['convert', str(src), str(dst), '--keys', 'G_ema'])
    assert result.exit_code == 0, result.output
    assert 'skipped' in result.output
    result = runner.invoke(netfile._cli(), ['info', str(dst)])
    assert result.exit_code == 0 and 'G_ema: training.networks.Generator' in result.output
    assert torch.equal(G_images(netfile.load_network(str(dst))['G_ema']), G_images(G))


@pytest.mark.slow
def test_cli_module_entry_point(tmp_path):
    path = tmp_path / 'ours.pkl'
    netfile.save_network_pickle(path, dict(G_ema=tiny_G()))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, '-m', 'torch_utils.netfile', 'convert', str(path),
                             str(tmp_path / 'copy.pkl')], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'copy.pkl').exists()
