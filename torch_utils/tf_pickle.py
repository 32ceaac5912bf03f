"""TensorFlow network pickles (StyleGAN2, StyleGAN2-ADA TF, DiffAugment-stylegan2) as data.

Those releases pickle `dnnlib.tflib.network.Network` objects, usually as the tuple
(G, D, Gs). The restricted unpickler of `torch_utils.netfile` resolves that one class name
to an inert holder (`netfile._TFNetwork`) that only records the pickled state dict:

    {'version', 'name', 'static_kwargs', 'components', 'build_module_src',
     'build_func_name', 'variables': [(name, ndarray), ...], 'input_shapes', ...}

`build_module_src` is the TensorFlow source of the network; it is never executed, not even
read beyond its type. This module turns such a record into our `training.networks`
Generator or Discriminator: the constructor arguments come from `static_kwargs` (with the
defaults of the TensorFlow code where a key is absent), every parameter of the rebuilt
network is taken from one TensorFlow variable (transposed, flipped and reshaped into the
PyTorch layout), and every variable must be used, so that nothing of the file is silently
dropped. Unknown static kwargs and unsupported variants are refused with a sentence.
"""

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from torch_utils import netfile

TFNetwork = netfile._TFNetwork  # The inert holder the unpickler builds.

MIN_VERSION = 4  # The StyleGAN2 TensorFlow code wrote version 4; older pickles are StyleGAN1.

# Static kwargs that do not change the network's parameters or its output in evaluation.
_G_IGNORED = frozenset([
    'truncation_psi', 'truncation_cutoff', 'truncation_psi_val', 'truncation_cutoff_val',
    'style_mixing_prob', 'is_template_graph', 'is_training', 'is_validation', 'return_dlatents',
    'impl', 'fused_modconv', 'randomize_noise', 'dtype', 'mapping_dtype', 'synthesis_dtype',
    'num_fp16_res_mapping', 'dlatent_broadcast',
])
_D_IGNORED = frozenset(['is_template_graph', 'is_training', 'impl', 'dtype', 'fused_modconv'])
_STRUCTURES = (None, 'auto', 'fixed')   # 'linear'/'recursive' are progressive-growing graphs.
_G_BUILD_FUNCS = ('G_main',)
_MAPPING_FUNCS = ('G_mapping',)
_SYNTHESIS_FUNCS = ('G_synthesis_stylegan2', 'G_synthesis')
_D_BUILD_FUNCS = ('D_stylegan2', 'D_main')
_ARCHITECTURES = ('orig', 'skip', 'resnet')


class TFPickleError(netfile.NetworkFileError):
    """A TensorFlow network that cannot be rebuilt (unsupported variant, inconsistent data)."""


# ---------------------------------------------------------------------------------------
# The record as plain data.

def _plain(value: Any, where: str, depth: int = 0) -> Any:
    """Checks that a value of static_kwargs (after materializing) is plain data."""
    if depth > 16:
        raise netfile.UnsafeNetworkFileError(f'{where}: nested too deeply')
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (list, tuple):
        return type(value)(_plain(v, where, depth + 1) for v in value)
    if isinstance(value, dict) and type(value) in (dict, netfile.EasyDict, netfile.collections.OrderedDict):
        if not all(type(k) is str for k in value):
            raise netfile.UnsafeNetworkFileError(f'{where}: dict keys must be strings')
        return {k: _plain(v, f'{where}.{k}', depth + 1) for k, v in value.items()}
    if isinstance(value, np.generic) and value.dtype.kind in 'biuf':
        return value.item()
    raise netfile.UnsafeNetworkFileError(f'{where}: holds a {type(value).__name__} where plain data '
                                         f'(numbers, strings, lists, dicts) was expected')


class TFRecord:
    """One TensorFlow network as checked data: name, build function, kwargs, variables, components."""

    def __init__(self, name: str, version: int, build_func_name: str, static_kwargs: Dict[str, Any],
                 variables: Dict[str, np.ndarray], components: Dict[str, 'TFRecord']):
        self.name = name
        self.version = version
        self.build_func_name = build_func_name
        self.static_kwargs = static_kwargs
        self.variables = variables
        self.components = components

    def all_variables(self, prefix: str = '') -> Dict[str, np.ndarray]:
        """Variables of this network and its components, as 'component/name'."""
        out = {prefix + k: v for k, v in self.variables.items()}
        for cname, comp in self.components.items():
            out.update(comp.all_variables(f'{prefix}{cname}/'))
        return out


def read_record(obj: Any, mat: Any, where: str, depth: int = 0) -> TFRecord:
    """Validates an inert Network holder and its components into a TFRecord.

    Args:
        obj: A `netfile._TFNetwork`.
        mat: The loader's materializer (counts values and bounds nesting; yields arrays).
        where: Position in the file, for messages.
    """
    if type(obj) is not TFNetwork:
        raise netfile.UnsafeNetworkFileError(f'{where}: expected a TensorFlow network, got {type(obj).__name__}')
    if depth > 8:
        raise netfile.UnsafeNetworkFileError(f'{where}: TensorFlow components nested more than 8 levels deep')
    state = obj.state
    if state is None:
        raise netfile.UnsafeNetworkFileError(f'{where}: TensorFlow network without state')
    unknown = sorted(set(state) - {'version', 'name', 'static_kwargs', 'components', 'build_module_src',
                                    'build_func_name', 'variables', 'input_shapes', 'output_shapes',
                                    'input_names', 'output_names'})
    if unknown:
        raise netfile.UnsafeNetworkFileError(f'{where}: TensorFlow network state has unknown entries '
                                             f'{netfile._short_list(unknown)}')
    src = state.get('build_module_src', '')
    if type(src) is not str:  # Kept as text only; never executed, never parsed.
        raise netfile.UnsafeNetworkFileError(f'{where}: build_module_src is a {type(src).__name__}, not text')
    version, name, func = state.get('version'), state.get('name', ''), state.get('build_func_name', '')
    if type(version) is not int:
        raise netfile.UnsafeNetworkFileError(f'{where}: TensorFlow network version is not an integer')
    if type(name) is not str or type(func) is not str or not re.fullmatch(r'[A-Za-z0-9_.]{0,100}', func):
        raise netfile.UnsafeNetworkFileError(f'{where}: TensorFlow network name or build_func_name is not plain text')
    what = f'{where} (TensorFlow network {name!r})'
    if version < MIN_VERSION:
        raise TFPickleError(f'{what}: pickle version {version} is older than StyleGAN2 (version {MIN_VERSION}); '
                            f'StyleGAN1 networks are not supported')
    for key in ('input_shapes', 'output_shapes', 'input_names', 'output_names'):
        if key in state:
            _plain(mat.value(state[key], f'{where}.{key}'), f'{where}.{key}')
    kwargs = _plain(mat.value(state.get('static_kwargs', {}), f'{where}.static_kwargs'), f'{where}.static_kwargs')
    if not isinstance(kwargs, dict):
        raise netfile.UnsafeNetworkFileError(f'{what}: static_kwargs is not a dict')

    raw_vars = state.get('variables', [])
    if type(raw_vars) not in (list, tuple):
        raise netfile.UnsafeNetworkFileError(f'{what}: variables is not a list')
    variables: Dict[str, np.ndarray] = {}
    for item in raw_vars:
        if type(item) not in (list, tuple) or len(item) != 2 or type(item[0]) is not str:
            raise netfile.UnsafeNetworkFileError(f'{what}: variables must be (name, array) pairs')
        vname = item[0]
        value = mat.value(item[1], f'{where}.{vname}')
        if isinstance(value, np.generic) or type(value) in (int, float, bool):
            value = np.asarray(value)
        if type(value) is not np.ndarray or value.dtype.kind not in 'biuf':
            raise netfile.UnsafeNetworkFileError(f'{what}: variable {netfile._show(vname)} is a '
                                                 f'{type(value).__name__}, not a numeric array')
        if vname in variables:
            raise TFPickleError(f'{what}: variable {netfile._show(vname)} appears twice')
        variables[vname] = value

    raw_comps = state.get('components', {})
    if not isinstance(raw_comps, dict) or not all(type(k) is str for k in raw_comps):
        raise netfile.UnsafeNetworkFileError(f'{what}: components must be a dict with string keys')
    components = {k: read_record(v, mat, f'{where}/{k}', depth + 1) for k, v in raw_comps.items()}
    return TFRecord(name, version, func, kwargs, variables, components)


# ---------------------------------------------------------------------------------------
# Static kwargs -> our constructor arguments.

class _Kwargs:
    """Reads static kwargs with the TensorFlow defaults, remembering which keys were read."""

    def __init__(self, kwargs: Dict[str, Any], what: str):
        self.kwargs = kwargs
        self.what = what
        self.used = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        value = self.kwargs.get(key, default)
        return default if value is None else value

    def int(self, key: str, default: int, low: int = 0) -> int:
        value = self.get(key, default)
        if type(value) is not int or value < low:
            raise TFPickleError(f'{self.what}: static kwarg {key}={netfile._show(value)} is not an integer >= {low}')
        return value

    def float(self, key: str, default: Optional[float]) -> Optional[float]:
        value = self.get(key, default)
        if value is None:
            return None
        if type(value) not in (int, float) or not np.isfinite(value):
            raise TFPickleError(f'{self.what}: static kwarg {key}={netfile._show(value)} is not a finite number')
        return float(value)

    def choice(self, key: str, default: Any, allowed: Tuple[Any, ...]) -> Any:
        value = self.get(key, default)
        if value not in allowed:
            raise TFPickleError(f'{self.what}: static kwarg {key}={netfile._show(value)} is not supported '
                                f'(supported: {", ".join(map(str, allowed))})')
        return value

    def check_unknown(self, ignored: frozenset) -> None:
        unknown = sorted(set(self.kwargs) - self.used - ignored)
        if unknown:
            raise TFPickleError(f'{self.what}: unknown static kwarg(s) {netfile._short_list(unknown)}; '
                                f'this variant of the TensorFlow networks is not supported')


def _channels(k: _Kwargs) -> Tuple[int, int]:
    """channel_base and channel_max from fmap_base, fmap_max (and fmap_decay, fmap_min)."""
    if k.float('fmap_decay', 1.0) != 1.0:
        raise TFPickleError(f'{k.what}: fmap_decay != 1 has no counterpart in our networks')
    if k.int('fmap_min', 1) != 1:
        raise TFPickleError(f'{k.what}: fmap_min != 1 has no counterpart in our networks')
    # TensorFlow: channels(res) = min(fmap_base / 2^(log2(res) - 1), fmap_max) = min(2 * fmap_base / res, ...).
    return 2 * k.int('fmap_base', 16384, 1), k.int('fmap_max', 512, 1)


def _activation(k: _Kwargs, key: str) -> str:
    return k.choice(key, 'lrelu', ('lrelu', 'relu', 'linear', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish'))


def _resample_filter(k: _Kwargs) -> List[int]:
    value = k.get('resample_kernel', [1, 3, 3, 1])
    if type(value) not in (list, tuple) or not value or not all(type(v) in (int, float) for v in value):
        raise TFPickleError(f'{k.what}: resample_kernel={netfile._show(value)} is not a list of numbers')
    return list(value)


def _conv_clamp(k: _Kwargs) -> Optional[float]:
    value = k.float('conv_clamp', None)
    return value


def generator_kwargs(rec: TFRecord, what: str) -> Dict[str, Any]:
    """Our Generator's constructor arguments for a TensorFlow G_main record."""
    k = _Kwargs(rec.static_kwargs, what)
    k.choice('structure', None, _STRUCTURES)
    k.choice('mapping_func', 'G_mapping', _MAPPING_FUNCS)
    k.choice('synthesis_func', 'G_synthesis_stylegan2', _SYNTHESIS_FUNCS)
    if not k.get('normalize_latents', True):
        raise TFPickleError(f'{what}: normalize_latents=False has no counterpart in our mapping network')
    c_dim = k.int('label_size', 0)
    w_dim = k.int('dlatent_size', 512, 1)
    beta = k.float('w_avg_beta', None)
    beta = k.float('dlatent_avg_beta', 0.995) if beta is None else beta
    k.used.add('dlatent_avg_beta')
    channel_base, channel_max = _channels(k)
    variables = rec.all_variables()
    num_layers = k.int('mapping_layers', 8, 1)
    # The hidden width: the stored shapes decide (the TF defaults differ between releases).
    hidden = variables.get('mapping/Dense0/weight')
    layer_features = int(hidden.shape[1]) if hidden is not None and hidden.ndim == 2 and num_layers > 1 else None
    mapping_fmaps = k.get('mapping_fmaps', None)
    if layer_features is None and isinstance(mapping_fmaps, int):
        layer_features = mapping_fmaps
    label_fmaps = k.get('label_fmaps', None)
    if c_dim > 0 and 'mapping/LabelEmbed/weight' not in variables:
        raise TFPickleError(f'{what}: a conditional generator that concatenates labels before normalizing '
                            f'(mapping/LabelConcat, the StyleGAN2 and DiffAugment TF releases) has no '
                            f'counterpart in our mapping network; only StyleGAN2-ADA TF label embeddings '
                            f'(mapping/LabelEmbed) are supported')
    architecture = k.choice('architecture', 'skip', _ARCHITECTURES)
    if any(re.fullmatch(r'synthesis/ToRGB_lod\d+/.*', n) for n in variables):
        architecture = 'orig'
    kwargs = dict(
        z_dim=k.int('latent_size', 512, 0),
        c_dim=c_dim,
        w_dim=w_dim,
        img_resolution=k.int('resolution', 1024, 4),
        img_channels=k.int('num_channels', 3, 1),
        mapping_kwargs=dict(
            num_layers=num_layers,
            embed_features=label_fmaps if isinstance(label_fmaps, int) else None,
            layer_features=layer_features,
            activation=_activation(k, 'mapping_nonlinearity'),
            lr_multiplier=k.float('mapping_lrmul', 0.01),
            w_avg_beta=beta if beta is not None else 1.0,
        ),
        synthesis_kwargs=dict(
            channel_base=channel_base,
            channel_max=channel_max,
            num_fp16_res=k.int('num_fp16_res', 0),
            conv_clamp=_conv_clamp(k),
            architecture=architecture,
            resample_filter=_resample_filter(k),
            use_noise=bool(k.get('use_noise', True)),
            activation=_activation(k, 'nonlinearity'),
        ),
    )
    for key in ('resolution', 'latent_size', 'num_channels'):
        k.used.add(key)
    k.check_unknown(_G_IGNORED)
    return kwargs


def discriminator_kwargs(rec: TFRecord, what: str) -> Dict[str, Any]:
    """Our Discriminator's constructor arguments for a TensorFlow D record."""
    k = _Kwargs(rec.static_kwargs, what)
    k.choice('structure', None, _STRUCTURES)
    c_dim = k.int('label_size', 0)
    channel_base, channel_max = _channels(k)
    mapping_fmaps = k.get('mapping_fmaps', None)
    if mapping_fmaps is not None and (type(mapping_fmaps) is not int or mapping_fmaps < 1):
        raise TFPickleError(f'{what}: mapping_fmaps={netfile._show(mapping_fmaps)} is not a positive integer')
    if c_dim > 0 and 'LabelEmbed/weight' not in rec.variables:
        raise TFPickleError(f'{what}: a conditional discriminator that projects labels in its output layer '
                            f'(the StyleGAN2 and DiffAugment TF releases) has no counterpart in our '
                            f'discriminator; only StyleGAN2-ADA TF label mappings are supported')
    architecture = k.choice('architecture', 'resnet', _ARCHITECTURES)
    if any(re.fullmatch(r'FromRGB_lod\d+/.*', n) for n in rec.variables):
        architecture = 'orig'
    act = _activation(k, 'nonlinearity')
    kwargs = dict(
        c_dim=c_dim,
        img_resolution=k.int('resolution', 1024, 8),
        img_channels=k.int('num_channels', 3, 1),
        architecture=architecture,
        channel_base=channel_base,
        channel_max=channel_max,
        num_fp16_res=k.int('num_fp16_res', 0),
        conv_clamp=_conv_clamp(k),
        cmap_dim=mapping_fmaps,
        block_kwargs=dict(activation=act, resample_filter=_resample_filter(k),
                          freeze_layers=k.int('freeze_layers', 0)),
        mapping_kwargs=dict(num_layers=k.int('mapping_layers', 0), embed_features=mapping_fmaps,
                            layer_features=mapping_fmaps, activation=act,
                            lr_multiplier=k.float('mapping_lrmul', 0.1)),
        # The TF releases default to groups of 4 (mbstd_group_size=4); None means the whole batch.
        epilogue_kwargs=dict(mbstd_group_size=k.int('mbstd_group_size', 4, 1),
                             mbstd_num_channels=k.int('mbstd_num_features', 1, 1), activation=act),
    )
    k.check_unknown(_D_IGNORED)
    return kwargs


# ---------------------------------------------------------------------------------------
# Variables -> parameters.

Source = Tuple[str, Callable[[np.ndarray], np.ndarray]]


def _conv(v: np.ndarray) -> np.ndarray:
    """TF conv weight [kh, kw, in, out] -> [out, in, kh, kw]."""
    return v.transpose(3, 2, 0, 1)


def _conv_flipped(v: np.ndarray) -> np.ndarray:
    """Same, with the kernel rotated by 180 degrees: TF's upsampling conv is a transposed
    convolution of the flipped kernel, ours applies the kernel as stored."""
    return v[::-1, ::-1].transpose(3, 2, 0, 1)


def _dense(v: np.ndarray) -> np.ndarray:
    """TF dense weight [in, out] -> [out, in]."""
    return v.T


def _same(v: np.ndarray) -> np.ndarray:
    return v


def _plus_one(v: np.ndarray) -> np.ndarray:
    """TF adds 1 to the style after the bias; ours initialises the bias at 1 instead."""
    return v + 1


def _noise_image(v: np.ndarray) -> np.ndarray:
    """TF noise input [1, 1, r, r] -> [r, r]."""
    return v[0, 0]


def _first(v: np.ndarray) -> np.ndarray:
    """TF learned constant [1, C, 4, 4] -> [C, 4, 4]."""
    return v[0]


def _log2(res: str) -> int:
    return int(np.log2(int(res)))


def generator_source(name: str) -> Optional[Source]:
    """The TF variable (under G_main) and the transform that give our Generator parameter `name`."""
    m = re.fullmatch
    if name == 'mapping.w_avg':
        return 'dlatent_avg', _same
    if (g := m(r'mapping\.embed\.(weight|bias)', name)):
        return f'mapping/LabelEmbed/{g[1]}', _dense if g[1] == 'weight' else _same
    if (g := m(r'mapping\.fc(\d+)\.(weight|bias)', name)):
        return f'mapping/Dense{g[1]}/{g[2]}', _dense if g[2] == 'weight' else _same
    if name == 'synthesis.b4.const':
        return 'synthesis/4x4/Const/const', _first
    if (g := m(r'synthesis\.b(\d+)\.(conv0|conv1|torgb)\.(.+)', name)):
        res, layer, what = g[1], g[2], g[3]
        scope = {'conv0': 'Conv0_up', 'conv1': 'Conv1' if res != '4' else 'Conv', 'torgb': 'ToRGB'}[layer]
        prefix = f'synthesis/{res}x{res}/{scope}'
        if what == 'weight':
            return f'{prefix}/weight', _conv_flipped if layer == 'conv0' else _conv
        if what == 'bias':
            return f'{prefix}/bias', _same
        if what == 'affine.weight':
            return f'{prefix}/mod_weight', _dense
        if what == 'affine.bias':
            return f'{prefix}/mod_bias', _plus_one
        if what == 'noise_strength':
            return f'{prefix}/noise_strength', _same
        if what == 'noise_const':
            # TF numbers the noise inputs over all layers: 4x4 has noise0, then two per resolution.
            index = 0 if res == '4' else 2 * _log2(res) - (5 if layer == 'conv0' else 4)
            return f'synthesis/noise{index}', _noise_image
    if (g := m(r'synthesis\.b(\d+)\.skip\.weight', name)):
        return f'synthesis/{g[1]}x{g[1]}/Skip/weight', _conv_flipped
    return None


def discriminator_source(name: str) -> Optional[Source]:
    """The TF variable (of the D network) and the transform that give our Discriminator parameter `name`."""
    m = re.fullmatch
    if (g := m(r'b(\d+)\.fromrgb\.(weight|bias)', name)):
        return f'{g[1]}x{g[1]}/FromRGB/{g[2]}', _conv if g[2] == 'weight' else _same
    if (g := m(r'b(\d+)\.conv([01])\.(weight|bias)', name)):
        scope = 'Conv0' if g[2] == '0' else 'Conv1_down'
        return f'{g[1]}x{g[1]}/{scope}/{g[3]}', _conv if g[3] == 'weight' else _same
    if (g := m(r'b(\d+)\.skip\.weight', name)):
        return f'{g[1]}x{g[1]}/Skip/weight', _conv
    if (g := m(r'mapping\.embed\.(weight|bias)', name)):
        return f'LabelEmbed/{g[1]}', _dense if g[1] == 'weight' else _same
    if (g := m(r'mapping\.fc(\d+)\.(weight|bias)', name)):
        return f'Mapping{g[1]}/{g[2]}', _dense if g[2] == 'weight' else _same
    if (g := m(r'b4\.conv\.(weight|bias)', name)):
        return f'4x4/Conv/{g[1]}', _conv if g[1] == 'weight' else _same
    if (g := m(r'b4\.fc\.(weight|bias)', name)):
        return f'4x4/Dense0/{g[1]}', _dense if g[1] == 'weight' else _same
    if (g := m(r'b4\.out\.(weight|bias)', name)):
        return f'Output/{g[1]}', _dense if g[1] == 'weight' else _same
    return None


# Variables the TF graphs keep that have no parameter: the level of detail of progressive
# growing ('lod') and, in the 'orig' architecture, the outputs of the lower resolutions.
_G_UNUSED = re.compile(r'(synthesis/)?lod|synthesis/ToRGB_lod[1-9]\d*/.*')
_D_UNUSED = re.compile(r'lod|FromRGB_lod[1-9]\d*/.*')


def _orig_aliases(variables: Dict[str, np.ndarray], pattern: str, template: str, resolution: int) -> None:
    """'orig' graphs name the last output layer ToRGB_lod0 / FromRGB_lod0; alias it by resolution."""
    for vname in list(variables):
        g = re.fullmatch(pattern, vname)
        if g and g[1] == '0':
            variables[template.format(r=resolution, rest=g[2])] = variables.pop(vname)


def _fill(module: torch.nn.Module, variables: Dict[str, np.ndarray], source: Callable[[str], Optional[Source]],
          unused: 're.Pattern', what: str) -> None:
    """Copies one TF variable into every persistent tensor of `module`; all variables must be used."""
    used = set()
    persistent = module.state_dict()
    buffers = dict(module.named_buffers())
    for pname, tensor in persistent.items():
        if pname.endswith('resample_filter'):
            continue  # Fixed filters, built from resample_kernel.
        src = source(pname)
        if src is None:
            raise TFPickleError(f'{what}: no TensorFlow variable corresponds to our parameter {pname}')
        vname, transform = src
        if vname not in variables:
            raise TFPickleError(f'{what}: variable {vname} (for our {pname}) is missing from the file')
        value = np.array(transform(variables[vname]), dtype=np.float32, order="C")
        if tuple(value.shape) != tuple(tensor.shape):
            raise TFPickleError(f'{what}: variable {vname} has shape {tuple(variables[vname].shape)}, which does '
                                f'not give the shape {tuple(tensor.shape)} of our {pname}; the static kwargs '
                                f'and the variables disagree')
        if not np.isfinite(value).all():
            raise TFPickleError(f'{what}: variable {vname} holds NaN or Inf')
        target = buffers.get(pname)
        if target is None:
            target = dict(module.named_parameters())[pname]
        with torch.no_grad():
            target.copy_(torch.from_numpy(value))
        used.add(vname)
    left = sorted(n for n in variables if n not in used and not unused.fullmatch(n))
    if left:
        raise TFPickleError(f'{what}: {len(left)} TensorFlow variable(s) have no counterpart in our network: '
                            f'{netfile._short_list(left)}')


def _construct(class_name: str, kwargs: Dict[str, Any], what: str, variables: Dict[str, np.ndarray]):
    cls = netfile._resolve_registered(class_name)
    nbytes = sum(v.size * 4 for v in variables.values())
    return netfile._construct(cls, (), kwargs, what, nbytes)


def build_generator(rec: TFRecord, what: str) -> torch.nn.Module:
    """Our Generator with the parameters of a TensorFlow G_main record."""
    if set(rec.components) != {'mapping', 'synthesis'}:
        raise TFPickleError(f'{what}: a generator needs the components mapping and synthesis, '
                            f'the file has {netfile._short_list(sorted(rec.components)) or "none"}')
    kwargs = generator_kwargs(rec, what)
    variables = rec.all_variables()
    _orig_aliases(variables, r'synthesis/ToRGB_lod(\d+)/(.*)', 'synthesis/{r}x{r}/ToRGB/{rest}', kwargs['img_resolution'])
    G = _construct('training.networks.Generator', kwargs, what, variables)
    _fill(G, variables, generator_source, _G_UNUSED, what)
    return G


def build_discriminator(rec: TFRecord, what: str) -> torch.nn.Module:
    """Our Discriminator with the parameters of a TensorFlow discriminator record."""
    if rec.components:
        raise TFPickleError(f'{what}: a discriminator has no components, the file has '
                            f'{netfile._short_list(sorted(rec.components))}')
    kwargs = discriminator_kwargs(rec, what)
    variables = dict(rec.variables)
    _orig_aliases(variables, r'FromRGB_lod(\d+)/(.*)', '{r}x{r}/FromRGB/{rest}', kwargs['img_resolution'])
    D = _construct('training.networks.Discriminator', kwargs, what, variables)
    _fill(D, variables, discriminator_source, _D_UNUSED, what)
    return D


def build(obj: Any, mat: Any, where: str) -> torch.nn.Module:
    """Rebuilds an inert TF Network holder as our Generator or Discriminator (by its build function)."""
    rec = read_record(obj, mat, where)
    what = f'{where or "value"} (TensorFlow network {rec.name!r}, {rec.build_func_name or "no build function"})'
    func = rec.build_func_name.rsplit('.', 1)[-1]
    if func in _G_BUILD_FUNCS or (not func and set(rec.components) == {'mapping', 'synthesis'}):
        for cname, allowed in (('mapping', _MAPPING_FUNCS), ('synthesis', _SYNTHESIS_FUNCS)):
            comp = rec.components.get(cname)
            cfunc = comp.build_func_name.rsplit('.', 1)[-1] if comp is not None else ''
            if comp is not None and cfunc and cfunc not in allowed:
                raise TFPickleError(f'{what}: {cname} component built by {cfunc}, which is not supported '
                                    f'(supported: {", ".join(allowed)})')
        return build_generator(rec, what)
    if func in _D_BUILD_FUNCS:
        return build_discriminator(rec, what)
    raise TFPickleError(f'{what}: networks built by {func!r} are not supported; supported are the StyleGAN2 '
                        f'generator ({", ".join(_G_BUILD_FUNCS)}) and discriminator ({", ".join(_D_BUILD_FUNCS)})')


def is_tf_triple(raw: Any) -> bool:
    """True for the (G, D, Gs) tuple the TensorFlow training loops pickle."""
    return type(raw) in (tuple, list) and len(raw) == 3 and all(type(x) is TFNetwork for x in raw)
