"""ADA pipeline: shapes, identity at p = 0, differentiability (incl. R1 through it), per-transform
statistics, resampling quality, the filter bank, the augment stage and network files."""

import io
import math
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from torch_utils import netfile
from training.augment import ada, presets, stage
from training.augment.ada import AugmentPipe


def smooth_images(n=2, c=3, res=16):
    """Smooth test images (low frequencies only), [n, c, res, res]."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing='ij')
    chans = [torch.sin(2 * xx + yy), xx * yy, torch.cos(3 * yy - xx)]
    return torch.stack(chans[:c])[None].repeat(n, 1, 1, 1)


def pipe_with(p=1.0, **kwargs):
    return AugmentPipe(**kwargs, p=p)


# ---------------------------------------------------------------------------------------
# Presets.

@pytest.mark.parametrize('preset', sorted(presets.ADA_PRESETS))
def test_preset_shapes_identity_and_change(preset):
    for dtype, channels in ((torch.float32, 3), (torch.float64, 1)):
        x = torch.randn(6, channels, 16, 16, dtype=dtype)
        pipe = AugmentPipe(**presets.ADA_PRESETS[preset])
        # p = 0: exactly the identity.
        assert torch.equal(pipe(x), x)
        pipe.p.fill_(1)
        y = pipe(x)
        assert y.shape == x.shape and y.dtype == dtype
        assert torch.isfinite(y).all()
        # p = 1 changes the batch (every group fires with probability >= 1/2 per sample).
        assert float((y - x).abs().mean()) > 1e-3


def test_preset_table_and_kwargs():
    assert set(presets.ADA_PRESETS) == {'blit', 'geom', 'color', 'filter', 'noise', 'cutout',
                                        'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc'}
    assert presets.ADA_PRESETS['bgc'] == dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
                                              xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1,
                                              saturation=1)
    kw = presets.ada_kwargs('bgcfnc', p=0.2)
    assert kw['class_name'] == 'training.augment.ada.AugmentPipe' and kw['cutout'] == 1 and kw['p'] == 0.2
    with pytest.raises(ValueError, match="Unknown ADA preset 'bgx'"):
        presets.ada_kwargs('bgx')


def test_bad_arguments():
    with pytest.raises(ValueError, match='xflip must be a finite number >= 0'):
        AugmentPipe(xflip=-1)
    with pytest.raises(ValueError, match='imgfilter_bands must be a list of 4'):
        AugmentPipe(imgfilter_bands=[1, 1])
    with pytest.raises(ValueError, match='colour transforms need 1 or 3 channels, got 2'):
        pipe_with(brightness=1)(torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match='4-D tensor'):
        pipe_with(xflip=1)(torch.zeros(2, 8, 8))


# ---------------------------------------------------------------------------------------
# Gradients.

def test_gradients_reach_the_input_for_every_group():
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    pipe = AugmentPipe(**presets.ADA_PRESETS['bgcfnc'], p=1)
    w = torch.randn(4, 3, 16, 16)
    (pipe(x) * w).sum().backward()
    assert torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


def test_r1_second_order_gradient_through_bgc():
    """R1: gradient of D(aug(x)) w.r.t. x, squared, differentiated w.r.t. D's parameters."""
    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Softplus(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 16 * 16, 1))
    pipe = AugmentPipe(**presets.ADA_PRESETS['bgc'], p=1)
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    logits = D(pipe(x))
    (grad,) = torch.autograd.grad(logits.sum(), [x], create_graph=True)
    penalty = grad.square().sum(dim=[1, 2, 3]).mean()
    penalty.backward()
    # Every parameter except the output bias (which R1 does not depend on) gets a gradient.
    grads = [D[0].weight.grad, D[0].bias.grad, D[3].weight.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_second_order_gradients_match_numerical():
    """gradcheck and gradgradcheck of every group in float64, random draws fixed by reseeding
    (at p = 1 arbitrary rotation always fires, so the resampling path is covered)."""
    pipe = AugmentPipe(**presets.ADA_PRESETS['bgcfnc'], p=1).double()

    def fn(x):
        torch.manual_seed(3)
        return pipe(x)

    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-5)
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(fn, (x,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Per-transform behaviour and statistics.

def _fraction_equal(y, ref):
    return float((y == ref).flatten(1).all(dim=1).double().mean())


def test_xflip_statistics():
    """An x-flip that fires picks flip / no flip at random (so p = 1 is the uniform
    distribution over both, as non-leaking augmentation needs): P(flip) = p / 2."""
    torch.manual_seed(1)
    x = torch.randn(4000, 1, 4, 4)
    for p, expected in ((1.0, 0.5), (0.5, 0.25)):
        y = pipe_with(p, xflip=1)(x)
        flipped = _fraction_equal(y, x.flip(3))
        same = _fraction_equal(y, x)
        assert same + flipped == pytest.approx(1.0)  # blits are pixel-exact
        assert abs(flipped - expected) < 4 * math.sqrt(expected * (1 - expected) / len(x))


def test_rotate90_and_integer_translation_are_exact_pixel_maps():
    torch.manual_seed(2)
    x = torch.randn(2000, 1, 8, 8)
    y = pipe_with(1, rotate90=1)(x)
    fractions = [_fraction_equal(y, torch.rot90(x, k, dims=(2, 3))) for k in range(4)]
    assert sum(fractions) == pytest.approx(1.0)
    # P(k) = 1/4 + 3/4 * 1/4 for k = 0 (not firing or drawing 0), else 3/16... at p = 1: 1/4 each.
    assert all(abs(f - 0.25) < 0.04 for f in fractions)

    # Integer translation: pixels move by whole pixels with mirrored borders (|t| <= 0.125 * 8 = 1).
    ramp = torch.arange(8.0).reshape(1, 1, 1, 8).repeat(500, 1, 8, 1)
    y = pipe_with(1, xint=1)(ramp)
    shifts = (y[:, 0, 0, 3] - ramp[:, 0, 0, 3])
    assert set(shifts.tolist()) <= {-1.0, 0.0, 1.0} and len(set(shifts.tolist())) == 3
    mirrored_left = ramp[0, 0, 0].clone()
    mirrored_left[1:] = ramp[0, 0, 0, :-1]
    mirrored_left[0] = 1.0  # reflect: pixel -1 reads pixel 1
    assert any(torch.equal(row, mirrored_left) for row in y[:, 0, 0])


def test_brightness_statistics():
    torch.manual_seed(3)
    x = torch.randn(4000, 3, 2, 2)
    y = pipe_with(1, brightness=1, brightness_std=0.2)(x)
    offset = (y - x).mean(dim=[1, 2, 3])
    # A constant offset per image, N(0, 0.2^2).
    assert torch.allclose(y - x, offset[:, None, None, None].expand_as(x), atol=1e-5)
    assert abs(float(offset.mean())) < 0.02
    assert abs(float(offset.std()) - 0.2) < 0.01
    # At p = 0.5 half of the samples are untouched (bit for bit).
    y = pipe_with(0.5, brightness=1)(x)
    assert abs(_fraction_equal(y, x) - 0.5) < 0.04


def test_contrast_and_noise_statistics():
    torch.manual_seed(4)
    x = torch.randn(4000, 3, 4, 4)
    y = pipe_with(1, contrast=1, contrast_std=0.5)(x)
    log_scale = torch.log2((y.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)))
    assert abs(float(log_scale.mean())) < 0.03 and abs(float(log_scale.std()) - 0.5) < 0.02

    x = torch.zeros(4000, 1, 8, 8)
    y = pipe_with(1, noise=1, noise_std=0.1)(x)
    sigma = y.flatten(1).std(dim=1)
    # sigma ~ |N(0, 1)| * 0.1: mean 0.1 * sqrt(2 / pi).
    assert abs(float(sigma.mean()) - 0.1 * math.sqrt(2 / math.pi)) < 0.005


def test_hue_and_saturation_keep_luma_and_lumaflip_reflects_it():
    torch.manual_seed(5)
    x = torch.rand(500, 3, 4, 4) * 2 - 1
    for kwargs in (dict(hue=1), dict(saturation=1)):
        y = pipe_with(1, **kwargs)(x)
        assert torch.allclose(y.mean(dim=1), x.mean(dim=1), atol=1e-5)
        assert not torch.allclose(y, x, atol=1e-3)
    # Hue rotation keeps the chroma norm, luma flip negates luma and keeps chroma.
    y = pipe_with(1, hue=1)(x)
    chroma = lambda t: t - t.mean(dim=1, keepdim=True)
    assert torch.allclose(chroma(y).norm(dim=1), chroma(x).norm(dim=1), atol=1e-4)
    y = pipe_with(1, lumaflip=1)(x)
    flipped = (y.mean(dim=1) + x.mean(dim=1)).abs().flatten(1).amax(dim=1) < 1e-5
    assert abs(float(flipped.double().mean()) - 0.5) < 0.08
    assert torch.allclose(chroma(y), chroma(x), atol=1e-5)


def test_grey_images_take_the_mean_of_the_rgb_result():
    torch.manual_seed(6)
    grey = torch.rand(8, 1, 4, 4)
    pipe = pipe_with(1, brightness=1, contrast=1, hue=1, saturation=1, lumaflip=1)
    torch.manual_seed(7)
    out_grey = pipe(grey)
    torch.manual_seed(7)
    out_rgb = pipe(grey.repeat(1, 3, 1, 1))
    assert torch.allclose(out_grey, out_rgb.mean(dim=1, keepdim=True), atol=1e-5)


def test_cutout_area_and_clipping():
    torch.manual_seed(8)
    x = torch.ones(4000, 1, 32, 32)
    y = pipe_with(1, cutout=1, cutout_size=0.5)(x)
    zero = (y == 0).double().mean(dim=[1, 2, 3])
    # Side 0.5 with a uniform centre, clipped at the borders: expected overlap per axis
    # 0.5 - 2 * (0.25^2 / 2) = 0.4375, area 0.4375^2.
    assert abs(float(zero.mean()) - 0.4375 ** 2) < 0.005
    assert float(zero.max()) == pytest.approx(0.25) and float(zero.min()) < 0.1


def test_geometric_resampling_is_aligned_and_high_quality():
    """The general path (pad, 2x up, resample, 2x down) agrees with exact pixel maps and
    with the analytic shift of a smooth image."""
    x = smooth_images(2, 3, 32)
    pipe = AugmentPipe()
    rot = ada._rotate2d(torch.tensor([math.pi / 2, -math.pi / 2]))
    a, b = pipe._resample(x, rot), pipe._blit(x, rot)
    assert float((a - b)[:, :, 4:-4, 4:-4].abs().max()) < 2e-3
    # A fractional shift of a linear ramp shifts its values by exactly that amount.
    ramp = torch.arange(32.0).reshape(1, 1, 1, 32).repeat(1, 1, 32, 1) / 32
    shift = ada._translate2d(torch.tensor([-0.3]), torch.tensor([0.0]))  # inverse of +0.3 px
    out = pipe._resample(ramp, shift)
    assert torch.allclose(out[:, :, 4:-4, 4:-4], (ramp - 0.3 / 32)[:, :, 4:-4, 4:-4], atol=1e-4)
    # A small rotation does not move the centre of mass of a centred blob.
    yy, xx = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing='ij')
    blob = torch.exp(-(xx ** 2 + yy ** 2) / 20)[None, None]
    out = pipe._resample(blob, ada._rotate2d(torch.tensor([0.3])))
    com = [float((out[0, 0] * g).sum() / out[0, 0].sum()) for g in (xx, yy)]
    assert max(abs(c) for c in com) < 1e-3


def test_geometric_transforms_on_small_images():
    """Margins larger than the image are mirrored repeatedly; the filter bank (43 taps) also
    works on 8x8 images."""
    torch.manual_seed(9)
    x = torch.randn(8, 3, 8, 8)
    y = AugmentPipe(**presets.ADA_PRESETS['bgcf'], p=1, scale_std=1)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_filter_bank():
    bank = ada.octave_filter_bank(ada.SYMLETS['sym2'])
    assert bank.shape == (4, 43)
    impulse = np.zeros(43)
    impulse[21] = 1
    assert np.allclose(bank.sum(axis=0), impulse, atol=1e-9)     # bands add up to the identity
    assert np.allclose(bank, bank[:, ::-1], atol=1e-12)           # zero phase
    # Each band passes its own octave: the frequency response peaks are ordered low to high.
    response = np.abs(np.fft.rfft(bank, n=512, axis=1))
    peaks = response.argmax(axis=1)
    assert list(peaks) == sorted(peaks) and peaks[0] == 0 and peaks[3] > 128
    # With unit gains the filter group leaves images unchanged (up to rounding).
    x = torch.randn(2, 3, 16, 16)
    y = pipe_with(1, imgfilter=1, imgfilter_std=0)(x)
    assert torch.allclose(y, x, atol=1e-5)


def test_filter_changes_band_energy():
    torch.manual_seed(10)
    x = torch.randn(200, 1, 32, 32)
    y = pipe_with(1, imgfilter=1, imgfilter_bands=[0, 0, 0, 1], imgfilter_std=1)(x)
    hf = lambda t: (t[..., 1:] - t[..., :-1]).square().mean(dim=[1, 2, 3])
    ratio = torch.log2(hf(y) / hf(x))
    assert float(ratio.std()) > 0.5  # the highest band is amplified or attenuated per sample


def test_random_draws_use_the_global_rng():
    x = torch.randn(4, 3, 16, 16)
    pipe = AugmentPipe(**presets.ADA_PRESETS['bgcfnc'], p=0.7)
    torch.manual_seed(11)
    a = pipe(x)
    torch.manual_seed(11)
    b = pipe(x)
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------
# Stage and network files.

def test_stage_chains_children_and_exposes_p():
    s = stage.AugmentStage([presets.ada_kwargs('bgc', p=0.25),
                            dict(class_name='training.augment.diffaugment.DiffAugment', policy='cutout')])
    assert s.names() == ['ada', 'diffaug'] and len(s) == 2
    assert list(s.p_modules()) == ['ada'] and float(s.get('ada').p) == 0.25
    assert s.get_submodule('ada') is s.get('ada') and [m.name for m in s] == ['ada', 'diffaug']
    assert sorted(s.state_dict()) == ['ada.Hz_fbank', 'ada.Hz_geom', 'ada.p']
    x = torch.randn(3, 3, 16, 16)
    torch.manual_seed(12)
    y = s(x)
    torch.manual_seed(12)
    assert torch.equal(y, s.get('diffaug')(s.get('ada')(x)))
    assert torch.equal(stage.AugmentStage([])(x), x)
    with pytest.raises(KeyError, match="no augmentation 'apa'"):
        s.get('apa')
    with pytest.raises(ValueError, match="name 'ada' is already taken"):
        stage.AugmentStage([presets.ada_kwargs('bgc'), presets.ada_kwargs('blit')])
    two = stage.AugmentStage([presets.ada_kwargs('bgc'), presets.ada_kwargs('blit', name='ada2')])
    assert two.names() == ['ada', 'ada2']


def test_stage_round_trips_through_network_files():
    s = stage.AugmentStage([presets.ada_kwargs('bgcfnc', p=0.375),
                            dict(class_name='training.augment.diffaugment.DiffAugment')])
    buf = io.BytesIO()
    netfile.save_network_pickle(buf, dict(augment_pipe=s))
    buf.seek(0)
    out = netfile.load_network_pickle(buf)['augment_pipe']
    assert type(out) is stage.AugmentStage and out.names() == ['ada', 'diffaug']
    assert float(out.get('ada').p) == 0.375 and out.get('ada').cutout == 1
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(13)
    a = s(x)
    torch.manual_seed(13)
    assert torch.equal(out(x), a)


def _legacy_blob(obj):
    """Pickles `obj` the way stylegan2-ada-pytorch stores persistent objects (class name,
    embedded source, the instance __dict__ with _init_args/_init_kwargs and tensors)."""
    module = types.ModuleType('torch_utils.persistence')

    def _reconstruct_persistent_obj(meta):
        raise AssertionError('not called when writing')

    _reconstruct_persistent_obj.__module__ = 'torch_utils.persistence'
    _reconstruct_persistent_obj.__qualname__ = '_reconstruct_persistent_obj'
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class Pickler(pickle.Pickler):
        def reducer_override(self, o):
            if isinstance(o, torch.nn.Module):
                state = dict(vars(o))
                state.pop('name', None)
                meta = dict(type='class', version=4, module_src='raise RuntimeError("executed")',
                            class_name=type(o).__name__, state=state)
                return _reconstruct_persistent_obj, (meta,)
            return NotImplemented

    saved = sys.modules.get('torch_utils.persistence')
    sys.modules['torch_utils.persistence'] = module
    try:
        buf = io.BytesIO()
        Pickler(buf, protocol=4).dump(dict(augment_pipe=obj))
    finally:
        if saved is None:
            del sys.modules['torch_utils.persistence']
        else:
            sys.modules['torch_utils.persistence'] = saved
    return buf.getvalue()


def test_legacy_augment_pipe_loads_strictly_and_copies_into_a_stage():
    # The established pipeline's constructor call for bgc, and its buffers.
    legacy = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
                         brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
    object.__setattr__(legacy, '_init_kwargs', dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1,
                                                    xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1,
                                                    saturation=1))
    legacy.p.fill_(0.4375)
    assert {k: tuple(v.shape) for k, v in legacy.state_dict().items()} == \
        {'p': (), 'Hz_geom': (12,), 'Hz_fbank': (4, 43)}
    out = netfile.load_network_pickle(io.BytesIO(_legacy_blob(legacy)))
    pipe = out['augment_pipe']
    assert type(pipe) is AugmentPipe and float(pipe.p) == 0.4375 and pipe.saturation == 1
    assert netfile.legacy_classes()['AugmentPipe'] == 'training.augment.ada.AugmentPipe'

    s = stage.AugmentStage([presets.ada_kwargs('bgc')])
    assert s.copy_state_from(pipe) == ['ada'] and float(s.get('ada').p) == 0.4375


@pytest.mark.gpu
def test_cuda_matches_cpu_and_supports_r1():
    """The CUDA path (upfirdn2d kernels where built) resamples like the CPU reference, and R1
    through bgcfnc works on the GPU."""
    dev = torch.device('cuda')
    x = smooth_images(2, 3, 32)
    pipe = AugmentPipe(**presets.ADA_PRESETS['bgcfnc'], p=1)
    G_inv = ada._rotate2d(torch.tensor([0.4, -1.1])) @ ada._scale2d(torch.tensor([1.2, 0.9]), torch.tensor([1.1, 0.8]))
    ref = pipe._resample(x, G_inv)
    out = pipe.to(dev)._resample(x.to(dev), G_inv.to(dev))
    assert torch.allclose(out.cpu(), ref, atol=1e-4)

    D = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Softplus(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 32 * 32, 1)).to(dev)
    reals = torch.randn(4, 3, 32, 32, device=dev, requires_grad=True)
    y = pipe(reals)
    assert y.device == reals.device and y.shape == reals.shape
    (grad,) = torch.autograd.grad(D(y).sum(), [reals], create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(D[0].weight.grad).all() and float(D[0].weight.grad.abs().sum()) > 0
