"""Hostile network files: memory and stack exhaustion, state smuggled in by BUILD, numpy and
tensor reconstructions outside plain data. Every file is crafted here, opcode by opcode or
with a pickler that emits exactly the (callable, args, state) triples we ask for."""

import collections
import io
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from torch_utils import netfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------
# Crafting helpers.


class G:
    """A global by name, written as a GLOBAL opcode whether or not it exists here."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # The pickler only checks that a reduce function is callable.
        raise AssertionError('never called')


class R:
    """A REDUCE of `func(*args)`, followed by BUILD(state) when state is given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state


class Crafter(pickle._Pickler):  # The pure-Python pickler lets save() emit raw globals.
    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, G):
            self.write(b'c' + obj.module.encode() + b'\n' + obj.name.encode() + b'\n')
            return
        super().save(obj, save_persistent_id)

    def reducer_override(self, obj):
        if isinstance(obj, R):
            return (obj.func, obj.args) if obj.state is None else (obj.func, obj.args, obj.state)
        return NotImplemented


def craft(obj, protocol=4):
    buf = io.BytesIO()
    Crafter(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def load(blob, **kwargs):
    return netfile.load_network_pickle(io.BytesIO(blob), **kwargs)


def storage_stream(numel=4, declare=None):
    """A legacy torch.save stream of a float storage, as torch.storage._load_from_bytes reads it;
    `declare` rewrites the element count its main pickle declares."""
    buf = io.BytesIO()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.save(torch.arange(numel, dtype=torch.float32).storage(), buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    if declare is not None:
        old = b'cpuq\x03' + pickle.dumps(numel, protocol=2)[2:-1]
        new = b'cpuq\x03' + pickle.dumps(declare, protocol=2)[2:-1]
        assert data.count(old) == 1
        data = data.replace(old, new)
    return data


def storage(numel=4, declare=None):
    return R(G('torch.storage', '_load_from_bytes'), (storage_stream(numel, declare),))


def tensor_v2(st, offset, size, stride, state=None):
    return R(G('torch._utils', '_rebuild_tensor_v2'), (st, offset, size, stride, False, collections.OrderedDict()),
             state)


NP = 'numpy._core' if hasattr(np, '_core') else 'numpy.core'


def np_dtype(code, state=None):
    return R(G('numpy', 'dtype'), (code, False, True), state)


# ---------------------------------------------------------------------------------------
# NumPy: only plain numeric data, decided before numpy builds anything.

OBJECT_FIELD_STATE = (3, '|', None, ('a',), {'a': (np.dtype('O'), 0)}, 8, 1, 0)


def test_object_field_dtype_with_cleared_flags_is_dangerous_under_plain_pickle():
    """The payload really is what the loader must refuse: numpy accepts the state and then
    believes the dtype holds no objects, so raw bytes would be used as object pointers."""
    evil = pickle.loads(craft(R(np.dtype, ('V8', False, True), OBJECT_FIELD_STATE)))
    assert evil.fields is not None and evil.fields['a'][0] == np.dtype('O') and not evil.hasobject


def evil_array(code):
    state = (3, '|', None, ('a',), {'a': (np_dtype('O8'), 0)}, 8, 1, 0)
    return R(G(f'{NP}.numeric', '_frombuffer'), (b'\x41' * 8, np_dtype(code, state), (1,), 'C'))


def test_structured_dtype_with_object_field_is_refused_without_crashing(tmp_path):
    """Run in a child: before the fix this dereferenced bytes of the file as pointers (rc 139)."""
    path = tmp_path / 'evil.pkl'
    path.write_bytes(craft({'G_ema': evil_array('V8')}))
    proc = subprocess.run([sys.executable, '-m', 'torch_utils.netfile', 'info', str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'numpy dtype' in lines[0] and str(path) in lines[0], proc.stderr


@pytest.mark.parametrize('code', ['V8', 'f8'])
def test_object_field_dtype_is_refused_by_convert(tmp_path, code):
    path = tmp_path / 'evil.pkl'
    path.write_bytes(craft({'G_ema': evil_array(code)}))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='numpy dtype'):
        netfile.convert_network_pickle(str(path), str(tmp_path / 'out.pkl'))
    assert os.listdir(tmp_path) == ['evil.pkl']


def test_dtype_state_may_only_set_the_byte_order():
    big = load(craft(R(G(f'{NP}.numeric', '_frombuffer'),
                       (b'\x00\x00\x00\x01', np_dtype('i4', (3, '>', None, None, None, -1, -1, 0)), (1,), 'C'))))
    assert big.dtype == np.dtype('>i4') and int(big[0]) == 1
    for bad_state in [(3, '<', None, None, None, 16, 1, 0),     # a different item size
                      (3, '<', None, None, None, -1, -1, 27),   # object flags
                      (3, '<', None, ('x',), None, -1, -1, 0),  # field names
                      [3, '<', None, None, None, -1, -1, 0]]:   # not even a tuple
        with pytest.raises(netfile.UnsafeNetworkFileError, match='plain numeric'):
            load(craft(np_dtype('f4', bad_state)))


@pytest.mark.parametrize('code', ['O', 'O8', 'V8', 'M8', 'f4,f4', 'U0', '<f4'])
def test_non_plain_dtype_codes_are_refused(code):
    with pytest.raises(netfile.UnsafeNetworkFileError, match='numpy dtype'):
        load(craft(np_dtype(code)))


def test_object_array_through_reconstruct_is_refused():
    arr = R(G(f'{NP}.multiarray', '_reconstruct'), (G('numpy', 'ndarray'), (0,), b'b'),
            (1, (2,), np_dtype('O8'), False, [1, 2]))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='numpy dtype'):
        load(craft(arr))
    arr = R(G(f'{NP}.multiarray', '_reconstruct'), (G('numpy', 'ndarray'), (0,), b'b'),
            (1, (2,), np_dtype('f4'), False, [1.0, 2.0]))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='object arrays are not allowed'):
        load(craft(arr))


def test_array_that_lies_about_its_size_and_scalars_of_wrong_length():
    arr = R(G(f'{NP}.multiarray', '_reconstruct'), (G('numpy', 'ndarray'), (0,), b'b'),
            (1, (1000, 1000), np_dtype('f8'), False, b'\0' * 16))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='needs 8000000 bytes, the file has 16'):
        load(craft(arr))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='numpy scalar'):
        load(craft(R(G(f'{NP}.multiarray', 'scalar'), (np_dtype('f8'), b'\0\0'))))


def test_genuine_numpy_values_still_round_trip():
    values = dict(a=np.arange(6, dtype=np.float32).reshape(2, 3), f=np.asfortranarray(np.eye(3)),
                  s=np.float64(2.5), b=np.array([True, False]), t=np.array(['ab', 'c']), d=np.dtype('>u2'))
    for protocol in (2, 4, 5):
        got = load(pickle.dumps(values, protocol=protocol))
        for k, v in values.items():
            assert type(got[k]) is type(v) and (np.array_equal(got[k], v) if k != 'd' else got[k] == v), k
        assert got['f'].flags.f_contiguous


def test_saving_refuses_numpy_values_the_loader_would_refuse():
    for value in (np.array([object()]), np.zeros(2, dtype=[('a', 'f4'), ('b', 'i4')])):
        with pytest.raises(netfile.UnsupportedObjectError, match='numpy'):
            netfile.save_network_pickle(io.BytesIO(), dict(x=value))


# ---------------------------------------------------------------------------------------
# Resource exhaustion from tiny files.

def shared_chain(levels):
    """x = [x, x] nested `levels` deep: 2^levels leaves as a tree, `levels` lists as a DAG."""
    blob = bytearray(b'\x80\x04]\x94')  # Empty list, memo 0.
    for i in range(levels):
        blob += b']\x94(h' + bytes([i]) + b'h' + bytes([i]) + b'e' if i < 256 else b''
    return bytes(blob + b'.')


def test_shared_references_stay_shared_and_are_fast():
    blob = shared_chain(40)
    assert len(blob) < 500
    start = time.perf_counter()
    out = load(blob)
    assert time.perf_counter() - start < 2.0
    depth = 0
    while out:
        assert out[0] is out[1]
        out, depth = out[0], depth + 1
    assert depth == 40


def test_cyclic_containers_load_as_cycles():
    x = []
    x.append(x)
    d = {'self': None}
    d['self'] = d
    got = load(pickle.dumps(dict(x=x, d=d)))
    assert got['x'][0] is got['x'] and got['d']['self'] is got['d']


def test_object_limit():
    blob = pickle.dumps(dict(v=list(range(5000))))
    assert len(load(blob)['v']) == 5000
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'more than 1000 values \(max_objects\)'):
        load(blob, limits=netfile.LoadLimits(max_objects=1000))


def test_deep_nesting_is_refused_not_a_recursion_error():
    n = 200_000
    blob = b'\x80\x02' + b'(' * n + b']' + b'l' * n + b'.'
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'nested more than 100 levels deep \(max_depth\)'):
        load(blob)
    # Nested dicts of modest depth are fine.
    ok = {}
    cur = ok
    for _ in range(50):
        cur['k'] = {}
        cur = cur['k']
    got = load(pickle.dumps(dict(x=ok)))['x']
    for _ in range(50):
        got = got['k']
    assert got == {}


def test_deeply_nested_legacy_submodules_are_refused():
    meta = {'type': 'class', 'class_name': 'MappingNetwork', 'version': 4, 'module_src': '', 'state': {}}
    inner = meta
    for _ in range(110):
        child = {'type': 'class', 'class_name': 'Generator', 'version': 4, 'module_src': '',
                 'state': {'_modules': {}}}
        inner['state'] = {'_modules': {'m': R(G('torch_utils.persistence', '_reconstruct_persistent_obj'), (child,))},
                          '_init_kwargs': dict(z_dim=4, c_dim=0, w_dim=4, num_ws=2, num_layers=1)}
        inner = child
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)  # For the pure-Python pickler that writes the file.
    try:
        blob = craft({'G': R(G('torch_utils.persistence', '_reconstruct_persistent_obj'), (meta,))})
    finally:
        sys.setrecursionlimit(limit)
    with pytest.raises(netfile.NetworkFileError) as info:
        load(blob)
    assert 'RecursionError' not in str(info.value) and 'max_depth' in str(info.value)


def test_stride_zero_tensor_declaring_2_31_elements_is_refused_before_allocating():
    blob = craft({'x': tensor_v2(storage(1), 0, (2 ** 31,), (0,))})
    assert len(blob) < 2000
    with pytest.raises(netfile.UnsafeNetworkFileError, match='expanded views are not allowed'):
        load(blob)
    # A genuine view of a larger storage is fine and stays a view's worth of data.
    got = load(craft({'x': tensor_v2(storage(8), 2, (2, 2), (1, 2))}))
    assert got['x'].tolist() == [[2.0, 4.0], [3.0, 5.0]]


def test_storage_stream_declaring_more_than_it_holds_is_refused_before_allocating():
    blob = craft({'x': tensor_v2(storage(4, declare=2 ** 40), 0, (4,), (1,))})
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'declares 4398046511104 bytes'):
        load(blob)


def test_tensor_bytes_limit_counts_every_reference():
    data = b'\0' * 4096
    rec = R(G('torch_utils.netfile', '_rebuild_tensor'), ('float32', (1024,), data))
    blob = craft({'t': [R(G('torch_utils.netfile', '_rebuild_tensor'), ('float32', (1024,), data))
                        for _ in range(50)], 'r': rec})
    assert len(load(blob)['t']) == 50
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'max_tensor_bytes'):
        load(blob, limits=netfile.LoadLimits(max_tensor_bytes=100_000))


def test_tensor_dimension_limit():
    blob = craft({'t': R(G('torch_utils.netfile', '_rebuild_tensor'), ('float32', (1,) * 40, b'\0' * 4))})
    with pytest.raises(netfile.UnsafeNetworkFileError, match='40 dimensions'):
        load(blob)


def test_file_size_limit_and_huge_declared_lengths():
    blob = pickle.dumps(dict(x=b'\0' * 5000))
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'larger than 1000 bytes \(max_file_bytes\)'):
        load(blob, limits=netfile.LoadLimits(max_file_bytes=1000))
    # BINBYTES8 and FRAME declaring 2^60 bytes in a file of a few bytes: truncated, at once.
    for blob in (b'\x80\x04\x8e' + (2 ** 60).to_bytes(8, 'little') + b'abc.',
                 b'\x80\x04\x95' + (2 ** 60).to_bytes(8, 'little') + b'N.'):
        start = time.perf_counter()
        with pytest.raises(netfile.NetworkFileError, match='damaged|larger than'):
            load(blob)
        assert time.perf_counter() - start < 1.0


# ---------------------------------------------------------------------------------------
# BUILD after a checked REDUCE.

def module_record(**fields):
    rec = dict(format=1, class_name='training.networks.MappingNetwork', args=(),
               kwargs=dict(z_dim=4, c_dim=0, w_dim=4, num_ws=2, num_layers=1), state={})
    rec.update(fields)
    return rec


def test_build_cannot_replace_checked_record_fields(tmp_path):
    rec = R(G('torch_utils.netfile', '_rebuild_module'), (module_record(),), {'class_name': 12, 'state': None})
    path = tmp_path / 'build.pkl'
    path.write_bytes(craft({'G_ema': rec}))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='pickle BUILD'):
        netfile.load_network_pickle(str(path))
    proc = subprocess.run([sys.executable, '-m', 'torch_utils.netfile', 'info', str(path)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert 'pickle BUILD' in proc.stderr and 'Traceback' not in proc.stderr


def test_build_cannot_repoint_a_tensor_at_other_memory():
    st = storage(4)
    blob = craft({'x': tensor_v2(st, 0, (1,), (1,), state=(st, 0, (10 ** 6,), (1,)))})
    with pytest.raises(netfile.UnsafeNetworkFileError, match='state of a tensor'):
        load(blob)


def test_build_cannot_change_a_storage_or_legacy_object():
    st = R(G('torch.storage', '_load_from_bytes'), (storage_stream(4),), {'dtype': torch.float64})
    with pytest.raises(netfile.UnsafeNetworkFileError, match='tensor storage'):
        load(craft({'x': tensor_v2(st, 0, (4,), (1,))}))
    meta = {'type': 'class', 'class_name': 'Generator', 'version': 4, 'module_src': '', 'state': {}}
    obj = R(G('torch_utils.persistence', '_reconstruct_persistent_obj'), (meta,), {'class_name': 'Evil'})
    with pytest.raises(netfile.UnsafeNetworkFileError, match='pickle BUILD'):
        load(craft({'G': obj}))


# ---------------------------------------------------------------------------------------
# Odd values in otherwise valid files: one clear error, no repr of unvalidated objects.

def test_classes_and_functions_are_not_data():
    with pytest.raises(netfile.UnsafeNetworkFileError, match='the class builtins.set itself'):
        load(b'cbuiltins\nset\n.')
    with pytest.raises(netfile.UnsafeNetworkFileError, match='is not data'):
        load(craft({'f': G('torch_utils.netfile', '_rebuild_tensor')}))


def test_odd_keys_and_bare_objects_are_refused():
    t = R(G('torch_utils.netfile', '_rebuild_tensor'), ('float32', (1,), b'\0' * 4))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='key is a'):
        load(craft({t: 1}))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='where data was expected'):
        load(craft({'o': R(G('builtins', 'object'), ())}))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='where data was expected'):
        load(craft({'s': storage(2)}))


def test_legacy_meta_with_unvalidated_values_is_described_by_type_only():
    arr = R(G(f'{NP}.multiarray', '_reconstruct'), (G('numpy', 'ndarray'), (0,), b'b'))
    meta = {'type': arr, 'class_name': 'Generator', 'state': {}}
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'unsupported type <_NdarrayPending>'):
        load(craft({'G': R(G('torch_utils.persistence', '_reconstruct_persistent_obj'), (meta,))}))


def test_legacy_state_of_wrong_types_is_a_clear_error():
    meta = {'type': 'class', 'class_name': 'MappingNetwork', 'version': 4, 'module_src': '',
            'state': {'_init_kwargs': dict(z_dim=4, c_dim=0, w_dim=4, num_ws=2, num_layers=1),
                      '_non_persistent_buffers_set': 7, '_parameters': {}}}
    with pytest.raises(netfile.UnsafeNetworkFileError, match='_non_persistent_buffers_set'):
        load(craft({'G': R(G('torch_utils.persistence', '_reconstruct_persistent_obj'), (meta,))}))
    meta['state']['_non_persistent_buffers_set'] = set()
    meta['state']['_parameters'] = {1: None}
    with pytest.raises(netfile.UnsafeNetworkFileError, match='string keys'):
        load(craft({'G': R(G('torch_utils.persistence', '_reconstruct_persistent_obj'), (meta,))}))


def test_errors_name_the_file(tmp_path):
    path = tmp_path / 'x.pkl'
    path.write_bytes(b'cos\nsystem\n(Vtrue\ntR.')
    with pytest.raises(netfile.UnsafeNetworkFileError) as info:
        netfile.load_network_pickle(str(path))
    assert str(info.value).startswith(str(path)) and 'os.system' in str(info.value)
    with pytest.raises(netfile.NetworkFileError, match='is a directory'):
        netfile.load_network(str(tmp_path))


def test_constructor_arguments_cannot_make_a_network_allocate_gigabytes():
    """A record of a few hundred bytes asking for a 65536x65536 generator with 65536 channels."""
    rec = dict(format=1, class_name='training.networks.Generator', args=(),
               kwargs=dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=65536, img_channels=3,
                           synthesis_kwargs=dict(channel_base=1 << 30, channel_max=65536)), state={})
    blob = craft({'G_ema': R(G('torch_utils.netfile', '_rebuild_module'), (rec,))})
    assert len(blob) < 1000
    start = time.perf_counter()
    with pytest.raises(netfile.UnsafeNetworkFileError, match=r'allocate more than its stored tensors can justify'):
        load(blob)
    assert time.perf_counter() - start < 5
    # The same guard under a small limit, with an ordinary network.
    small = dict(rec, kwargs=dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                                  mapping_kwargs=dict(num_layers=1),
                                  synthesis_kwargs=dict(channel_base=64, channel_max=8)))
    with pytest.raises(netfile.UnsafeNetworkFileError, match='max_tensor_bytes'):
        load(craft({'G_ema': R(G('torch_utils.netfile', '_rebuild_module'), (small,))}),
             limits=netfile.LoadLimits(max_tensor_bytes=1000))


def test_huge_integer_argument_is_a_clear_error():
    rec = dict(format=1, class_name='training.networks.MappingNetwork', args=(),
               kwargs=dict(z_dim=10 ** 5000, c_dim=0, w_dim=4, num_ws=2, num_layers=1), state={})
    with pytest.raises(netfile.NetworkFileError) as info:
        load(craft({'G': R(G('torch_utils.netfile', '_rebuild_module'), (rec,))}))
    assert len(str(info.value)) < 1000
