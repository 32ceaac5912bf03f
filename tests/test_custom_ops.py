"""Custom-op build system and the CUDA autograd wrappers, on CPU.

- Cache keys, failed builds (one warning naming the op and reason, no exception, nothing
  half-built left in the cache).
- The autograd logic of bias_act_cuda / upfirdn2d_cuda (first and second order, the
  transposed upfirdn2d used for backward), run against a float64 PyTorch emulation of the
  kernels' formulas in place of the compiled extension, and compared with the references.
"""

import functools
import math
import os
import types
import warnings

import pytest
import torch

import dnnlib
from torch_utils import custom_ops
from torch_utils.ops import bias_act as bias_act_mod
from torch_utils.ops import bias_act_cuda, upfirdn2d_cuda
from torch_utils.ops import upfirdn2d as upfirdn2d_mod


@pytest.fixture
def fresh_state(tmp_path, monkeypatch):
    """An empty build cache and no remembered builds or warnings."""
    dnnlib.set_cache_dir(str(tmp_path / 'cache'))
    custom_ops.reset_state()
    yield tmp_path / 'cache'
    custom_ops.reset_state()
    dnnlib.util._cache_dir = None


def _write(path, text):
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------
# Cache key.


def test_build_key_follows_sources_headers_and_kwargs(tmp_path):
    src = tmp_path / 'op.cpp'
    hdr = tmp_path / 'op.h'
    _write(src, 'int f() { return 1; }\n')
    _write(hdr, '#pragma once\n')
    key = lambda **kw: custom_ops.compute_build_key('op_plugin', ['op.cpp'], ['op.h'], source_dir=str(tmp_path), **kw)

    k0 = key()
    assert len(k0) == 64
    assert key() == k0  # Deterministic.
    _write(src, 'int f() { return 2; }\n')
    k1 = key()
    assert k1 != k0
    _write(hdr, '#pragma once\n#define X 1\n')
    k2 = key()
    assert k2 not in (k0, k1)
    assert key(extra_cuda_cflags=['-O3']) != k2
    assert custom_ops.compute_build_key('other_plugin', ['op.cpp'], ['op.h'], source_dir=str(tmp_path)) != k2


def test_build_key_follows_arch_list(tmp_path, monkeypatch):
    _write(tmp_path / 'op.cpp', 'int f();\n')
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0')
    k80 = custom_ops.compute_build_key('op_plugin', ['op.cpp'], source_dir=str(tmp_path))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '9.0')
    assert custom_ops.compute_build_key('op_plugin', ['op.cpp'], source_dir=str(tmp_path)) != k80


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(custom_ops.PluginBuildError, match='cannot read source file .*missing.cpp'):
        custom_ops.compute_build_key('op_plugin', ['missing.cpp'], source_dir=str(tmp_path))


def test_compile_only_arch_list_is_set_and_restored(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip('a visible GPU decides the architectures')
    monkeypatch.delenv('TORCH_CUDA_ARCH_LIST', raising=False)
    with custom_ops._arch_list_for_build():
        assert os.environ['TORCH_CUDA_ARCH_LIST'] == custom_ops.COMPILE_ONLY_ARCH_LIST
    assert 'TORCH_CUDA_ARCH_LIST' not in os.environ
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '7.5')
    with custom_ops._arch_list_for_build():
        assert os.environ['TORCH_CUDA_ARCH_LIST'] == '7.5'


# ----------------------------------------------------------------------------
# Failed builds.


def _build_warnings(record):
    return [w for w in record if issubclass(w.category, custom_ops.CustomOpBuildWarning)]


def test_missing_toolkit_warns_once_and_returns_none(fresh_state, tmp_path, monkeypatch):
    _write(tmp_path / 'tiny.cpp', 'int tiny() { return 0; }\n')
    monkeypatch.setenv('CUDA_HOME', str(tmp_path / 'no-cuda-here'))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        for _ in range(3):
            assert custom_ops.try_get_plugin('tiny_plugin', ['tiny.cpp'], source_dir=str(tmp_path)) is None
    found = _build_warnings(record)
    assert len(found) == 1
    msg = str(found[0].message)
    assert '"tiny_plugin"' in msg
    assert 'reference implementation' in msg
    if torch.version.cuda is None:
        assert 'no CUDA support' in msg
    else:
        assert 'nvcc not found' in msg and 'CUDA_HOME' in msg
    # get_plugin itself raises the same reason.
    with pytest.raises(custom_ops.PluginBuildError):
        custom_ops.get_plugin('tiny_plugin', ['tiny.cpp'], source_dir=str(tmp_path))


def test_warning_is_per_op(fresh_state, tmp_path, monkeypatch):
    _write(tmp_path / 'tiny.cpp', 'int tiny() { return 0; }\n')
    monkeypatch.setenv('CUDA_HOME', str(tmp_path / 'no-cuda-here'))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        custom_ops.try_get_plugin('one_plugin', ['tiny.cpp'], source_dir=str(tmp_path))
        custom_ops.try_get_plugin('two_plugin', ['tiny.cpp'], source_dir=str(tmp_path))
        custom_ops.try_get_plugin('one_plugin', ['tiny.cpp'], source_dir=str(tmp_path))
    names = sorted(str(w.message).split('"')[1] for w in _build_warnings(record))
    assert names == ['one_plugin', 'two_plugin']


def test_compiler_error_is_reported_and_nothing_half_built_remains(fresh_state, tmp_path):
    if torch.version.cuda is None or custom_ops.find_cuda_home() is None:
        pytest.skip('needs a CUDA-enabled PyTorch and nvcc')
    # Nothing but the error, so the compiler is done at once.
    _write(tmp_path / 'broken.cpp', 'int ok() { return 0; }\n#error deliberately broken source\n')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert custom_ops.try_get_plugin('broken_plugin', ['broken.cpp'], source_dir=str(tmp_path)) is None
        assert custom_ops.try_get_plugin('broken_plugin', ['broken.cpp'], source_dir=str(tmp_path)) is None
    found = _build_warnings(record)
    assert len(found) == 1
    msg = str(found[0].message)
    assert '"broken_plugin"' in msg and 'deliberately broken source' in msg
    assert 'Error building extension' not in msg  # The summary keeps the compiler's own lines.
    # Only lock files may remain: no build directory, finished or temporary.
    root = fresh_state / 'torch_extensions'
    leftovers = [p for p in os.listdir(root) if not p.endswith('.lock')]
    assert leftovers == []


def test_summarize_build_error_keeps_error_lines():
    log = '\n'.join([
        "Error building extension 'x_plugin': [1/2] c++ -c a.cpp",
        'FAILED: a.o',
        'a.cpp:3:5: error: expected ; before } token',
        'In file included from b.h:1:',
        'ninja: build stopped: subcommand failed.',
    ])
    s = custom_ops.summarize_build_error(log)
    assert 'a.cpp:3:5: error: expected ; before } token' in s
    assert 'ninja: build stopped' not in s
    assert custom_ops.summarize_build_error('') == 'unknown error'
    # Without error lines the tail is kept.
    assert custom_ops.summarize_build_error('a\nb\nc', max_lines=2) == 'b\nc'


def test_set_verbosity_rejects_unknown_level():
    with pytest.raises(ValueError, match='verbosity'):
        custom_ops.set_verbosity('loud')


def test_wrappers_unavailable_without_gpu():
    if torch.cuda.is_available():
        pytest.skip('a GPU is present')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        assert bias_act_cuda.available() is False
        assert upfirdn2d_cuda.available() is False
    assert _build_warnings(record) == []  # Nothing to fall back from, so nothing to warn about.


def test_env_forces_reference(monkeypatch):
    monkeypatch.setenv('TORCH_UTILS_OPS_IMPL', 'ref')
    monkeypatch.setattr(bias_act_cuda, '_get_plugin', lambda: pytest.fail('must not build'))
    monkeypatch.setattr(upfirdn2d_cuda, '_get_plugin', lambda: pytest.fail('must not build'))
    assert bias_act_cuda.available() is False
    assert upfirdn2d_cuda.available() is False


# ----------------------------------------------------------------------------
# Emulation of the kernels (float64 PyTorch, the formulas of bias_act.cu and upfirdn2d.cu) to
# test the autograd wrappers without a GPU.

_SELU_L = 1.0507009873554804934193349852946
_SELU_A = 1.6732632423543772848170429916717


def _emu_bias_act(x, b, xref, yref, grad, dim, act, alpha, gain, clamp):
    def bias_view(t):
        if b.numel() == 0:
            return torch.zeros((), dtype=t.dtype)
        shape = [1] * t.ndim
        shape[dim] = -1
        return b.to(t.dtype).reshape(shape)

    x = x.detach()
    if grad == 0:
        v = x + bias_view(x)
        f = {1: lambda: v, 2: lambda: torch.where(v > 0, v, 0 * v), 3: lambda: torch.where(v > 0, v, v * alpha),
             4: lambda: torch.tanh(v), 5: lambda: torch.sigmoid(v), 6: lambda: torch.where(v > 0, v, torch.expm1(v)),
             7: lambda: _SELU_L * torch.where(v > 0, v, _SELU_A * torch.expm1(v)),
             8: lambda: torch.where(v > 20, v, torch.log1p(torch.exp(v))), 9: lambda: v * torch.sigmoid(v)}[act]()
        r = f * gain
        return r.clamp(-clamp, clamp) if clamp >= 0 else r
    v = xref.detach() + bias_view(x) if xref.numel() else torch.zeros_like(x)
    y = yref.detach() if yref.numel() else torch.zeros_like(x)
    yn = y / gain
    s = torch.sigmoid(v)
    one = torch.ones_like(x)
    if grad == 1:
        d = {1: one, 2: (yn > 0).to(x.dtype), 3: torch.where(yn > 0, one, alpha * one), 4: 1 - yn * yn,
             5: yn * (1 - yn), 6: torch.where(yn > 0, one, yn + 1), 7: torch.where(yn > 0, _SELU_L * one, yn + _SELU_L * _SELU_A),
             8: -torch.expm1(-yn), 9: s * (1 + v * (1 - s))}[act]
        r = x * gain * d
    else:
        zero = torch.zeros_like(x)
        d = {1: zero, 2: zero, 3: zero, 4: -2 * yn, 5: 1 - 2 * yn, 6: torch.where(yn > 0, zero, one),
             7: torch.where(yn > 0, zero, one), 8: torch.exp(-yn), 9: gain * s * (1 - s) * (2 + v * (1 - 2 * s))}[act]
        r = x * d
    if yref.numel() and clamp >= 0:
        r = torch.where(y.abs() < clamp, r, torch.zeros_like(r))
    return r


def _floor_div(a, b):
    return a // b  # Python's // floors, like the kernel's floor_div.


@functools.lru_cache(maxsize=None)
def _axis_taps(out_len, in_len, up, down, pad0, flen, flip):
    """For each (output o, input i) along one axis, the tap of f the kernel uses, or -1."""
    taps = torch.full((out_len, in_len), -1, dtype=torch.long)
    for o in range(out_len):
        base = o * down - pad0
        i0 = max(-_floor_div(-base, up), 0)
        i1 = min(_floor_div(base + flen - 1, up), in_len - 1)
        for i in range(i0, i1 + 1):
            k = i * up - base
            taps[o, i] = k if flip else flen - 1 - k
    return taps


def _emu_upfirdn2d(x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):
    """The kernel's per-output loop bounds and tap indices, as a dense linear operator."""
    x = x.detach()
    n, c, h, w = x.shape
    fh, fw = f.shape
    out_h = (h * upy + pady0 + pady1 - fh) // downy + 1
    out_w = (w * upx + padx0 + padx1 - fw) // downx + 1

    ty = _axis_taps(out_h, h, upy, downy, pady0, fh, bool(flip))
    tx = _axis_taps(out_w, w, upx, downx, padx0, fw, bool(flip))
    op = torch.zeros(out_h, out_w, h, w, dtype=x.dtype)
    valid = (ty[:, None, :, None] >= 0) & (tx[None, :, None, :] >= 0)
    vals = f.to(x.dtype)[ty.clamp(min=0)[:, None, :, None], tx.clamp(min=0)[None, :, None, :]]
    op = torch.where(valid, vals, op)
    return torch.einsum('ncij,abij->ncab', x, op) * gain


@pytest.fixture
def emulated_plugins(monkeypatch):
    monkeypatch.setattr(bias_act_cuda, '_get_plugin', lambda: types.SimpleNamespace(bias_act=_emu_bias_act))
    monkeypatch.setattr(upfirdn2d_cuda, '_get_plugin', lambda: types.SimpleNamespace(upfirdn2d=_emu_upfirdn2d))


@pytest.mark.parametrize('act', sorted(bias_act_mod.activation_funcs))
@pytest.mark.parametrize('clamp', [None, 0.6])
def test_bias_act_wrapper_matches_reference(emulated_plugins, act, clamp):
    spec = bias_act_mod.activation_funcs[act]
    alpha = 0.3 if act == 'lrelu' else spec.def_alpha
    gain = 1.3
    # Values away from the kinks of relu/lrelu/elu/selu and from the clamp bound, where finite
    # differences would be meaningless.
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    x = torch.where(x.abs() < 0.05, x + 0.1, x)
    b = torch.linspace(-0.3, 0.3, 4, dtype=torch.float64)
    x.requires_grad_(True)
    b.requires_grad_(True)
    args = dict(dim=1, act=act, alpha=alpha, gain=gain, clamp=-1.0 if clamp is None else clamp)

    y = bias_act_cuda.bias_act_cuda(x, b, **args)
    y_ref = bias_act_mod.bias_act(x, b, dim=1, act=act, alpha=alpha, gain=gain, clamp=clamp, impl='ref')
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)

    # First and second order against the reference's autograd.
    dy = torch.randn_like(y)
    gx, gb = torch.autograd.grad(y, [x, b], dy, create_graph=True)
    gx_ref, gb_ref = torch.autograd.grad(y_ref, [x, b], dy, create_graph=True)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gb, gb_ref, rtol=1e-10, atol=1e-12)
    w = torch.randn_like(gx)

    def second(gx, gb):
        # Piecewise-linear acts may leave nothing to differentiate: the second order is zero.
        loss = (gx * w).sum() + gb.sum()
        if not loss.requires_grad:
            return None, None
        return torch.autograd.grad(loss, [x, b], allow_unused=True)

    hx, hb = second(gx, gb)
    hx_ref, hb_ref = second(gx_ref, gb_ref)
    zero = torch.zeros_like(x)
    torch.testing.assert_close(zero if hx is None else hx, zero if hx_ref is None else hx_ref, rtol=1e-9, atol=1e-11)
    zb = torch.zeros_like(b)
    torch.testing.assert_close(zb if hb is None else hb, zb if hb_ref is None else hb_ref, rtol=1e-9, atol=1e-11)


def test_bias_act_wrapper_gradgradcheck(emulated_plugins):
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for act in ['swish', 'tanh', 'softplus']:
        fn = lambda x, b: bias_act_cuda.bias_act_cuda(x, b, dim=1, act=act, alpha=0.0, gain=1.7, clamp=-1.0)
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


def test_bias_act_wrapper_without_bias_and_last_dim(emulated_plugins):
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    y = bias_act_cuda.bias_act_cuda(x, None, dim=1, act='lrelu', alpha=0.2, gain=math.sqrt(2), clamp=-1.0)
    y_ref = bias_act_mod.bias_act(x, None, dim=1, act='lrelu', impl='ref')
    torch.testing.assert_close(y, y_ref)
    g, = torch.autograd.grad(y.sum(), x)
    g_ref, = torch.autograd.grad(y_ref.sum(), x)
    torch.testing.assert_close(g, g_ref)


# Configurations: (up, down, padding [x0, x1, y0, y1], flip, gain, filter kind).
_UFD_CASES = [
    (1, 1, [0, 0, 0, 0], False, 1.0, '2d'),
    (2, 1, [2, 1, 2, 1], False, 4.0, '2d'),       # upsample2d with a 4-tap filter.
    (1, 2, [1, 1, 1, 1], False, 1.0, '2d'),       # downsample2d with a 4-tap filter.
    ([2, 1], [1, 3], [3, -1, 0, 2], True, 0.5, '2d'),
    (3, 2, [-2, 4, 1, -1], False, 2.0, 'sep'),
    (1, 1, [1, 2, 2, 1], True, 1.0, 'sep'),
    (2, 2, [0, 0, 0, 0], False, 1.0, 'asym'),     # Non-square, non-symmetric 2-D filter.
]


def _ufd_filter(kind):
    g = torch.Generator().manual_seed(1)
    if kind == 'sep':
        return torch.rand(4, generator=g, dtype=torch.float32) + 0.1
    if kind == 'asym':
        return torch.rand(3, 2, generator=g, dtype=torch.float32)
    return torch.rand(4, 4, generator=g, dtype=torch.float32)


def _ufd_args(up, down, pad, flip, gain):
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    return (upx, upy, downx, downy, *pad, flip, gain)


@pytest.mark.parametrize('case', range(len(_UFD_CASES)))
def test_upfirdn2d_wrapper_matches_reference(emulated_plugins, case):
    up, down, pad, flip, gain, kind = _UFD_CASES[case]
    f = _ufd_filter(kind)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    y = upfirdn2d_cuda.upfirdn2d_cuda(x, f, *_ufd_args(up, down, pad, flip, gain))
    y_ref = upfirdn2d_mod.upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain, impl='ref')
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)

    dy = torch.randn_like(y)
    g, = torch.autograd.grad(y, x, dy)
    g_ref, = torch.autograd.grad(y_ref, x, dy)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-12)


def test_upfirdn2d_wrapper_second_order(emulated_plugins):
    f = _ufd_filter('asym')
    x = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d_cuda.upfirdn2d_cuda(x, f, 2, 1, 1, 2, 1, 2, -1, 3, False, 1.5)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_upfirdn2d_transposed_config_restores_input_size():
    # For many shapes the transposed op maps the output size back to the input size.
    cfg_cls = upfirdn2d_cuda._Config
    for up, down, p0, p1, fl, n in [(1, 1, 0, 0, 3, 7), (2, 1, 2, 1, 4, 5), (1, 2, 1, 1, 4, 8),
                                    (3, 2, -2, 4, 4, 6), (1, 3, 0, 0, 1, 10), (2, 3, 5, -1, 5, 9)]:
        out = (n * up + p0 + p1 - fl) // down + 1
        cfg = cfg_cls(up, up, down, down, p0, p1, p0, p1, False, 1.0)
        t = upfirdn2d_cuda.transposed_config(cfg, n, n, out, out, fl, fl)
        assert (out * t.upy + t.pady0 + t.pady1 - fl) // t.downy + 1 == n
        assert t.flip is True and t.upx == down and t.downx == up


def test_upfirdn2d_wrapper_rejects_learned_filter(emulated_plugins):
    x = torch.randn(1, 1, 4, 4)
    f = torch.ones(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="impl='ref'"):
        upfirdn2d_cuda.upfirdn2d_cuda(x, f)


def test_find_cuda_home_skips_nvcc_wrappers_outside_a_toolkit(tmp_path, monkeypatch):
    def make(root, with_headers):
        (root / 'bin').mkdir(parents=True)
        nvcc = root / 'bin' / 'nvcc'
        nvcc.write_text('#!/bin/sh\nexit 0\n')
        nvcc.chmod(0o755)
        if with_headers:
            (root / 'include').mkdir()
            (root / 'include' / 'cuda_runtime.h').write_text('')
        return str(root)

    monkeypatch.delenv('CUDA_HOME', raising=False)
    monkeypatch.delenv('CUDA_PATH', raising=False)
    wrapper = make(tmp_path / 'wrapper', with_headers=False)
    monkeypatch.setenv('PATH', os.path.join(wrapper, 'bin'))
    assert custom_ops.find_cuda_home() != wrapper  # A script named nvcc is not a toolkit.
    toolkit = make(tmp_path / 'toolkit', with_headers=True)
    monkeypatch.setenv('PATH', os.path.join(toolkit, 'bin'))
    assert custom_ops.find_cuda_home() == toolkit
