"""The CUDA sources must compile wherever nvcc is found (GPU or not): CI fails when they don't.

Each op is built from scratch in a temporary cache for one architecture (to keep the compile
short), imported (which needs no GPU), called once to check the binding answers, and then
loaded by a second process from the cache without compiling.
"""

import os
import subprocess
import sys

import pytest
import torch

import dnnlib
from torch_utils import custom_ops
from torch_utils.ops import bias_act_cuda, upfirdn2d_cuda

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _skip_reason():
    if torch.version.cuda is None:
        return f'PyTorch {torch.__version__} has no CUDA support, so no CUDA extension can be built'
    if custom_ops.find_cuda_home() is None:
        return 'nvcc not found (looked at $CUDA_HOME, $CUDA_PATH, $PATH and /usr/local/cuda)'
    return None


@pytest.fixture
def scratch_cache(tmp_path, monkeypatch):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    dnnlib.set_cache_dir(str(tmp_path / 'cache'))
    monkeypatch.setenv('TORCH_CUDA_ARCH_LIST', '8.0')
    monkeypatch.setattr(custom_ops, 'verbosity', 'none')  # The compiler output is captured for the failure message.
    custom_ops.reset_state()
    yield tmp_path / 'cache' / 'torch_extensions'
    custom_ops.reset_state()
    dnnlib.util._cache_dir = None


def _build(spec):
    try:
        return custom_ops.get_plugin(**spec)
    except custom_ops.PluginBuildError as e:
        pytest.fail(f'building {spec["module_name"]} failed:\n{e}', pytrace=False)


def _call_on_cpu(name, module):
    """Calls the binding with CPU tensors: it must be reachable and refuse them clearly."""
    x = torch.zeros(1, 2, 3, 3)
    e = torch.empty(0)
    with pytest.raises(RuntimeError, match='must be a CUDA tensor'):
        if name == 'bias_act':
            module.bias_act(x, e, e, e, 0, 1, 1, 0.0, 1.0, -1.0)
        else:
            module.upfirdn2d(x, torch.ones(1, 1), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)


@pytest.mark.parametrize('name,spec', [('bias_act', bias_act_cuda.PLUGIN_SPEC),
                                       ('upfirdn2d', upfirdn2d_cuda.PLUGIN_SPEC)])
def test_op_compiles_imports_and_is_cached(scratch_cache, name, spec):
    module = _build(spec)
    assert callable(getattr(module, name))
    _call_on_cpu(name, module)

    # One finished build directory with its manifest; no temporary directory left behind.
    dirs = [d for d in os.listdir(scratch_cache) if os.path.isdir(os.path.join(scratch_cache, d))]
    assert len(dirs) == 1 and dirs[0].startswith(spec['module_name'] + '-'), dirs
    assert os.path.isfile(os.path.join(scratch_cache, dirs[0], 'build.json'))

    # A new process reuses the build without calling the compiler.
    script = (
        'import sys, dnnlib\n'
        'import torch.utils.cpp_extension as cpp_ext\n'
        'def no_compile(*a, **k): raise AssertionError("the cached build was not reused")\n'
        'cpp_ext.load = no_compile\n'
        'from torch_utils import custom_ops\n'
        'from torch_utils.ops import %s_cuda as op\n'
        'dnnlib.set_cache_dir(sys.argv[1])\n'
        'custom_ops.set_verbosity("none")\n'
        'print(custom_ops.get_plugin(**op.PLUGIN_SPEC).__file__)\n' % name)
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST='8.0')
    out = subprocess.run([sys.executable, '-c', script, str(scratch_cache.parent)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    text = out.stdout.decode(errors='replace')
    assert out.returncode == 0, text
    assert os.path.dirname(text.strip().splitlines()[-1]) == os.path.join(str(scratch_cache), dirs[0]), text
