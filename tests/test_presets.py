"""training.presets: the pure options -> config tree function."""

import json

import pytest

from training import presets

DATA = dict(data_path='data/ffhq.zip', data_name='ffhq', resolution=256, num_images=5000, has_labels=True)


def build(**kw):
    args = dict(DATA)
    args.update(kw)
    return presets.build(**args)


@pytest.mark.parametrize('res,gpus,mb,mbstd,fmaps,lrate', [
    (32, 1, 32, 4, 0.5, 0.0025),     # 4096 // 32 = 128 -> capped at 32 per GPU
    (256, 1, 16, 4, 0.5, 0.0025),    # 4096 // 256 = 16
    (256, 8, 64, 4, 0.5, 0.0025),    # 8 * 16 = 128 -> capped at 64
    (512, 2, 16, 4, 1, 0.0025),      # 2 * 8
    (1024, 8, 32, 4, 1, 0.002),      # 8 * 4
    (1024, 128, 128, 1, 1, 0.002),   # at least one image per GPU
])
def test_auto_formula(res, gpus, mb, mbstd, fmaps, lrate):
    c, desc = build(resolution=res, gpus=gpus, cfg='auto')
    assert c.batch_size == mb
    assert c.batch_gpu == mb // gpus
    assert c.D_kwargs.epilogue_kwargs.mbstd_group_size == mbstd
    assert c.G_kwargs.synthesis_kwargs.channel_base == c.D_kwargs.channel_base == int(fmaps * 32768)
    assert c.G_kwargs.synthesis_kwargs.channel_max == 512
    assert c.G_opt_kwargs.lr == c.D_opt_kwargs.lr == lrate
    assert c.loss_kwargs.r1_gamma == pytest.approx(0.0002 * res * res / mb)
    assert c.ema_kimg == pytest.approx(mb * 10 / 32)
    assert c.ema_rampup == 0.05
    assert c.G_kwargs.mapping_kwargs.num_layers == 2
    assert desc == f'ffhq-auto{gpus}-apa'


def test_auto_spec_numbers():
    spec = presets.auto_spec(256, 2)
    assert spec == dict(ref_gpus=2, mb=32, mbstd=4, fmaps=0.5, lrate=0.0025, gamma=0.0002 * 256 ** 2 / 32, ema=10.0)


# (cfg, kimg, mb, batch_gpu on 1 GPU, mbstd, channel_base, lrate, gamma, ema, ramp, map)
NAMED = [
    ('stylegan2', 25000, 32, 4, 4, 32768, 0.002, 10, 10, None, 8),
    ('paper256', 25000, 64, 8, 8, 16384, 0.0025, 1, 20, None, 8),
    ('paper512', 25000, 64, 8, 8, 32768, 0.0025, 0.5, 20, None, 8),
    ('paper1024', 25000, 32, 4, 4, 32768, 0.002, 2, 10, None, 8),
    ('cifar', 100000, 64, 32, 32, 32768, 0.0025, 0.01, 500, 0.05, 2),
    ('low_shot', 300, 8, 8, 4, 32768, 0.002, 10, 10, None, 2),
]


@pytest.mark.parametrize('cfg,kimg,mb,bgpu,mbstd,cbase,lrate,gamma,ema,ramp,nmap', NAMED)
def test_named_presets(cfg, kimg, mb, bgpu, mbstd, cbase, lrate, gamma, ema, ramp, nmap):
    c, desc = build(cfg=cfg)
    assert c.total_kimg == kimg
    assert c.batch_size == mb and c.batch_gpu == bgpu
    assert c.D_kwargs.epilogue_kwargs.mbstd_group_size == mbstd
    assert c.D_kwargs.channel_base == cbase and c.D_kwargs.channel_max == 512
    assert c.G_opt_kwargs.lr == lrate and c.G_opt_kwargs.betas == [0, 0.99] and c.G_opt_kwargs.eps == 1e-8
    assert c.loss_kwargs.r1_gamma == gamma
    assert c.ema_kimg == ema and c.ema_rampup == ramp
    assert c.G_kwargs.mapping_kwargs.num_layers == nmap
    # Mixed precision as in the established tools unless --fp32.
    assert c.G_kwargs.synthesis_kwargs.num_fp16_res == 4 and c.D_kwargs.conv_clamp == 256
    assert c.G_reg_interval == 4 and c.D_reg_interval == 16
    assert desc == f'ffhq-{cfg}-apa'


def test_cifar_specifics_and_defaults():
    c, _ = build(cfg='cifar')
    assert c.loss_kwargs.pl_weight == 0 and c.loss_kwargs.style_mixing_prob == 0
    assert c.D_kwargs.architecture == 'orig'
    d, _ = build(cfg='paper256')
    assert d.loss_kwargs.pl_weight == 2 and d.loss_kwargs.style_mixing_prob == 0.9
    assert d.loss_kwargs.pl_batch_shrink == 2 and d.loss_kwargs.pl_decay == 0.01
    assert d.D_kwargs.architecture == 'resnet'
    assert d.kimg_per_tick == 4 and d.network_snapshot_ticks == d.image_snapshot_ticks == 50
    assert d.metrics == ['fid50k_full']
    assert build(cfg='low_shot')[0].network_snapshot_ticks == 10


def test_named_preset_batch_per_gpu_follows_reference_gpus():
    # stylegan2 was tuned for 8 GPUs x 4 images: 2 GPUs keep 4 per pass and accumulate.
    c, _ = build(cfg='stylegan2', gpus=2)
    assert c.batch_size == 32 and c.batch_gpu == 4
    with pytest.raises(presets.ConfigError) as e:
        build(cfg='stylegan2', gpus=3)
    assert '--batch-gpu' in e.value.flag and '--gpus' in e.value.flag


def test_cpu_preset_is_small_and_fp32():
    c, desc = build(cfg='cpu', resolution=32)
    assert c.batch_size == 8 and c.batch_gpu == 8        # many cheap steps: the demo's recipe
    assert c.G_opt_kwargs.lr == c.D_opt_kwargs.lr == 0.01
    # No path length regularisation or style mixing, and no empty G reg phase.
    assert c.loss_kwargs.pl_weight == 0 and c.loss_kwargs.style_mixing_prob == 0
    assert c.G_reg_interval is None and c.D_reg_interval == 16
    assert c.G_kwargs.synthesis_kwargs.channel_max <= 128
    assert c.G_kwargs.synthesis_kwargs.num_fp16_res == 0 and c.G_kwargs.synthesis_kwargs.conv_clamp is None
    assert c.fp32 is True
    assert c.metrics == []
    assert c.total_kimg / c.kimg_per_tick >= 4            # several progress lines
    snaps = c.total_kimg / (c.kimg_per_tick * c.network_snapshot_ticks)
    assert 2 <= snaps <= 3                               # two or three network snapshots
    assert desc == 'ffhq-cpu-apa'                        # fp32 is the preset's, not an override


def test_overrides_change_tree_and_description():
    c, desc = build(cfg='paper256', gamma=2.5, kimg=1000, batch=32, gpus=2, seed=7, cond=True, subset=1000,
                    mirror=True, snap=5, tick=0.5, fp32=True, nhwc=True, freezed=4, workers=1, metrics=[])
    assert c.loss_kwargs.r1_gamma == 2.5
    assert c.total_kimg == 1000
    assert c.batch_size == 32 and c.batch_gpu == 16
    assert c.random_seed == 7 and c.training_set_kwargs.random_seed == 7
    assert c.training_set_kwargs.use_labels is True and c.training_set_kwargs.max_size == 1000
    assert c.training_set_kwargs.xflip is True
    assert c.network_snapshot_ticks == 5 and c.kimg_per_tick == 0.5
    assert c.G_kwargs.synthesis_kwargs.num_fp16_res == 0 and c.D_kwargs.conv_clamp is None
    assert c.G_kwargs.synthesis_kwargs.fp16_channels_last is True and c.D_kwargs.block_kwargs.fp16_channels_last
    assert c.D_kwargs.block_kwargs.freeze_layers == 4
    assert c.data_loader_kwargs == dict(pin_memory=False, num_workers=1, prefetch_factor=2)
    assert c.metrics == []
    assert desc == 'ffhq-cond-subset1000-mirror-paper256-gamma2.5-kimg1000-batch32-apa-freezed4-fp32-nhwc'


def test_batch_gpu_and_network_overrides():
    c, _ = build(cfg='paper256', batch=64, batch_gpu=8, gpus=2, cbase=1024, cmax=32, map_layers=1,
                 mbstd_group=2, glr=0.001, dlr=0.003)
    assert c.batch_size == 64 and c.batch_gpu == 8
    assert c.G_kwargs.synthesis_kwargs.channel_base == c.D_kwargs.channel_base == 1024
    assert c.G_kwargs.synthesis_kwargs.channel_max == c.D_kwargs.channel_max == 32
    assert c.G_kwargs.mapping_kwargs.num_layers == 1
    assert c.D_kwargs.epilogue_kwargs.mbstd_group_size == 2
    assert c.G_opt_kwargs.lr == 0.001 and c.D_opt_kwargs.lr == 0.003


def test_subset_equal_to_dataset_keeps_everything():
    c, desc = build(subset=5000)
    assert c.training_set_kwargs.max_size is None and '-subset5000' in desc


@pytest.mark.parametrize('kw,flag', [
    (dict(cond=True, has_labels=False), '--cond'),
    (dict(subset=5001), '--subset'),
    (dict(subset=0), '--subset'),
    (dict(batch=30, gpus=4), '--batch'),
    (dict(batch=32, batch_gpu=6), '--batch/--batch-gpu/--gpus'),
    (dict(cfg='nope'), '--cfg'),
    (dict(aug='fixed'), '--p'),
    (dict(aug='apa', p=0.3), '--p'),
    (dict(aug='fixed', p=1.5), '--p'),
    (dict(aug='noaug', target=0.5), '--target'),
    (dict(aug='fixed', p=0.2, target=0.5), '--target'),
    (dict(aug='ada', with_dataaug=True), '--with-dataaug'),
    (dict(aug='noaug', with_dataaug=True), '--with-dataaug'),
    (dict(ada_own_p=True), '--ada-own-p'),
    (dict(ada_target=0.5), '--ada-target'),
    (dict(augpipe='bgc'), '--augpipe'),
    (dict(aug='noaug', ada_kimg=100), '--ada-kimg'),
    (dict(resume_kimg=10), '--resume-kimg'),
    (dict(resume_pkl='a.pkl', resume_state='b.pt'), '--resume'),
    (dict(metrics=['fid50k_full', 'not_a_metric']), '--metrics'),
    (dict(gamma=-1.0), '--gamma'),
    (dict(kimg=0), '--kimg'),
    (dict(tick=0), '--tick'),
    (dict(snap=0), '--snap'),
    (dict(workers=-1), '--workers'),
])
def test_bad_values_name_the_flag(kw, flag):
    with pytest.raises(presets.ConfigError) as e:
        build(**kw)
    assert e.value.flag == flag
    assert flag in str(e.value)


def test_parse_metrics():
    assert presets.parse_metrics(None) is None
    assert presets.parse_metrics('none') == []
    assert presets.parse_metrics('fid50k_full, kid50k_full') == ['fid50k_full', 'kid50k_full']
    with pytest.raises(presets.ConfigError):
        presets.parse_metrics('none,fid50k_full')


# ---- Methods -> tree.

def _controllers(c):
    return [(k.name, k.modules, k.target) for k in c.controllers]


def test_apa_default():
    c, desc = build()
    assert c.real_transform_kwargs == dict(class_name=presets.APA_CLASS, p=0.0)
    assert c.augment_kwargs is None
    assert _controllers(c) == [('apa', ['real_transform'], 0.6)]
    k = c.controllers[0]
    assert k.class_name == presets.CONTROLLER_CLASS and k.interval == 4 and k.speed_kimg == 500
    assert c.heads_kwargs == []
    assert desc == 'ffhq-auto1-apa'


def test_apa_target_and_resume_speed():
    c, desc = build(target=0.8, resume_pkl='x.pkl', resume_kimg=100)
    assert _controllers(c) == [('apa', ['real_transform'], 0.8)]
    assert c.controllers[0].speed_kimg == 100                # faster when fine-tuning
    assert c.ema_rampup is None and c.resume_pkl == 'x.pkl' and c.resume_kimg == 100
    assert desc == 'ffhq-auto1-apa-target0.8-resumecustom'
    c2, desc2 = build(resume_state='run/training-state-000100.pt')
    assert c2.resume_state == 'run/training-state-000100.pt' and c2.controllers[0].speed_kimg == 500
    assert c2.ema_rampup == 0.05 and desc2.endswith('-resume')


def test_fixed_apa():
    c, desc = build(aug='fixed', p=0.3)
    assert c.real_transform_kwargs.p == 0.3 and c.controllers == [] and c.augment_kwargs is None
    assert desc == 'ffhq-auto1-fixed-p0.3'


def test_noaug():
    c, desc = build(aug='noaug')
    assert c.real_transform_kwargs is None and c.augment_kwargs is None and c.controllers == []
    assert desc == 'ffhq-auto1-noaug'


def test_diffaugment_alone():
    c, desc = build(aug='noaug', diffaugment='color,translation,cutout')
    assert c.augment_kwargs.class_name == presets.STAGE_CLASS
    assert c.augment_kwargs.augments == [dict(class_name=presets.DIFFAUG_CLASS, policy='color,translation,cutout')]
    assert c.controllers == []
    assert desc == 'ffhq-auto1-noaug-diffaug-color-translation-cutout'




def _ada_presets():
    return pytest.importorskip('training.augment.presets').ADA_PRESETS


def test_ada_alone():
    pipes = _ada_presets()
    c, desc = build(aug='ada', target=0.7, augpipe='bgcfnc')
    assert c.real_transform_kwargs is None
    [ada] = c.augment_kwargs.augments
    assert ada.class_name == presets.ADA_CLASS and 'p' not in ada
    assert {k: v for k, v in ada.items() if k != 'class_name'} == pipes['bgcfnc']
    assert _controllers(c) == [('ada', ['augment.ada'], 0.7)]
    assert desc == 'ffhq-auto1-ada-target0.7-bgcfnc'


def test_apa_with_dataaug_shares_p():
    pipes = _ada_presets()
    c, desc = build(with_dataaug=True)
    [ada] = c.augment_kwargs.augments
    assert {k: v for k, v in ada.items() if k != 'class_name'} == pipes['bgc']
    assert _controllers(c) == [('apa', ['real_transform', 'augment.ada'], 0.6)]
    assert desc == 'ffhq-auto1-apa-dataaug'


def test_apa_with_dataaug_own_p():
    _ada_presets()
    c, desc = build(with_dataaug=True, ada_own_p=True, ada_target=0.4, target=0.7)
    assert _controllers(c) == [('apa', ['real_transform'], 0.7), ('ada', ['augment.ada'], 0.4)]
    assert desc == 'ffhq-auto1-apa-target0.7-dataaug-adaownp-adatarget0.4'


def test_fixed_with_dataaug_fixes_both():
    _ada_presets()
    c, _ = build(aug='fixed', p=0.25, with_dataaug=True)
    assert c.real_transform_kwargs.p == 0.25
    assert c.augment_kwargs.augments[0].p == 0.25
    assert c.controllers == []
    # With --ada-own-p ADA adapts from 0 while APA stays fixed.
    c2, _ = build(aug='fixed', p=0.25, with_dataaug=True, ada_own_p=True)
    assert 'p' not in c2.augment_kwargs.augments[0]
    assert _controllers(c2) == [('ada', ['augment.ada'], 0.6)]


def test_all_combined():
    _ada_presets()
    c, desc = build(with_dataaug=True, diffaugment='color,cutout')
    names = [a.class_name for a in c.augment_kwargs.augments]
    assert names == [presets.ADA_CLASS, presets.DIFFAUG_CLASS]
    assert c.real_transform_kwargs.class_name == presets.APA_CLASS
    assert desc == 'ffhq-auto1-apa-dataaug-diffaug-color-cutout'


def test_tree_is_json_and_make_config_matches_build():
    c = presets.make_config(**DATA, cfg='low_shot', metricdata_path='full.zip')
    assert c == build(cfg='low_shot', metricdata_path='full.zip')[0]
    assert presets.make_run_desc(**DATA, cfg='low_shot') == 'ffhq-low_shot-apa'
    assert c.metric_set_kwargs.path == 'full.zip' and c.metric_set_kwargs.max_size is None
    text = json.dumps(presets.to_plain(c))
    assert json.loads(text)['training_set_kwargs']['class_name'] == presets.DATASET_CLASS
    # Pure: building twice gives equal, independent trees.
    c2 = presets.make_config(**DATA, cfg='low_shot', metricdata_path='full.zip')
    c2.G_kwargs.mapping_kwargs.num_layers = 99
    assert c.G_kwargs.mapping_kwargs.num_layers == 2
    assert presets.PRESETS['low_shot']['map'] == 2


def test_insgen_head_entry():
    c, desc = build(cfg='paper256', insgen=True, mirror=True, subset=2000)
    head, = c.heads_kwargs
    # 5% of the training images: 2000 after --subset, doubled by --mirror.
    assert head.class_name == presets.INSGEN_CLASS and desc.endswith('-insgen')
    assert (head.real_queue_size, head.fake_queue_size) == (200, 200)
    assert (head.temperature, head.real_weight, head.fake_weight, head.g_weight) == (0.2, 1.0, 1.0, 0.1)
    assert head.aug_p == presets.INSGEN_AUG_P          # plain APA: no ADA p to follow
    c = build(insgen=True, rqs=64, fqs=32, insgen_temp=0.07, insgen_weights='1,0.5,0.2', aug='ada')[0]
    head = c.heads_kwargs[0]
    assert (head.real_queue_size, head.fake_queue_size, head.temperature) == (64, 32, 0.07)
    assert (head.real_weight, head.fake_weight, head.g_weight) == (1.0, 0.5, 0.2)
    # The positive view's pipe follows the run's adaptive ADA p.
    assert c.controllers[0].modules == [presets.ADA_MODULE, presets.INSGEN_MODULE]
    assert build(insgen=True, no_cl_on_g=True)[0].heads_kwargs[0].g_weight == 0
    assert build(insgen=True, aug='fixed', p=0.3, with_dataaug=True)[0].heads_kwargs[0].aug_p == 0.3
    json.dumps(presets.to_plain(c))


@pytest.mark.parametrize('kw,flag', [
    (dict(rqs=10), '--rqs'), (dict(insgen_temp=0.1), '--insgen-temp'), (dict(no_cl_on_g=True), '--no-cl-on-g'),
    (dict(insgen=True, rqs=0), '--rqs'), (dict(insgen=True, insgen_temp=0), '--insgen-temp'),
    (dict(insgen=True, insgen_weights='1,1'), '--insgen-weights'),
    (dict(insgen=True, insgen_weights='1,x,1'), '--insgen-weights'),
    (dict(insgen=True, insgen_weights='1,-1,1'), '--insgen-weights'),
])
def test_insgen_errors_name_the_flag(kw, flag):
    with pytest.raises(presets.ConfigError) as info:
        build(**kw)
    assert info.value.flag == flag


def test_pl_weight_and_style_mixing_options():
    # Switched back on for the cpu preset: path length runs lazily every 4 G steps again.
    c, desc = build(cfg='cpu', pl_weight=2, style_mixing=0.9)
    assert c.loss_kwargs.pl_weight == 2 and c.loss_kwargs.style_mixing_prob == 0.9
    assert c.G_reg_interval == 4
    assert desc == 'ffhq-cpu-pl2-mix0.9-apa'
    # Switched off for paper256: the reg interval stays (as the established cifar config).
    d, desc = build(cfg='paper256', pl_weight=0, style_mixing=0)
    assert d.loss_kwargs.pl_weight == 0 and d.loss_kwargs.style_mixing_prob == 0
    assert d.G_reg_interval == 4
    assert desc == 'ffhq-paper256-pl0-mix0-apa'
    assert build(cfg='cifar')[0].G_reg_interval == 4
    for bad in (dict(pl_weight=-1), dict(style_mixing=1.5)):
        with pytest.raises(presets.ConfigError) as e:
            build(cfg='cpu', **bad)
        assert e.value.flag == '--' + next(iter(bad)).replace('_', '-')
