"""TensorFlow network pickles (StyleGAN2, StyleGAN2-ADA TF, DiffAugment-stylegan2).

The files are written here with plain pickle: stand-in classes named
dnnlib.tflib.network.Network exist only while pickling, with the state layout of the TF
releases (version, name, static_kwargs, components, build_module_src, build_func_name,
variables as (name, array) pairs in TF layout).
"""

import contextlib
import io
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from torch_utils import netfile, tf_pickle
from torch_utils.netfile import LoadLimits, NetworkFileError, UnsafeNetworkFileError, load_network_pickle

SQRT2 = np.sqrt(2.0)


# ---------------------------------------------------------------------------------------
# Writing TF-style pickles.

@contextlib.contextmanager
def _tf_classes():
    """Stand-in `dnnlib.tflib.network.Network` (and its packages) while pickling."""
    tflib = types.ModuleType('dnnlib.tflib')
    network = types.ModuleType('dnnlib.tflib.network')

    class Network:
        def __init__(self, state):
            self._state = state

        def __getstate__(self):
            return self._state

    Network.__module__ = 'dnnlib.tflib.network'
    Network.__qualname__ = 'Network'
    network.Network = Network
    tflib.network = network
    saved = {k: sys.modules.get(k) for k in ('dnnlib.tflib', 'dnnlib.tflib.network')}
    sys.modules['dnnlib.tflib'] = tflib
    sys.modules['dnnlib.tflib.network'] = network
    try:
        yield Network
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _net(Network, name, func, kwargs, variables, components=None, src='raise SystemExit("never run")'):
    return Network(dict(version=4, name=name, static_kwargs=dict(kwargs), components=dict(components or {}),
                        build_module_src=src, build_func_name=func, variables=list(variables.items()),
                        input_shapes=[[None, 8], [None, 0]], output_shapes=[[None, 3, 16, 16]],
                        input_names=['latents_in', 'labels_in'], output_names=['images_out']))


RES, ZDIM, WDIM, NMAP = 16, 8, 8, 2
FMAP_BASE, FMAP_MAX = 32, 16       # TF channels(res) = min(2 * 32 / res, 16): 4x4: 16, 8x8: 8, 16x16: 4.
CH = {4: 16, 8: 8, 16: 4}
G_KWARGS = dict(latent_size=ZDIM, dlatent_size=WDIM, mapping_fmaps=WDIM, mapping_layers=NMAP, resolution=RES,
                num_channels=3, label_size=0, fmap_base=FMAP_BASE, fmap_max=FMAP_MAX, impl='cuda',
                truncation_psi=0.5, style_mixing_prob=0.9)
D_KWARGS = dict(resolution=RES, num_channels=3, label_size=0, fmap_base=FMAP_BASE, fmap_max=FMAP_MAX,
                mbstd_group_size=2, impl='ref')


def _tf_generator_vars(rng):
    """Variables of G_main / G_mapping / G_synthesis_stylegan2 ('skip') in TF layout."""
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    mapping = {}
    for i in range(NMAP):
        mapping[f'Dense{i}/weight'] = r(ZDIM if i == 0 else WDIM, WDIM)
        mapping[f'Dense{i}/bias'] = r(WDIM)
    synthesis = {'4x4/Const/const': r(1, CH[4], 4, 4), 'noise0': r(1, 1, 4, 4)}
    for res in (4, 8, 16):
        convs = ['Conv'] if res == 4 else ['Conv0_up', 'Conv1']
        for j, conv in enumerate(convs):
            cin = CH[res] if (res == 4 or j == 1) else CH[res // 2]
            p = f'{res}x{res}/{conv}'
            synthesis[f'{p}/weight'] = r(3, 3, cin, CH[res])
            synthesis[f'{p}/mod_weight'] = r(WDIM, cin)
            synthesis[f'{p}/mod_bias'] = r(cin)
            synthesis[f'{p}/noise_strength'] = r()
            synthesis[f'{p}/bias'] = r(CH[res])
        if res > 4:
            lg = int(np.log2(res))
            synthesis[f'noise{2 * lg - 5}'] = r(1, 1, res, res)
            synthesis[f'noise{2 * lg - 4}'] = r(1, 1, res, res)
        p = f'{res}x{res}/ToRGB'
        synthesis[f'{p}/weight'] = r(1, 1, CH[res], 3)
        synthesis[f'{p}/mod_weight'] = r(WDIM, CH[res])
        synthesis[f'{p}/mod_bias'] = r(CH[res])
        synthesis[f'{p}/bias'] = r(3)
    synthesis['lod'] = np.float32(0)
    top = {'lod': np.float32(0), 'dlatent_avg': r(WDIM)}
    return top, mapping, synthesis


def _tf_discriminator_vars(rng):
    """Variables of D_stylegan2 ('resnet') in TF layout."""
    r = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    v = {f'{RES}x{RES}/FromRGB/weight': r(1, 1, 3, CH[RES]), f'{RES}x{RES}/FromRGB/bias': r(CH[RES])}
    for res in (16, 8):
        p = f'{res}x{res}'
        v[f'{p}/Conv0/weight'] = r(3, 3, CH[res], CH[res])
        v[f'{p}/Conv0/bias'] = r(CH[res])
        v[f'{p}/Conv1_down/weight'] = r(3, 3, CH[res], CH[res // 2])
        v[f'{p}/Conv1_down/bias'] = r(CH[res // 2])
        v[f'{p}/Skip/weight'] = r(1, 1, CH[res], CH[res // 2])
    v['4x4/Conv/weight'] = r(3, 3, CH[4] + 1, CH[4])
    v['4x4/Conv/bias'] = r(CH[4])
    v['4x4/Dense0/weight'] = r(CH[4] * 16, CH[4])
    v['4x4/Dense0/bias'] = r(CH[4])
    v['Output/weight'] = r(CH[4], 1)
    v['Output/bias'] = r(1)
    return v


def _tf_nets(Network, seed=0, g_kwargs=None, d_kwargs=None, g_vars=None, d_vars=None, protocol=3):
    rng = np.random.default_rng(seed)
    top, mapping, synthesis = g_vars or _tf_generator_vars(rng)
    dv = d_vars or _tf_discriminator_vars(rng)
    gk = dict(G_KWARGS, **(g_kwargs or {}))

    def G(name):
        comps = dict(mapping=_net(Network, 'G_mapping', 'training.networks_stylegan2.G_mapping', gk, mapping),
                     synthesis=_net(Network, 'G_synthesis', 'training.networks_stylegan2.G_synthesis_stylegan2',
                                    gk, synthesis))
        return _net(Network, name, 'training.networks_stylegan2.G_main', gk, top, comps)

    D = _net(Network, 'D', 'training.networks_stylegan2.D_stylegan2', dict(D_KWARGS, **(d_kwargs or {})), dv)
    return (G('G'), D, G('Gs')), (top, mapping, synthesis, dv)


def _write(tmp_path, name='tf.pkl', protocol=3, **kwargs):
    with _tf_classes() as Network:
        nets, variables = _tf_nets(Network, **kwargs)
        data = pickle.dumps(nets, protocol=protocol)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), variables


# ---------------------------------------------------------------------------------------
# Independent NumPy forward of the TF graph (StyleGAN2 TF conventions).

def _lrelu(x):
    return np.where(x >= 0, x, 0.2 * x) * SQRT2


def _np_mapping(z, mapping, lrmul=0.01):
    x = z / np.sqrt(np.mean(z ** 2, axis=1, keepdims=True) + 1e-8)
    for i in range(NMAP):
        w = mapping[f'Dense{i}/weight'].astype(np.float64)
        b = mapping[f'Dense{i}/bias'].astype(np.float64)
        x = _lrelu(x @ (w * (lrmul / np.sqrt(w.shape[0]))) + b * lrmul)
    return x


def _np_conv_same(x, w):
    """tf.nn.conv2d NCHW, padding SAME, weight [kh, kw, in, out] (cross-correlation)."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[:2]
    xp = np.pad(x, [(0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)])
    out = np.zeros((n, w.shape[3], h, wd))
    for a in range(kh):
        for b in range(kw):
            out += np.einsum('nchw,co->nohw', xp[:, :, a:a + h, b:b + wd], w[a, b])
    return out


def _np_modconv(x, wlat, syn, prefix, demodulate=True):
    """modulated_conv2d_layer of the TF release, per sample (not fused)."""
    w = syn[f'{prefix}/weight'].astype(np.float64)
    kh, kw, cin, _ = w.shape
    w = w / np.sqrt(kh * kw * cin)                                   # Equalized learning rate.
    mw = syn[f'{prefix}/mod_weight'].astype(np.float64)
    s = wlat @ (mw / np.sqrt(mw.shape[0])) + syn[f'{prefix}/mod_bias'] + 1   # [N, in]
    outs = []
    for i in range(x.shape[0]):
        ww = w * s[i][None, None, :, None]
        if demodulate:
            ww = ww / np.sqrt(np.sum(ww ** 2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        outs.append(_np_conv_same(x[i:i + 1], ww))
    return np.concatenate(outs)


def _np_synthesis_layer(x, wlat, syn, prefix, noise_name):
    y = _np_modconv(x, wlat, syn, prefix)
    y = y + syn[noise_name][0, 0] * syn[f'{prefix}/noise_strength']  # noise_mode const: the stored noise.
    return _lrelu(y + syn[f'{prefix}/bias'][None, :, None, None])


def _np_fir(x, k, pad0, pad1):
    """upfirdn_2d without up/down: pad, then a valid 2D convolution with kernel k."""
    x = np.pad(x, [(0, 0), (0, 0), (pad0, pad1), (pad0, pad1)])
    kf = k[::-1, ::-1]
    kh, kw = k.shape
    h, w = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros(x.shape[:2] + (h, w))
    for a in range(kh):
        for b in range(kw):
            out += kf[a, b] * x[:, :, a:a + h, b:b + w]
    return out


def _fir_kernel(k=(1, 3, 3, 1)):
    k = np.outer(k, k).astype(np.float64)
    return k / k.sum()


def _np_upsample_2d(y):
    """TF upsample_2d(k=[1,3,3,1], factor 2): zero insertion, pad (2, 1), FIR with gain 4."""
    n, c, h, w = y.shape
    z = np.zeros((n, c, 2 * h, 2 * w))
    z[:, :, ::2, ::2] = y
    return _np_fir(z, _fir_kernel() * 4, 2, 1)


def _np_upsample_conv(x, ww):
    """TF upsample_conv_2d for one sample: transposed conv (stride 2) of the flipped kernel,
    then the FIR filter with gain 4 and padding (1, 1)."""
    kh, kw, cin, cout = ww.shape
    filt = np.transpose(ww[::-1, ::-1], (0, 1, 3, 2))       # [kh, kw, out, in]
    n, _, h, w = x.shape
    out = np.zeros((n, cout, (h - 1) * 2 + kh, (w - 1) * 2 + kw))
    for a in range(kh):
        for b in range(kw):
            out[:, :, a:a + 2 * h:2, b:b + 2 * w:2] += np.einsum('nchw,oc->nohw', x, filt[a, b])
    return _np_fir(out, _fir_kernel() * 4, 1, 1)


def _np_layer(x, wlat, syn, prefix, noise_name, up=False):
    w = syn[f'{prefix}/weight'].astype(np.float64)
    kh, kw, cin, _ = w.shape
    w = w / np.sqrt(kh * kw * cin)
    mw = syn[f'{prefix}/mod_weight'].astype(np.float64)
    s = wlat @ (mw / np.sqrt(mw.shape[0])) + syn[f'{prefix}/mod_bias'] + 1
    outs = []
    for i in range(x.shape[0]):
        ww = w * s[i][None, None, :, None]
        ww = ww / np.sqrt(np.sum(ww ** 2, axis=(0, 1, 2), keepdims=True) + 1e-8)
        outs.append(_np_upsample_conv(x[i:i + 1], ww) if up else _np_conv_same(x[i:i + 1], ww))
    y = np.concatenate(outs) + syn[noise_name][0, 0] * syn[f'{prefix}/noise_strength']
    return _lrelu(y + syn[f'{prefix}/bias'][None, :, None, None])


def _np_synthesis(ws, syn):
    """G_synthesis_stylegan2, architecture 'skip', noise from the stored noise inputs."""
    x = np.repeat(syn['4x4/Const/const'].astype(np.float64), ws.shape[0], axis=0)
    x = _np_layer(x, ws[:, 0], syn, '4x4/Conv', 'noise0')
    torgb = lambda x, wl, res: (_np_modconv(x, wl, syn, f'{res}x{res}/ToRGB', demodulate=False)  # noqa: E731
                                + syn[f'{res}x{res}/ToRGB/bias'][None, :, None, None])
    y = torgb(x, ws[:, 1], 4)
    for lg in range(3, int(np.log2(RES)) + 1):
        res = 2 ** lg
        x = _np_layer(x, ws[:, 2 * lg - 5], syn, f'{res}x{res}/Conv0_up', f'noise{2 * lg - 5}', up=True)
        x = _np_layer(x, ws[:, 2 * lg - 4], syn, f'{res}x{res}/Conv1', f'noise{2 * lg - 4}')
        y = _np_upsample_2d(y) + torgb(x, ws[:, 2 * lg - 3], res)
    return y


# ---------------------------------------------------------------------------------------
# Tests: the generator.

def test_tf_pickle_loads_as_G_D_G_ema_without_running_its_source(tmp_path):
    path, _ = _write(tmp_path)
    data = load_network_pickle(path)
    assert data.format == 'tensorflow' and set(data) == {'G', 'D', 'G_ema'}
    from training.networks import Discriminator, Generator
    assert isinstance(data['G'], Generator) and isinstance(data['G_ema'], Generator)
    assert isinstance(data['D'], Discriminator)
    G = data['G_ema']
    assert (G.z_dim, G.w_dim, G.img_resolution, G.img_channels, G.num_ws) == (ZDIM, WDIM, RES, 3, 6)
    assert [getattr(G.synthesis, f'b{r}').conv1.out_channels for r in (4, 8, 16)] == [16, 8, 4]
    assert G.mapping.num_layers == NMAP and G.mapping.w_avg_beta == pytest.approx(0.995)
    img = G(torch.randn(2, ZDIM), torch.zeros(2, 0), noise_mode='const')
    assert img.shape == (2, 3, RES, RES) and torch.isfinite(img).all()
    assert any('TensorFlow' in n for n in data.notes)


def test_mapping_network_matches_numpy_forward(tmp_path):
    path, (top, mapping, _, _) = _write(tmp_path)
    G = load_network_pickle(path, keys=['G_ema'])['G_ema']
    z = np.random.default_rng(5).standard_normal((3, ZDIM))
    ws = G.mapping(torch.from_numpy(z).float(), None).double().numpy()
    expect = _np_mapping(z, mapping)
    assert ws.shape == (3, G.num_ws, WDIM)
    np.testing.assert_allclose(ws[:, 0], expect, rtol=1e-4, atol=1e-4)
    assert np.array_equal(ws[:, 0], ws[:, -1])
    # Truncation pulls toward dlatent_avg, as in TF's Truncation scope.
    wt = G.mapping(torch.from_numpy(z).float(), None, truncation_psi=0.5).double().numpy()
    np.testing.assert_allclose(wt[:, 0], top['dlatent_avg'] + 0.5 * (expect - top['dlatent_avg']), rtol=1e-4, atol=1e-4)


def test_synthesis_4x4_layer_and_torgb_match_numpy_forward(tmp_path):
    """Modulated conv with demodulation, stored noise times its strength, bias, lrelu with
    gain sqrt(2); then the toRGB (modulated, not demodulated, 1x1, bias)."""
    path, (_, _, syn, _) = _write(tmp_path)
    G = load_network_pickle(path, keys=['G_ema'])['G_ema']
    rng = np.random.default_rng(7)
    wlat = rng.standard_normal((2, WDIM))
    x0 = np.repeat(syn['4x4/Const/const'].astype(np.float64), 2, axis=0)
    expect = _np_synthesis_layer(x0, wlat, syn, '4x4/Conv', 'noise0')
    b4 = G.synthesis.b4
    wt = torch.from_numpy(wlat).float()
    for fused in (True, False):
        got = b4.conv1(torch.from_numpy(x0).float(), wt, noise_mode='const', fused_modconv=fused).double().numpy()
        np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
    rgb = _np_modconv(expect, wlat, syn, '4x4/ToRGB', demodulate=False) + syn['4x4/ToRGB/bias'][None, :, None, None]
    got = b4.torgb(torch.from_numpy(expect).float(), wt).double().numpy()
    np.testing.assert_allclose(got, rgb, rtol=1e-4, atol=1e-4)
    # Noise: the stored TF noise inputs, per layer in TF's numbering.
    assert np.array_equal(G.synthesis.b8.conv0.noise_const.numpy(), syn['noise1'][0, 0])
    assert np.array_equal(G.synthesis.b8.conv1.noise_const.numpy(), syn['noise2'][0, 0])
    assert np.array_equal(G.synthesis.b16.conv0.noise_const.numpy(), syn['noise3'][0, 0])
    assert np.array_equal(G.synthesis.b16.conv1.noise_const.numpy(), syn['noise4'][0, 0])


def test_every_generator_variable_lands_in_its_parameter(tmp_path):
    """Explicit invariants for each TF variable: transpose, flip, reshape, +1 on style biases."""
    path, (top, mapping, syn, _) = _write(tmp_path)
    G = load_network_pickle(path, keys=['G'])['G']
    state = {k: v.numpy() for k, v in G.state_dict().items()}
    expect = {'mapping.w_avg': top['dlatent_avg'], 'synthesis.b4.const': syn['4x4/Const/const'][0]}
    for i in range(NMAP):
        expect[f'mapping.fc{i}.weight'] = mapping[f'Dense{i}/weight'].T
        expect[f'mapping.fc{i}.bias'] = mapping[f'Dense{i}/bias']
    for res in (4, 8, 16):
        layers = [('conv1', '4x4/Conv')] if res == 4 else [('conv0', f'{res}x{res}/Conv0_up'),
                                                          ('conv1', f'{res}x{res}/Conv1')]
        layers.append(('torgb', f'{res}x{res}/ToRGB'))
        for ours, tf in layers:
            w = syn[f'{tf}/weight']                               # [kh, kw, in, out]
            if ours == 'conv0':
                w = w[::-1, ::-1]                                 # Transposed conv of the flipped kernel in TF.
            expect[f'synthesis.b{res}.{ours}.weight'] = np.transpose(w, (3, 2, 0, 1))
            expect[f'synthesis.b{res}.{ours}.bias'] = syn[f'{tf}/bias']
            expect[f'synthesis.b{res}.{ours}.affine.weight'] = syn[f'{tf}/mod_weight'].T
            expect[f'synthesis.b{res}.{ours}.affine.bias'] = syn[f'{tf}/mod_bias'] + 1
            if ours != 'torgb':
                expect[f'synthesis.b{res}.{ours}.noise_strength'] = syn[f'{tf}/noise_strength']
    expect['synthesis.b4.conv1.noise_const'] = syn['noise0'][0, 0]
    for k, v in expect.items():
        assert state[k].shape == v.shape and np.array_equal(state[k], v), k
    # Everything else is a fixed resample filter or a noise image checked above.
    rest = set(state) - set(expect)
    assert all(k.endswith('resample_filter') or k.endswith('noise_const') for k in rest)
    # One spot value by hand: out channel 2, in channel 1, kernel row 0, column 2 of 8x8 conv0.
    assert state['synthesis.b8.conv0.weight'][2, 1, 0, 2] == syn['8x8/Conv0_up/weight'][2, 0, 1, 2]


def test_every_discriminator_variable_lands_in_its_parameter(tmp_path):
    path, (_, _, _, dv) = _write(tmp_path)
    D = load_network_pickle(path, keys=['D'])['D']
    state = {k: v.numpy() for k, v in D.state_dict().items()}
    conv = lambda w: np.transpose(w, (3, 2, 0, 1))  # noqa: E731
    expect = {f'b{RES}.fromrgb.weight': conv(dv[f'{RES}x{RES}/FromRGB/weight']),
              f'b{RES}.fromrgb.bias': dv[f'{RES}x{RES}/FromRGB/bias'],
              'b4.conv.weight': conv(dv['4x4/Conv/weight']), 'b4.conv.bias': dv['4x4/Conv/bias'],
              'b4.fc.weight': dv['4x4/Dense0/weight'].T, 'b4.fc.bias': dv['4x4/Dense0/bias'],
              'b4.out.weight': dv['Output/weight'].T, 'b4.out.bias': dv['Output/bias']}
    for res in (16, 8):
        p = f'{res}x{res}'
        expect.update({f'b{res}.conv0.weight': conv(dv[f'{p}/Conv0/weight']), f'b{res}.conv0.bias': dv[f'{p}/Conv0/bias'],
                       f'b{res}.conv1.weight': conv(dv[f'{p}/Conv1_down/weight']),
                       f'b{res}.conv1.bias': dv[f'{p}/Conv1_down/bias'],
                       f'b{res}.skip.weight': conv(dv[f'{p}/Skip/weight'])})
    for k, v in expect.items():
        assert state[k].shape == v.shape and np.array_equal(state[k], v), k
    assert all(k.endswith('resample_filter') for k in set(state) - set(expect))
    assert D.b4.mbstd.group_size == 2 if hasattr(D.b4, 'mbstd') else True
    logits = D(torch.randn(4, 3, RES, RES), None)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()


def test_static_kwargs_map_onto_constructor_arguments():
    rec = tf_pickle.TFRecord('G', 4, 'G_main', dict(G_KWARGS, conv_clamp=256, num_fp16_res=2, architecture='resnet',
                                                    mapping_lrmul=0.1, resample_kernel=[1, 2, 1],
                                                    nonlinearity='relu', w_avg_beta=0.99), {}, {})
    kw = tf_pickle.generator_kwargs(rec, 'G')
    assert kw['synthesis_kwargs'] == dict(channel_base=64, channel_max=16, num_fp16_res=2, conv_clamp=256.0,
                                          architecture='resnet', resample_filter=[1, 2, 1], use_noise=True,
                                          activation='relu')
    assert kw['mapping_kwargs']['lr_multiplier'] == 0.1 and kw['mapping_kwargs']['w_avg_beta'] == 0.99
    assert (kw['z_dim'], kw['w_dim'], kw['img_resolution']) == (ZDIM, WDIM, RES)
    # The TF defaults where a key is absent: 1024x1024, fmap_base 16384 (channel_base 32768), skip.
    kw = tf_pickle.generator_kwargs(tf_pickle.TFRecord('G', 4, 'G_main', {}, {}, {}), 'G')
    assert (kw['img_resolution'], kw['synthesis_kwargs']['channel_base'], kw['synthesis_kwargs']['architecture'],
            kw['mapping_kwargs']['num_layers']) == (1024, 32768, 'skip', 8)
    dk = tf_pickle.discriminator_kwargs(tf_pickle.TFRecord('D', 4, 'D_stylegan2', dict(D_KWARGS, conv_clamp=256), {}, {}), 'D')
    assert (dk['architecture'], dk['channel_base'], dk['conv_clamp'], dk['epilogue_kwargs']['mbstd_group_size']) \
        == ('resnet', 64, 256.0, 2)
    with pytest.raises(tf_pickle.TFPickleError, match=r'unknown static kwarg.*fancy_option'):
        tf_pickle.generator_kwargs(tf_pickle.TFRecord('G', 4, 'G_main', dict(fancy_option=1), {}, {}), 'G')
    with pytest.raises(tf_pickle.TFPickleError, match='fmap_decay'):
        tf_pickle.discriminator_kwargs(tf_pickle.TFRecord('D', 4, 'D_stylegan2', dict(fmap_decay=0.5), {}, {}), 'D')


def test_pickle_protocols_0_and_2_read_the_same(tmp_path):
    a, _ = _write(tmp_path, 'p3.pkl', protocol=3)
    b, _ = _write(tmp_path, 'p0.pkl', protocol=0)
    c, _ = _write(tmp_path, 'p2.pkl', protocol=2)
    sa = load_network_pickle(a)['G_ema'].state_dict()
    for other in (b, c):
        sb = load_network_pickle(other)['G_ema'].state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_convert_command_and_reload(tmp_path):
    path, (_, mapping, _, _) = _write(tmp_path)
    out = str(tmp_path / 'converted.pkl')
    from click.testing import CliRunner
    res = CliRunner().invoke(netfile._cli(), ['convert', path, out])
    assert res.exit_code == 0, res.output
    data = load_network_pickle(out)
    assert data.format == 'netfile' and set(data) == {'G', 'D', 'G_ema'}
    assert np.array_equal(data['G_ema'].mapping.fc0.weight.numpy(), mapping['Dense0/weight'].T)


def test_load_network_reads_tf_pickles_through_urls(tmp_path):
    path, _ = _write(tmp_path)
    data = netfile.load_network('file://' + os.path.abspath(path), keys=['G_ema'])
    assert set(data) == {'G_ema'}


# ---------------------------------------------------------------------------------------
# Refused files.

def test_shape_disagreement_is_a_clear_error(tmp_path):
    path, _ = _write(tmp_path, g_kwargs=dict(fmap_base=64))  # Stored channels are for fmap_base 32.
    with pytest.raises(NetworkFileError, match=r'variable synthesis/8x8/Conv0_up/weight has shape \(3, 3, 16, 8\), which does not give the shape \(16, 16, 3, 3\)'):
        load_network_pickle(path, keys=['G'])


def test_leftover_and_missing_variables_are_errors(tmp_path):
    rng = np.random.default_rng(0)
    top, mapping, syn = _tf_generator_vars(rng)
    extra = dict(syn, **{'32x32/Conv1/weight': np.zeros((3, 3, 4, 4), np.float32)})
    path, _ = _write(tmp_path, 'extra.pkl', g_vars=(top, mapping, extra))
    with pytest.raises(NetworkFileError, match=r'no counterpart in our network: .*32x32/Conv1/weight'):
        load_network_pickle(path, keys=['G'])
    missing = {k: v for k, v in syn.items() if k != 'noise3'}
    path, _ = _write(tmp_path, 'missing.pkl', g_vars=(top, mapping, missing))
    with pytest.raises(NetworkFileError, match=r'variable synthesis/noise3 .*missing'):
        load_network_pickle(path, keys=['G'])


def test_labelconcat_generator_is_refused_with_a_reason(tmp_path):
    rng = np.random.default_rng(0)
    top, mapping, syn = _tf_generator_vars(rng)
    mapping = dict(mapping, **{'LabelConcat/weight': np.zeros((10, ZDIM), np.float32)})
    path, _ = _write(tmp_path, g_kwargs=dict(label_size=10), g_vars=(top, mapping, syn))
    with pytest.raises(NetworkFileError, match='LabelConcat'):
        load_network_pickle(path, keys=['G'])


def _raw_network_pickle(state_opcodes: bytes) -> bytes:
    """Protocol-2 pickle of one Network whose state dict is given as pickle opcodes."""
    return (b'\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81' + state_opcodes + b'b.')


def test_state_with_a_foreign_object_is_refused():
    # state = {'version': 4, 'x': os.system} spelled in opcodes.
    blob = _raw_network_pickle(b'}(X\x07\x00\x00\x00versionK\x04X\x01\x00\x00\x00xcos\nsystem\nu')
    with pytest.raises(UnsafeNetworkFileError, match=r'global os\.system'):
        load_network_pickle(io.BytesIO(blob))


def test_state_with_code_or_a_lambda_is_refused():
    for glob in (b'cbuiltins\neval\n', b'cbuiltins\ncompile\n', b'ctypes\nCodeType\n', b'ctypes\nFunctionType\n',
                 b'c__main__\n<lambda>\n'):
        blob = _raw_network_pickle(b'}(X\x10\x00\x00\x00build_module_src' + glob + b'u')
        with pytest.raises(UnsafeNetworkFileError, match='global'):
            load_network_pickle(io.BytesIO(blob))


def test_state_that_is_not_a_dict_and_double_build_are_refused():
    with pytest.raises(UnsafeNetworkFileError, match='must be a dict'):
        load_network_pickle(io.BytesIO(_raw_network_pickle(b'X\x03\x00\x00\x00abc')))
    # A second BUILD on the same Network (replace the checked state afterwards).
    blob = b'\x80\x02cdnnlib.tflib.network\nNetwork\n)\x81}b}b.'
    with pytest.raises(UnsafeNetworkFileError, match='after it was built'):
        load_network_pickle(io.BytesIO(blob))


def test_build_module_src_must_be_text_and_is_never_run(tmp_path):
    marker = tmp_path / 'ran'
    with _tf_classes() as Network:
        nets, _ = _tf_nets(Network)
        for net in nets:
            net._state['build_module_src'] = f'open({str(marker)!r}, "w").write("x")\nimport os\nos._exit(3)\n'
        blob = pickle.dumps(nets, protocol=3)
        data = load_network_pickle(io.BytesIO(blob))
        assert set(data) == {'G', 'D', 'G_ema'} and not marker.exists()
        nets[0]._state['build_module_src'] = b'bytes, not text'
        blob = pickle.dumps(nets, protocol=3)
    with pytest.raises(UnsafeNetworkFileError, match='build_module_src is a bytes'):
        load_network_pickle(io.BytesIO(blob))


def test_non_plain_values_in_state_are_refused(tmp_path):
    with _tf_classes() as Network:
        nets, _ = _tf_nets(Network)
        nets[0]._state['static_kwargs']['x'] = torch.zeros(2)   # A tensor among the kwargs.
        blob = pickle.dumps(nets, protocol=3)
    with pytest.raises(UnsafeNetworkFileError, match=r'static_kwargs.*Tensor'):
        load_network_pickle(io.BytesIO(blob), keys=['G'])
    with _tf_classes() as Network:
        nets, _ = _tf_nets(Network)
        nets[1]._state['variables'].append(('Output/extra', 'not an array'))
        blob = pickle.dumps(nets, protocol=3)
    with pytest.raises(UnsafeNetworkFileError, match=r'Output/extra.*not a numeric array'):
        load_network_pickle(io.BytesIO(blob), keys=['D'])
    with _tf_classes() as Network:
        nets, _ = _tf_nets(Network)
        nets[1]._state['unexpected_entry'] = 1
        blob = pickle.dumps(nets, protocol=3)
    with pytest.raises(UnsafeNetworkFileError, match='unknown entries'):
        load_network_pickle(io.BytesIO(blob), keys=['D'])


def test_oversized_arrays_are_refused(tmp_path):
    path, _ = _write(tmp_path)
    with pytest.raises(UnsafeNetworkFileError, match='max_tensor_bytes'):
        load_network_pickle(path, limits=LoadLimits(max_tensor_bytes=20_000))
    # An array header that declares far more data than it carries.
    blob = pickle.dumps(np.zeros(4, np.float32), protocol=2)
    big = blob.replace(b'K\x04\x85', b'J\x00\x00\x00\x40\x85')  # Shape (4,) -> (2**30,).
    assert big != blob
    with pytest.raises(UnsafeNetworkFileError, match='needs 4294967296 bytes'):
        load_network_pickle(io.BytesIO(big))


def test_old_version_and_unknown_build_function_are_refused(tmp_path):
    with _tf_classes() as Network:
        nets, _ = _tf_nets(Network)
        nets[0]._state['version'] = 3
        nets[1]._state['build_func_name'] = 'training.networks_stylegan.D_basic'
        blob = pickle.dumps(nets, protocol=3)
    with pytest.raises(NetworkFileError, match='StyleGAN1'):
        load_network_pickle(io.BytesIO(blob), keys=['G'])
    with pytest.raises(NetworkFileError, match=r"built by 'D_basic'.*not supported"):
        load_network_pickle(io.BytesIO(blob), keys=['D'])


def test_whole_synthesis_matches_numpy_forward_of_the_tf_graph(tmp_path):
    """Up-sampling convolutions (flipped kernels), skip outputs and per-layer ws: the image of
    the rebuilt G equals an independent NumPy evaluation of the TF synthesis graph."""
    path, (_, _, syn, _) = _write(tmp_path)
    G = load_network_pickle(path, keys=['G_ema'])['G_ema']
    ws = np.random.default_rng(11).standard_normal((2, G.num_ws, WDIM))
    expect = _np_synthesis(ws, syn)
    got = G.synthesis(torch.from_numpy(ws).float(), noise_mode='const').double().numpy()
    assert got.shape == expect.shape == (2, 3, RES, RES)
    scale = np.abs(expect).max()
    np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4 * scale)


def test_generate_reads_a_tf_pickle_directly(tmp_path):
    """generate.py --network takes the TF file as it is; the image is the rebuilt G_ema's."""
    path, _ = _write(tmp_path)
    from click.testing import CliRunner
    import generate
    import PIL.Image
    out = tmp_path / 'out'
    res = CliRunner().invoke(generate.main, ['--network', path, '--seeds', '3', '--outdir', str(out)])
    assert res.exit_code == 0, res.output
    files = sorted(os.listdir(out))
    assert len(files) == 1 and files[0].endswith('.png')
    img = np.array(PIL.Image.open(out / files[0]))
    assert img.shape == (RES, RES, 3)
    G = load_network_pickle(path, keys=['G_ema'])['G_ema']
    z = torch.from_numpy(np.random.RandomState(3).randn(1, ZDIM))
    ref = G(z.float(), torch.zeros(1, 0), noise_mode='const')
    ref = (ref * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert np.abs(img.astype(int) - ref.astype(int)).max() <= 1


def test_cyclic_components_are_refused(tmp_path):
    with _tf_classes() as Network:
        nets, _ = _tf_nets(Network)
        nets[0]._state['components']['synthesis']._state['components'] = {'loop': nets[0]}
        blob = pickle.dumps(nets, protocol=3)
    with pytest.raises(UnsafeNetworkFileError, match='nested more than 8 levels'):
        load_network_pickle(io.BytesIO(blob), keys=['G'])
    # The other entries of the same file still load.
    assert set(load_network_pickle(io.BytesIO(blob), keys=['D', 'G_ema'])) == {'D', 'G_ema'}


def test_orig_architecture_generator(tmp_path):
    """architecture='orig': only the last resolution has a ToRGB layer, in TF and here."""
    rng = np.random.default_rng(0)
    top, mapping, syn = _tf_generator_vars(rng)
    syn = {k: v for k, v in syn.items() if not (k.startswith(('4x4/ToRGB', '8x8/ToRGB')))}
    path, _ = _write(tmp_path, g_kwargs=dict(architecture='orig'), g_vars=(top, mapping, syn))
    G = load_network_pickle(path, keys=['G_ema'])['G_ema']
    assert G.synthesis.b16.architecture == 'orig' and not hasattr(G.synthesis.b8, 'torgb')
    assert np.array_equal(G.synthesis.b16.torgb.weight.numpy(), syn['16x16/ToRGB/weight'].transpose(3, 2, 0, 1))
    # A skip-architecture file with the lower ToRGBs removed is inconsistent: refused.
    path, _ = _write(tmp_path, 'bad.pkl', g_vars=(top, mapping, syn))
    with pytest.raises(NetworkFileError, match=r'synthesis/4x4/ToRGB/weight .*missing'):
        load_network_pickle(path, keys=['G'])
