"""Vision-aided discriminator: backbones (shapes, preprocessing, freezing, weights files),
losses against independent formulas, warm-up, gradient routing, augmentation and pickles.

The four real architectures run once each at batch 1 with random weights; everything else
uses a registered width-1/16 VGG16 at 32x32 input ('vgg16_tiny'), which costs milliseconds.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import netfile
from training.heads import backbones as B
from training.heads import vision_aided as V
from training.loss import StyleGAN2Loss
from training.training_loop import build_phases
import train_helpers

TINY = 'vgg16_tiny'


@pytest.fixture(autouse=True)
def tiny_backbone():
    """Registers a tiny VGG16 (no official weights) for the duration of a test."""
    B.register_backbone(TINY, B.VGG16Backbone, url=None, description='test only', width=1 / 16, resolution=32)
    yield
    B.BACKBONES.pop(TINY, None)


def tiny_head(**kwargs):
    kwargs.setdefault('backbones', TINY)
    kwargs.setdefault('weights', {TINY: 'random'})
    kwargs.setdefault('hidden', 8)
    kwargs.setdefault('aug', 'diffaug:translation')
    return V.VisionAidedHead(device='cpu', **kwargs)


# ---------------------------------------------------------------------------------------
# Backbones.

@pytest.mark.parametrize('name', ['vgg16', 'clip', 'dino', 'swin'])
def test_backbone_shapes_frozen_and_documented(name):
    torch.manual_seed(0)
    backbone = B.build_backbone(name, weights='random')
    backbone.train()   # must stay in eval mode
    assert not backbone.training and not any(m.training for m in backbone.modules())
    assert not any(p.requires_grad for p in backbone.parameters())
    x = torch.rand(1, 3, 24, 24) * 2 - 1
    with torch.no_grad():
        levels = backbone(x)
    shapes = [tuple(t.shape[1:]) for t in levels]
    assert shapes == [tuple(s) for s in B.get_spec(name).feature_shapes()]
    documented = {'vgg16': [(512, 28, 28), (512, 14, 14)], 'clip': [(768, 7, 7), (768, 7, 7), (512,)],
                  'dino': [(768, 14, 14), (768, 14, 14), (768,)], 'swin': [(768, 7, 7)]}
    assert shapes == documented[name]
    assert all(torch.isfinite(t).all() for t in levels)
    # The levels are what they claim to be: the outputs of the named blocks, and the final
    # feature of the network's own forward pass.
    if name in ('clip', 'dino'):
        blocks = backbone.net.transformer.resblocks if name == 'clip' else backbone.net.blocks
        seen = []
        hooks = [blocks[i].register_forward_hook(lambda _m, _i, out: seen.append(out)) for i in (3, 7)]
        with torch.no_grad():
            pre = backbone.preprocess(x)
            final = backbone.net(pre) if name == 'clip' else backbone.net.forward_features(pre)[:, 0]
        for h in hooks:
            h.remove()
        for level, tokens in zip(levels[:2], seen):
            grid = level.shape[-1]
            expect = tokens[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
            assert torch.allclose(level, expect, atol=1e-5)
        assert torch.allclose(levels[-1], final, atol=1e-5)


def test_preprocessing_range_grey_area_resize_and_normalisation():
    backbone = B.build_backbone(TINY, weights='random')
    # [-1, 1] -> [0, 1], then the backbone's normalisation; grey becomes three equal channels.
    grey = torch.full([1, 1, 32, 32], 0.5)
    out = backbone.preprocess(grey)
    mean, std = torch.tensor(B.IMAGENET_MEAN), torch.tensor(B.IMAGENET_STD)
    assert out.shape == (1, 3, 32, 32)
    assert torch.allclose(out[0, :, 0, 0], (0.75 - mean) / std)
    # Area resize: 64 -> 32 is the mean of each 2x2 block.
    img = torch.rand(2, 3, 64, 64) * 2 - 1
    expect = ((F.avg_pool2d(img, 2) + 1) / 2 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    assert torch.allclose(backbone.preprocess(img), expect, atol=1e-6)
    clip_like = B.CLIPBackbone.__new__(B.CLIPBackbone)
    assert tuple(clip_like.mean) == B.CLIP_MEAN and tuple(clip_like.std) == B.CLIP_STD


def test_parse_backbones_and_weights():
    assert B.parse_backbones('clip+dino') == ['clip', 'dino']
    assert B.parse_backbones(' swin , vgg16 ') == ['swin', 'vgg16']
    with pytest.raises(KeyError, match='clip, dino, swin, vgg16'):
        B.parse_backbones('clip+resnet')
    with pytest.raises(ValueError, match='twice'):
        B.parse_backbones('clip+clip')
    assert B.parse_weights(['clip=a.pt', 'vgg16=random']) == {'clip': 'a.pt', 'vgg16': 'random'}
    for bad in (['clip'], ['=x'], ['foo=x'], ['clip=a', 'clip=b']):
        with pytest.raises((KeyError, ValueError)):
            B.parse_weights(bad)


def test_weights_from_local_files_torch_and_safetensors(tmp_path):
    torch.manual_seed(1)
    source = B.build_backbone(TINY, weights='random')
    state = {f'{k}': v for k, v in source.net.state_dict().items()}
    state['classifier.0.weight'] = torch.zeros(3, 3)   # torchvision files carry the classifier too
    pt = str(tmp_path / 'vgg.pth')
    torch.save(state, pt)
    from safetensors.torch import save_file
    st = str(tmp_path / 'vgg.safetensors')
    save_file({k: v.contiguous() for k, v in state.items()}, st)
    for path in (pt, st):
        torch.manual_seed(2)   # a different random init, overwritten by the file
        loaded = B.build_backbone(TINY, weights=path)
        for (k, a), b in zip(source.net.state_dict().items(), loaded.net.state_dict().values()):
            assert torch.equal(a, b), k
        assert not any(p.requires_grad for p in loaded.parameters())


def test_weights_errors_name_the_file_and_the_flag(tmp_path, monkeypatch):
    with pytest.raises(B.BackboneError, match=r'--cv-weights vgg16_tiny=.*nothing\.pt: no such file'):
        B.build_backbone(TINY, weights=str(tmp_path / 'nothing.pt'))
    with pytest.raises(B.BackboneError, match='no official weights location.*--cv-weights vgg16_tiny=PATH'):
        B.build_backbone(TINY)
    # Official download failing: the error names the URL, the flag and the cache folder.
    def fail(url, **_kwargs):
        raise dnnlib.util.DownloadError(f'cannot reach {url}')
    monkeypatch.setattr(dnnlib, 'open_url', fail)
    with pytest.raises(B.BackboneError) as info:
        B.build_backbone('vgg16')
    msg = str(info.value)
    assert 'https://download.pytorch.org/models/vgg16-397923af.pth' in msg
    assert '--cv-weights vgg16=PATH' in msg and 'downloads' in msg
    # A file for another architecture is refused, naming the file and the mismatch.
    wrong = str(tmp_path / 'wrong.pt')
    torch.save({'features.0.weight': torch.zeros(1, 1, 1, 1)}, wrong)
    with pytest.raises(B.BackboneError, match='wrong.pt does not fit.*(missing|size mismatch)'):
        B.build_backbone(TINY, weights=wrong)
    # Pickled objects are not executed: weights_only refuses them.
    evil = str(tmp_path / 'evil.pt')
    torch.save({'features.0.weight': torch.zeros(1), 'obj': dnnlib.EasyDict(a=1)}, evil)
    with pytest.raises(B.BackboneError, match='Cannot read backbone weights'):
        B.build_backbone(TINY, weights=evil)


def test_state_dict_conversions():
    t = torch.zeros(1)
    full_clip = {'visual.conv1.weight': t, 'visual.proj': t, 'token_embedding.weight': t, 'logit_scale': t}
    assert set(B.CLIPBackbone.convert_state_dict(None, full_clip)) == {'conv1.weight', 'proj'}
    assert set(B.CLIPBackbone.convert_state_dict(None, {'conv1.weight': t})) == {'conv1.weight'}
    dino = {'teacher': {'module.backbone.cls_token': t, 'module.head.mlp.0.weight': t}}
    assert set(B.DINOBackbone.convert_state_dict(None, dino)) == {'cls_token'}
    vgg = {'features.0.weight': t, 'classifier.0.weight': t}
    assert set(B.VGG16Backbone.convert_state_dict(None, vgg)) == {'features.0.weight'}


# ---------------------------------------------------------------------------------------
# Losses.

def bce(x, target):
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target), reduction='none')


@pytest.mark.parametrize('smooth', [False, True])
def test_sigmoid_losses_match_bce(smooth):
    torch.manual_seed(0)
    t = 0.8 if smooth else 1.0
    suffix = '_s' if smooth else ''
    vec, grid = torch.randn(5, 1) * 3, torch.randn(5, 1, 3, 3) * 3
    # Single level: the last level only, averaged over positions.
    for x in (vec, grid):
        assert torch.allclose(V.cv_loss('sigmoid' + suffix, [x], 'real'), bce(x, t).flatten(1).mean(1), atol=1e-6)
        assert torch.allclose(V.cv_loss('sigmoid' + suffix, [x], 'fake'), bce(x, 0.0).flatten(1).mean(1), atol=1e-6)
        assert torch.allclose(V.cv_loss('sigmoid' + suffix, [x], 'gen'), bce(x, t).flatten(1).mean(1), atol=1e-6)
    # Multilevel: per level averaged over space, summed over levels.
    expect = bce(grid, t).mean([1, 2, 3]) + bce(vec, t)[:, 0]
    assert torch.allclose(V.cv_loss('multilevel_sigmoid' + suffix, [grid, vec], 'real'), expect, atol=1e-6)
    # A value by hand: x = 0 gives log 2 for any target.
    zero = torch.zeros(1, 1)
    assert V.cv_loss('sigmoid' + suffix, [zero], 'real').item() == pytest.approx(np.log(2))


def test_hinge_losses_by_hand():
    x = torch.tensor([[-2.0], [0.5], [0.9], [3.0]])
    assert V.cv_loss('hinge', [x], 'real').tolist() == pytest.approx([3.0, 0.5, 0.1, 0.0])
    assert V.cv_loss('hinge', [x], 'fake').tolist() == pytest.approx([0.0, 1.5, 1.9, 4.0])
    assert V.cv_loss('hinge', [x], 'gen').tolist() == pytest.approx([2.0, -0.5, -0.9, -3.0])
    assert V.cv_loss('hinge_s', [x], 'real').tolist() == pytest.approx([2.8, 0.3, 0.0, 0.0])
    assert V.cv_loss('hinge_s', [x], 'fake').tolist() == pytest.approx([0.0, 1.5, 1.9, 4.0])
    assert V.cv_loss('hinge_s', [x], 'gen').tolist() == pytest.approx([2.8, 0.3, 0.0, 0.0])
    grid = torch.tensor([[[[0.0, 2.0], [-1.0, 1.0]]]])
    both = V.cv_loss('multilevel_hinge', [grid, x[:1]], 'real')
    assert both.tolist() == pytest.approx([(1 + 0 + 2 + 0) / 4 + 3.0])


def test_loss_names_and_levels():
    assert V.parse_loss('multilevel_hinge_s') == ('hinge', True, True)
    assert V.parse_loss('sigmoid') == ('sigmoid', False, False)
    with pytest.raises(ValueError, match='multilevel_sigmoid_s'):
        V.parse_loss('bce')
    single, multi = tiny_head(loss='sigmoid'), tiny_head(loss='multilevel_sigmoid')
    assert [len(m) for m in single.disc.heads.values()] == [1]
    assert [len(m) for m in multi.disc.heads.values()] == [2]
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    assert [t.shape for t in multi.logits(x, grad=False)[TINY]] == [(3, 1, 4, 4), (3, 1, 2, 2)]
    assert [t.shape for t in single.logits(x, grad=False)[TINY]] == [(3, 1, 2, 2)]


# ---------------------------------------------------------------------------------------
# The head in training.

def test_warmup_switches_the_loss_on():
    head = tiny_head(warmup_nimg=100)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    assert head.lam(99) == 0 and head.lam(100) == 1
    assert head.d_loss(kind='real', raw=x, cur_nimg=99) is None
    assert head.g_loss(raw=x, cur_nimg=99) is None
    assert head.d_loss(kind='real', raw=x, cur_nimg=100).shape == (2,)
    assert head.g_loss(raw=x, cur_nimg=100).shape == (2,)
    torch.manual_seed(7)
    weighted = tiny_head(warmup_nimg=0, weight=0.5, aug='diffaug:')
    torch.manual_seed(7)
    plain = tiny_head(warmup_nimg=0, aug='diffaug:')
    torch.manual_seed(3)
    a = weighted.d_loss(kind='fake', raw=x, cur_nimg=0)
    torch.manual_seed(3)
    b = plain.d_loss(kind='fake', raw=x, cur_nimg=0)
    assert torch.allclose(a, 0.5 * b)


def tiny_nets():
    from training.networks import Discriminator, Generator
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=1,
                  mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=1, channel_base=64, channel_max=8)
    return G.requires_grad_(False), D.requires_grad_(False)


def test_gradients_reach_G_and_heads_never_backbones():
    torch.manual_seed(0)
    G, D = tiny_nets()
    head = tiny_head(warmup_nimg=0, aug='ada')
    phases = build_phases(G, D, dict(class_name='torch.optim.Adam', lr=0.01), dict(class_name='torch.optim.Adam', lr=0.01),
                          None, None, [head])
    backbone = head.backbones[TINY]
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone_params = {id(p) for p in backbone.parameters()}
    # No optimizer sees a backbone parameter; the heads have their own Adam (betas 0, 0.99).
    for phase in phases:
        for opt in phase.opts:
            assert not backbone_params & {id(p) for g in opt.param_groups for p in g['params']}
    head_opt = [o for ph in phases for o, n in zip(ph.opts, ph.opt_names) if n == 'head_cv.disc']
    assert len(head_opt) == 1 and head_opt[0].param_groups[0]['betas'] == (0, 0.99)
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, heads=[head], r1_gamma=1.0, style_mixing_prob=0)
    reals, z = torch.rand(4, 1, 16, 16) * 2 - 1, torch.randn(4, 8)
    c = torch.zeros(4, 0)
    for phase in phases:
        for _name, module in phase.modules:
            module.requires_grad_(True)
        for opt in phase.opts:
            opt.zero_grad(set_to_none=True)
        terms = loss.accumulate_gradients(phase.name, reals, c, z, c, 1.0, cur_nimg=0)
        if phase.name == 'Gboth':
            # G learns through the frozen backbone: its vision-aided term alone moves G.
            assert 'Loss/cv/g_loss' in terms
            assert all(p.grad is None for p in head.disc.parameters())
            g_grads = torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])
            G.zero_grad(set_to_none=True)
            out = G(z, c)
            torch.autograd.backward(head.g_loss(raw=out, cur_nimg=0).mean())
            cv_only = torch.cat([p.grad.flatten() for p in G.parameters() if p.grad is not None])
            assert g_grads.abs().sum() > 0 and cv_only.abs().sum() > 0
        else:
            assert {'Loss/cv/d_loss_real', 'Loss/cv/d_loss_fake'} <= set(terms)
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.disc.parameters())
        assert all(p.grad is None for p in backbone.parameters())
        for opt in phase.opts:
            opt.step()
        for _name, module in phase.modules:
            module.requires_grad_(False)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_own_augmentation():
    stage = V.AugmentStage(V.augment_specs('ada'))
    assert stage.names() == ['ada', 'cutout'] and float(stage.get('ada').p) == 0
    assert V.augment_specs('diffaug:color,translation')[0]['policy'] == 'color,translation,cutout'
    assert V.augment_specs('diffaug:cutout,color')[0]['policy'] == 'cutout,color'
    assert V.augment_specs('diffaug:')[0]['policy'] == 'cutout'
    for bad in ('adaptive', 'diffaug:blur', 'color'):
        with pytest.raises(ValueError):
            V.augment_specs(bad)
    # Cutout is on even at p = 0: some pixels of every image are zeroed.
    head = tiny_head(aug='ada')
    x = torch.ones(4, 1, 16, 16)
    out = head.aug(x)
    assert all((out[i] == 0).any() for i in range(4))
    # The controller path of the training loop reaches the branch's own p.
    from training.training_loop import resolve_module_path
    assert resolve_module_path('cv.aug.ada', {'cv': head}) is head.aug.get('ada')


def test_real_sign_statistic_for_the_adaptive_p():
    from torch_utils import training_stats
    head = tiny_head()
    collector = training_stats.Collector(regex=V.SIGN_STAT)
    head.d_loss(kind='real', raw=torch.rand(3, 1, 16, 16), cur_nimg=0)
    collector.update()
    assert collector.num(V.SIGN_STAT) == 3 and -1 <= collector.mean(V.SIGN_STAT) <= 1


def test_state_pickle_and_device_moves(tmp_path):
    head = tiny_head()
    assert set(head.state_dict()) == {k for k in head.state_dict() if k.startswith(('disc.', 'aug.'))}
    assert not any(k.startswith('backbones') for k in head.state_dict())
    assert {id(p) for p in head.parameters()} == {id(p) for p in head.disc.parameters()}
    head.to('cpu', torch.float64)
    assert head.backbones[TINY].net.features[0].weight.dtype == torch.float64
    head.to(torch.float32)
    # Network pickles hold the trainable heads only, rebuilt without the backbone registry.
    path = str(tmp_path / 'net.pkl')
    netfile.save_network_pickle(path, dict(head.network_modules()))
    B.BACKBONES.pop(TINY)
    data = netfile.load_network_pickle(path)
    loaded = data[V.PICKLE_KEY]
    assert isinstance(loaded, V.CVDiscriminator)
    for (k, a), b in zip(head.disc.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    # Resume from a pickle: matching heads are taken, others are left fresh.
    B.register_backbone(TINY, B.VGG16Backbone, url=None, width=1 / 16, resolution=32)
    torch.manual_seed(5)
    other = tiny_head()
    logs = []
    other.resume_from_network(data, logs.append)
    assert torch.equal(other.disc.heads[TINY][0][0].weight, head.disc.heads[TINY][0][0].weight)
    fresh = tiny_head(loss='sigmoid')
    fresh.resume_from_network(data, logs.append)
    fresh.resume_from_network({}, logs.append)
    assert 'resumed' in logs[0] and 'starting fresh' in logs[1] and 'starting fresh' in logs[2]


def test_multiple_backbones_sum_their_losses():
    B.register_backbone('vgg16_tiny2', B.VGG16Backbone, url=None, width=1 / 32, resolution=32)
    try:
        head = tiny_head(backbones=f'{TINY}+vgg16_tiny2', weights={TINY: 'random', 'vgg16_tiny2': 'random'},
                         aug='diffaug:')
        x = torch.rand(2, 1, 16, 16) * 2 - 1
        torch.manual_seed(0)
        logits = head.logits(x, grad=False)
        assert set(logits) == {TINY, 'vgg16_tiny2'}
        expect = sum(V.cv_loss(head.loss_name, v, 'fake') for v in logits.values())
        torch.manual_seed(0)
        assert torch.allclose(head.d_loss(kind='fake', raw=x, cur_nimg=0), expect, atol=1e-6)
        with pytest.raises(B.BackboneError, match='--cv-weights names swin'):
            tiny_head(weights={TINY: 'random', 'swin': 'x'})
    finally:
        B.BACKBONES.pop('vgg16_tiny2', None)


# ---------------------------------------------------------------------------------------
# train.py end to end (in this process, so the test backbone is registered).

TRAIN_TINY = train_helpers.TINY
CV_TINY = [f'--cv={TINY}', f'--cv-weights={TINY}=random', '--cv-warmup=0']


@pytest.fixture(scope='module')
def blobs(tmp_path_factory):
    """A 16x16 grayscale zip of 32 soft blobs."""
    return train_helpers.write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'), seed=1)


def train(args):
    """Runs train.py in this process; returns the run directory."""
    train_helpers.run_ok(args)
    return train_helpers.newest_run_dir(args[args.index('--outdir') + 1])


def run_files(run_dir):
    import glob
    import json
    import os
    import train as train_cli
    state = torch.load(train_cli.find_training_state(run_dir), map_location='cpu', weights_only=True)
    pkl = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1]
    with open(os.path.join(run_dir, 'stats.jsonl'), encoding='utf-8') as f:
        stats = [json.loads(line) for line in f]
    return state, netfile.load_network_pickle(pkl), stats


def test_two_tick_train_run_with_cv(tmp_path, blobs):
    run_dir = train(['--outdir', tmp_path / 'runs', '--data', blobs] + TRAIN_TINY + CV_TINY)
    assert run_dir.endswith(f'-cv-{TINY}')
    state, net, stats = run_files(run_dir)
    assert state['progress']['cur_nimg'] == 16
    # Own optimizer, own adaptive p, heads in the state and the pickle; no backbone anywhere.
    assert 'head_cv.disc' in state['optimizers']
    assert [k for k in state['components'] if k.startswith('controller/')] == ['controller/apa', 'controller/cv']   # APA's and the branch's
    head_state = state['components']['loss_term/cv']
    assert 'aug.ada.p' in head_state and not any('backbone' in k or 'features' in k for k in head_state)
    assert isinstance(net[V.PICKLE_KEY], V.CVDiscriminator)
    fresh = tiny_head().disc   # another init: training moved the heads
    assert not torch.equal(net[V.PICKLE_KEY].heads[TINY][0][0].weight, fresh.heads[TINY][0][0].weight)
    last = stats[-1]
    for key in ('Loss/cv/g_loss', 'Loss/cv/d_loss_real', 'Loss/cv/d_loss_fake', V.SIGN_STAT, 'Progress/cv_p'):
        assert key in last and np.isfinite(last[key]['mean']), key


def test_two_tick_full_combination(tmp_path, blobs):
    """APA + ADA (--with-dataaug) + DiffAugment + InsGen + vision-aided heads together."""
    args = ['--outdir', tmp_path / 'runs', '--data', blobs, '--aug=apa', '--with-dataaug=1',
            '--diffaugment=color,translation,cutout', '--insgen=1', '--cv-aug=diffaug:color,translation']
    run_dir = train(args + TRAIN_TINY + CV_TINY)
    state, net, stats = run_files(run_dir)
    assert state['progress']['cur_nimg'] == 16
    assert {'head_cv.disc'} <= set(state['optimizers']) and len(state['optimizers']) >= 4
    assert V.PICKLE_KEY in net
    last = stats[-1]
    cv_keys = [k for k in last if k.startswith('Loss/cv/')]
    other_heads = [k for k in last if k.startswith('Loss/') and '/cv/' not in k and k.count('/') >= 2
                   and k.split('/')[1] not in ('G', 'D', 'scores', 'signs')]
    assert cv_keys and other_heads, sorted(last)
    assert all(np.isfinite(last[k]['mean']) for k in cv_keys + other_heads)


def test_resume_with_cv_continues_exactly(tmp_path, blobs):
    """2 ticks + resume for 2 more == 4 ticks in one go: G, D, the heads and the branch's p."""
    args = ['--data', blobs] + TRAIN_TINY + CV_TINY + ['--cv-aug=ada']
    base = train(['--outdir', tmp_path / 'base'] + args)
    longer = [a for a in args if not a.startswith('--kimg')] + ['--kimg=0.032']
    full = train(['--outdir', tmp_path / 'full'] + longer)
    resumed = train(['--outdir', tmp_path / 'part'] + longer + ['--resume', base])
    (s_full, n_full, _), (s_res, n_res, _) = run_files(full), run_files(resumed)
    assert s_res['progress']['cur_nimg'] == s_full['progress']['cur_nimg'] == 32
    for key in ('G', 'D', V.PICKLE_KEY):
        a, b = n_full[key].state_dict(), n_res[key].state_dict()
        for name in a:
            assert torch.equal(a[name], b[name]), f'{key}.{name} differs after resume'
    for name, value in s_full['components']['loss_term/cv'].items():
        assert torch.equal(value, s_res['components']['loss_term/cv'][name]), name
