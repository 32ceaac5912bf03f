"""Training loop: run files, exact resume, 1-vs-2 processes, NaN detection, lazy
regularisation settings, G_ema decay, gradient averaging and crash-safe snapshots.

Every run here is tiny (16x16 grayscale, 16 channels, batch 8) so a tick is two steps and
a whole run takes a few seconds on a CPU.
"""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch

from torch_utils import distributed, netfile, training_stats
from dist_helpers import spawn_with_deadline
from training import training_loop as tl
from training import training_state
from training.dataset import DatasetWriter


@pytest.fixture(autouse=True)
def _fresh_stats():
    training_stats._reset()
    torch.set_num_threads(1)
    yield
    training_stats._reset()


@pytest.fixture(scope='module')
def dataset_zip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('data') / 'tiny.zip')
    rng = np.random.RandomState(0)
    with DatasetWriter(path) as w:
        for i in range(12):
            yy, xx = np.mgrid[:16, :16]
            img = 127 + 100 * np.sin(xx / (1 + i % 4) + yy / 3) + rng.randn(16, 16) * 10
            w.add(img.clip(0, 255).astype(np.uint8), label=i % 3)
    return path


def tiny_config(run_dir, data, **overrides):
    c = dict(
        run_dir=str(run_dir), random_seed=3, num_gpus=1, batch_size=8, batch_gpu=4,
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                                 max_size=None, xflip=False, resolution=16, random_seed=0),
        metric_set_kwargs=None,
        data_loader_kwargs=dict(pin_memory=False, num_workers=0, prefetch_factor=None),
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=8, w_dim=8, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=128, channel_max=8)),
        D_kwargs=dict(class_name='training.networks.Discriminator', channel_base=128, channel_max=8,
                      epilogue_kwargs=dict(mbstd_group_size=2)),
        G_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        D_opt_kwargs=dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8),
        loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0, style_mixing_prob=0.9,
                         pl_weight=2.0, pl_batch_shrink=2, pl_decay=0.01),
        augment_kwargs=None, real_transform_kwargs=None, controllers=[], heads_kwargs=[],
        ema_kimg=0.02, ema_rampup=0.05, G_reg_interval=2, D_reg_interval=3,
        total_kimg=0.032, kimg_per_tick=0.016, image_snapshot_ticks=1, network_snapshot_ticks=1,
        metrics=[], resume_pkl=None, resume_kimg=0, resume_state=None, cudnn_benchmark=False,
        allow_tf32=False, device='cpu', fp32=True, nhwc=False)
    c.update(overrides)
    return c


def with_apa_ada(c, target=-1.0):
    """APA and ADA sharing one fast controller (interval 3: pending state at tick ends).

    With target -1 the sign statistic is always above target, so p rises 0.12 per
    adjustment and the mixing and augmentation are active from the 4th step on.
    """
    c = dict(c)
    c['real_transform_kwargs'] = dict(class_name='training.augment.apa.PseudoAugment', p=0.0)
    c['augment_kwargs'] = dict(class_name='training.augment.stage.AugmentStage', augments=[
        dict(class_name='training.augment.ada.AugmentPipe', xflip=1, rotate90=1, xint=1, scale=1, rotate=1,
             aniso=1, xfrac=1, brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)])
    c['controllers'] = [dict(class_name='training.augment.adaptive.AdaptiveP', target=target, interval=3,
                             speed_kimg=0.2, name='apa', modules=['real_transform', 'augment.ada'])]
    return c


def assert_same(a, b, where='state', exact=True, rtol=1e-4, atol=1e-5):
    """Recursive comparison of two state trees (tensors bitwise unless exact=False)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if exact:
            assert torch.equal(a, b), f'{where} differs: max |diff| {(a.double() - b.double()).abs().max()}'
        else:
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f'{where}: {m}')
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), f'{where}: keys {sorted(a)} vs {sorted(b)}'
        for k in a:
            assert_same(a[k], b[k], f'{where}[{k!r}]', exact, rtol, atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]', exact, rtol, atol)
    elif isinstance(a, float) and not exact:
        assert a == pytest.approx(b, rel=rtol, abs=atol), where
    else:
        assert a == b, f'{where}: {a!r} vs {b!r}'


# ---------------------------------------------------------------------------------------
# End to end.

def test_two_tick_run_writes_all_files(tmp_path, dataset_zip):
    run_dir = tmp_path / 'run'
    result = tl.training_loop(**with_apa_ada(tiny_config(run_dir, dataset_zip)))
    assert result['cur_nimg'] == 32 and result['cur_tick'] == 2 and result['batch_idx'] == 4
    names = set(os.listdir(run_dir))
    # Snapshots at 16 and 32 images: both in kimg 0, so the second carries the exact count
    # instead of overwriting the first.
    for name in ['log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png', 'fakes000000.png', 'fakes000000_032.png',
                 'network-snapshot-000000.pkl', 'network-snapshot-000000_032.pkl', 'training-state-000000.pt',
                 'training-state-000000_032.pt', 'training-state-latest.json']:
        assert name in names, name
    assert any(n.startswith('events.out.tfevents') for n in names)
    assert not [n for n in names if n.endswith('.tmp')]

    # Progress lines with kimg, timing, memory and the p of every module that has one.
    log = (run_dir / 'log.txt').read_text()
    lines = [line for line in log.splitlines() if line.startswith('tick ')]
    assert len(lines) == 2
    for key in ['kimg 0.032', 'sec/tick', 'sec/kimg', 'maintenance', 'cpumem', 'gpumem', 'apa_p', 'ada_p']:
        assert key in lines[1], key

    # stats.jsonl: one row per tick, {name: {num, mean, std}} plus a timestamp.
    rows = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert len(rows) == 2
    for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/D/reg', 'Loss/G/reg', 'Loss/signs/real', 'Loss/r1_penalty',
                'Loss/pl_penalty', 'Progress/apa_p', 'Augment/apa/replaced', 'Augment/ada/p', 'Timing/sec_per_kimg']:
        assert key in rows[1], key
        assert set(rows[1][key]) == {'num', 'mean', 'std'}
    assert rows[0]['Loss/G/loss']['num'] == 16  # 2 steps x 2 slots x 4 images
    assert isinstance(rows[1]['timestamp'], float)

    # Grids: 16 px images, at least 4x4 of them; the fakes grid matches the reals grid.
    reals = PIL.Image.open(run_dir / 'reals.png')
    fakes = PIL.Image.open(run_dir / 'fakes000000_032.png')
    assert reals.size == fakes.size and reals.size[0] % 16 == 0 and reals.size[0] >= 64
    assert reals.mode == 'L'

    # The pickle loads through the safe loader with every entry.
    data = netfile.load_network_pickle(str(run_dir / 'network-snapshot-000000_032.pkl'))
    for key in ['G', 'D', 'G_ema', 'augment_pipe', 'real_transform', 'training_set_kwargs']:
        assert key in data, key
    z = torch.randn([2, data['G_ema'].z_dim])
    c = torch.eye(3)[:2]
    assert data['G_ema'](z, c).shape == (2, 1, 16, 16)
    assert float(data['real_transform'].p) == float(data['augment_pipe'].get('ada').p) == pytest.approx(0.12)

    state = training_state.load_training_state(str(run_dir))
    assert state['progress'] == {'cur_nimg': 32, 'cur_tick': 2, 'batch_idx': 4}
    assert state['components']['real_transform/apa']['fakes'].shape == (8, 1, 16, 16)
    assert set(state['optimizers']) == {'G', 'D'}


def _final_state(run_dir):
    state = training_state.load_training_state(str(run_dir))
    del state['config'], state['path']
    return state


@pytest.mark.parametrize('methods', ['plain', 'apa+ada'])
def test_exact_resume(tmp_path, dataset_zip, methods):
    def config(run_dir, **kw):
        c = tiny_config(run_dir, dataset_zip, **kw)
        return with_apa_ada(c) if methods == 'apa+ada' else c

    # N + M ticks in one go.
    tl.training_loop(**config(tmp_path / 'full', total_kimg=0.064))
    # N ticks, stop, resume from the run directory, M more.
    tl.training_loop(**config(tmp_path / 'first', total_kimg=0.032))
    training_stats._reset()
    tl.training_loop(**config(tmp_path / 'second', total_kimg=0.064, resume_state=str(tmp_path / 'first')))

    full, resumed = _final_state(tmp_path / 'full'), _final_state(tmp_path / 'second')
    assert full['progress'] == {'cur_nimg': 64, 'cur_tick': 4, 'batch_idx': 8}
    # Everything bitwise: G, D, G_ema, optimizers, every p, controller, pl_mean, fakes, RNG.
    assert_same(full, resumed)
    assert float(full['loss']['pl_mean']) > 0
    if methods == 'apa+ada':
        assert float(full['components']['real_transform/apa']['p']) == pytest.approx(0.24)  # the controller moved p
        assert full['components']['controller/apa']['steps'] == 8 % 3


def _two_process_worker(rank, world_size, init_file, config):
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank,
                                         world_size=world_size)
    try:
        tl.training_loop(rank=rank, **config)
    except BaseException:
        torch.distributed.destroy_process_group()
        raise
    distributed.leave_and_exit()


def test_one_vs_two_processes(tmp_path, dataset_zip):
    base = with_apa_ada(tiny_config(tmp_path / 'one', dataset_zip, batch_gpu=2))
    tl.training_loop(**base)

    two = dict(base, run_dir=str(tmp_path / 'two'), num_gpus=2)
    spawn_with_deadline(_two_process_worker, (2, str(tmp_path / 'rendezvous'), two), timeout=180,
                        what='two-process training')

    one, two = _final_state(tmp_path / 'one'), _final_state(tmp_path / 'two')
    assert one['progress'] == two['progress']
    # p moves by whole steps from summed signs: exactly equal. Networks, optimizers, the
    # path-length mean and w_avg agree up to the order of floating-point reductions.
    assert_same(one['components']['real_transform/apa']['p'], two['components']['real_transform/apa']['p'])
    assert_same(one['components']['controller/apa'], two['components']['controller/apa'])
    del one['rng'], two['rng']
    assert_same(one, two, exact=False, rtol=1e-4, atol=1e-5)

    # The losses of the ticks agree too.
    rows = [[json.loads(x) for x in open(tmp_path / name / 'stats.jsonl')] for name in ['one', 'two']]
    for r1, r2 in zip(*rows):
        for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/D/reg', 'Loss/G/reg']:
            assert r1[key]['num'] == r2[key]['num']
            assert r1[key]['mean'] == pytest.approx(r2[key]['mean'], rel=1e-4, abs=1e-6), key


# ---------------------------------------------------------------------------------------
# Failure handling.

def test_non_finite_loss_names_phase_step_and_term(tmp_path, dataset_zip):
    huge = dict(class_name='torch.optim.Adam', lr=1e38, betas=[0, 0.99], eps=1e-8)
    c = tiny_config(tmp_path / 'run', dataset_zip, G_opt_kwargs=huge, D_opt_kwargs=huge, total_kimg=0.2)
    with pytest.raises(tl.NonFiniteError) as info:
        tl.training_loop(**c)
    msg = str(info.value)
    assert 'Non-finite value in phase' in msg and 'at step' in msg and 'kimg' in msg
    assert any(f'phase {p} ' in msg for p in ['Gmain', 'Greg', 'Dmain', 'Dreg'])
    assert 'loss term Loss/' in msg or 'gradient of' in msg


def test_non_finite_weight_is_named():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    tl._check_params_finite({'G': net}, step=5, cur_nimg=2000)
    with torch.no_grad():
        net[1].bias[0] = float('inf')
    with pytest.raises(tl.NonFiniteError, match=r'step 5 \(kimg 2.000\): weight G\.1\.bias'):
        tl._check_params_finite({'G': net}, step=5, cur_nimg=2000)


def test_crash_while_writing_snapshot_keeps_previous_loadable(tmp_path, dataset_zip, monkeypatch):
    run_dir = tmp_path / 'run'
    c = tiny_config(run_dir, dataset_zip, total_kimg=0.016, kimg_per_tick=0.016)
    tl.training_loop(**c)
    before_state = _final_state(run_dir)
    pkl = run_dir / 'network-snapshot-000000.pkl'
    pkl_bytes = pkl.read_bytes()

    # The state writer dies half way through the second snapshot's state file.
    real_save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        real_save({'half': torch.zeros(10)}, f)
        raise OSError('disk full (simulated)')

    monkeypatch.setattr(training_state.torch, 'save', failing_save)
    with pytest.raises(OSError, match='simulated'):
        tl.training_loop(**dict(c, total_kimg=0.032, resume_state=str(run_dir)))
    monkeypatch.setattr(training_state.torch, 'save', real_save)

    assert not [n for n in os.listdir(run_dir) if n.endswith('.tmp')]
    assert_same(_final_state(run_dir), before_state)  # still the first state, intact
    netfile.load_network_pickle(str(pkl))            # the pickle (rewritten atomically) loads

    # The pickle writer dies half way: the old pickle stays byte for byte.
    training_stats._reset()
    pkl.write_bytes(pkl_bytes)

    def failing_dump(self, obj):
        self._file_for_test.write(b'garbage')
        raise OSError('killed (simulated)')

    orig_init = netfile._NetworkPickler.__init__

    def init(self, file, check_only=False):
        orig_init(self, file, check_only)
        self._file_for_test = file

    monkeypatch.setattr(netfile._NetworkPickler, '__init__', init)
    monkeypatch.setattr(netfile._NetworkPickler, 'dump', lambda self, obj: (
        None if isinstance(self._file_for_test, netfile._NullWriter) else failing_dump(self, obj)))
    with pytest.raises(OSError, match='simulated'):
        tl.training_loop(**dict(c, total_kimg=0.032, resume_state=str(run_dir)))
    assert pkl.read_bytes() == pkl_bytes
    assert_same(_final_state(run_dir), before_state)


def test_resume_path_errors(tmp_path):
    with pytest.raises(training_state.TrainingStateError, match='does not exist'):
        training_state.find_training_state(str(tmp_path / 'nothing'))
    with pytest.raises(training_state.TrainingStateError, match='holds no training-state'):
        training_state.find_training_state(str(tmp_path))
    bad = tmp_path / 'training-state-000001.pt'
    bad.write_bytes(b'not a state')
    with pytest.raises(training_state.TrainingStateError, match='Cannot read training state'):
        training_state.load_training_state(str(tmp_path))


def test_state_pointer_and_pruning(tmp_path):
    for nimg in [1000, 2000, 3000]:
        training_state.save_training_state(str(tmp_path), {'x': torch.tensor(nimg)}, nimg, keep=2)
    files = sorted(n for n in os.listdir(tmp_path) if n.endswith('.pt'))
    assert files == ['training-state-000002.pt', 'training-state-000003.pt']
    assert int(training_state.load_training_state(str(tmp_path))['x']) == 3000
    # A damaged pointer falls back to the newest file.
    (tmp_path / training_state.LATEST_POINTER).write_text('{broken')
    assert training_state.find_training_state(str(tmp_path)).endswith('training-state-000003.pt')


def test_rng_state_round_trip():
    import random
    state = training_state.capture_rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    training_state.restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    with pytest.raises(TypeError, match='only tensors and plain data'):
        training_state.to_plain({'bad': object()})


# ---------------------------------------------------------------------------------------
# Pieces of the step.

def test_lazy_regularization_phases_and_rescaling():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    opt = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0.5, 0.99], eps=1e-8)
    phases = tl.build_phases(G, D, opt, opt, G_reg_interval=4, D_reg_interval=16)
    assert [(p.name, p.interval) for p in phases] == [('Gmain', 1), ('Greg', 4), ('Dmain', 1), ('Dreg', 16)]
    assert phases[0].opts[0] is phases[1].opts[0] and phases[2].opts[0] is phases[3].opts[0]
    g_group, d_group = phases[0].opts[0].param_groups[0], phases[2].opts[0].param_groups[0]
    assert g_group['lr'] == pytest.approx(0.002 * 4 / 5)
    assert list(g_group['betas']) == pytest.approx([0.5 ** 0.8, 0.99 ** 0.8])
    assert d_group['lr'] == pytest.approx(0.002 * 16 / 17)
    assert list(d_group['betas']) == pytest.approx([0.5 ** (16 / 17), 0.99 ** (16 / 17)])

    both = tl.build_phases(G, D, opt, opt, G_reg_interval=None, D_reg_interval=None)
    assert [(p.name, p.interval) for p in both] == [('Gboth', 1), ('Dboth', 1)]
    assert both[0].opts[0].param_groups[0]['lr'] == 0.002

    # Settings as JSON gives them back (training_options.json, --rerun): an int beta beside a
    # float one, which Adam refuses unless both are made floats.
    json_opt = dict(opt, betas=[0, 0.99])
    both = tl.build_phases(G, D, json_opt, json_opt, G_reg_interval=None, D_reg_interval=None)
    assert [type(b) for b in both[0].opts[0].param_groups[0]['betas']] == [float, float]
    assert json_opt['betas'] == [0, 0.99]             # the caller's dict is left alone


def test_reg_phases_run_on_their_intervals(tmp_path, dataset_zip):
    c = tiny_config(tmp_path / 'run', dataset_zip, batch_gpu=8, total_kimg=0.048, kimg_per_tick=0.048,
                    G_reg_interval=4, D_reg_interval=3)
    tl.training_loop(**c)
    row = json.loads((tmp_path / 'run' / 'stats.jsonl').read_text().splitlines()[0])
    # 6 steps of one slot: Greg at steps 0 and 4 (4 samples each: batch shrink 2), Dreg at 0 and 3.
    assert row['Loss/pl_penalty']['num'] == 2 * 4
    assert row['Loss/r1_penalty']['num'] == 2 * 8
    assert row['Loss/G/loss']['num'] == 6 * 8


def test_ema_beta_formula():
    assert tl.ema_beta(0, 8, 10, 0.05) == 0.0                       # ramp-up: G_ema = G at the start
    assert tl.ema_beta(1000, 8, 10, 0.05) == pytest.approx(0.5 ** (8 / 50))
    assert tl.ema_beta(10 ** 6, 8, 10, 0.05) == pytest.approx(0.5 ** (8 / 10000))
    assert tl.ema_beta(0, 8, 10, None) == pytest.approx(0.5 ** (8 / 10000))
    # Half-life: after ema_kimg thousand images the old value keeps half its weight.
    assert tl.ema_beta(0, 32, 1, None) ** (1000 / 32) == pytest.approx(0.5)


class _MeanSquareLoss:
    """loss = mean over the micro-batch of (w . x)^2 / 2, so d loss / d w = mean(x (w . x))."""

    def __init__(self, net):
        self.net = net

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg, slot=0):
        value = self.net(real_img).square().mean() / 2
        value.mul(gain).backward()
        return {'Loss/test': value.detach()}


@pytest.mark.parametrize('interval', [1, 4])
def test_gradient_is_mean_over_slots(interval):
    x = torch.randn(8, 3)
    updates = []
    for batch_gpu in [8, 4, 2]:
        net = torch.nn.Linear(3, 1, bias=False)
        with torch.no_grad():
            net.weight.copy_(torch.tensor([[0.5, -1.0, 2.0]]))
        opt = torch.optim.SGD(net.parameters(), lr=1.0)
        phase = tl.Phase('Dmain', [('D', net)], [opt], interval, ['D'])
        rounds = [(chunk, torch.zeros(len(chunk), 0)) for chunk in x.split(batch_gpu)]
        tl._step_phase(phase, 0, _MeanSquareLoss(net), rounds, rank=0, num_gpus=1, num_slots=len(rounds),
                       random_seed=0, batch_idx=0, cur_nimg=0, batch_gpu=batch_gpu, z_dim=4,
                       label_sampler=lambda n: torch.zeros(n, 0), device=torch.device('cpu'), distributed=False)
        updates.append(net.weight.detach() - torch.tensor([[0.5, -1.0, 2.0]]))
    w = torch.tensor([0.5, -1.0, 2.0])
    expected = -interval * (x * (x @ w)[:, None]).mean(0)
    for update in updates:
        torch.testing.assert_close(update[0], expected, rtol=1e-5, atol=1e-6)


def test_step_seed_depends_only_on_counters():
    seeds = {tl.step_seed(0, s, p, m) for s in range(3) for p in range(4) for m in range(4)}
    assert len(seeds) == 48
    assert tl.step_seed(7, 2, 1, 3) == tl.step_seed(7, 2, 1, 3)
    assert all(0 <= s < 2 ** 63 for s in seeds)


def test_module_paths_and_p_modules():
    from training.augment.apa import PseudoAugment
    from training.augment.stage import AugmentStage
    stage = AugmentStage([dict(class_name='training.augment.ada.AugmentPipe', xflip=1),
                          dict(class_name='training.augment.diffaugment.DiffAugment', policy='color')])
    apa = PseudoAugment(p=0.25)
    roots = dict(augment=stage, real_transform=apa, G=None)
    assert tl.resolve_module_path('augment.ada', roots) is stage.get('ada')
    assert tl.resolve_module_path('real_transform', roots) is apa
    with pytest.raises(ValueError, match="names 'G'"):
        tl.resolve_module_path('G', roots)
    with pytest.raises(ValueError, match="has no 'nope'"):
        tl.resolve_module_path('augment.nope', roots)
    labels = [label for label, _m in tl.p_modules(dict(augment=stage, real_transform=apa))]
    assert labels == ['ada', 'apa']


def test_resume_from_network_pickle(tmp_path, dataset_zip):
    first = tmp_path / 'first'
    tl.training_loop(**with_apa_ada(tiny_config(first, dataset_zip, total_kimg=0.016, kimg_per_tick=0.016)))
    data = netfile.load_network_pickle(str(first / 'network-snapshot-000000.pkl'))
    training_stats._reset()
    c = with_apa_ada(tiny_config(tmp_path / 'second', dataset_zip, total_kimg=0.024, kimg_per_tick=0.008,
                                 resume_pkl=str(first / 'network-snapshot-000000.pkl'), resume_kimg=0.016,
                                 network_snapshot_ticks=None, image_snapshot_ticks=None), target=2.0)
    result = tl.training_loop(**c)
    assert result['cur_nimg'] == 24  # kimg continues from resume_kimg
    log = (tmp_path / 'second' / 'log.txt').read_text()
    p = float(data['real_transform'].p)
    assert f'Resumed apa p = {p:.4f}' in log and f'Resumed ada p = {float(data["augment_pipe"].get("ada").p):.4f}' in log


def test_metrics_called_at_snapshots(tmp_path, dataset_zip, monkeypatch):
    from metrics import metric_main
    calls = []

    def fake_calc(metric, G, dataset_kwargs, num_gpus, rank, device, **kwargs):
        calls.append((metric, dataset_kwargs['max_size'], num_gpus, rank))
        return dict(results={metric: 1.5}, metric=metric, total_time=0.0, total_time_str='0s', num_gpus=num_gpus)

    monkeypatch.setattr(metric_main, 'calc_metric', fake_calc)
    run_dir = tmp_path / 'run'
    c = tiny_config(run_dir, dataset_zip, metrics=['fid50k_full'], network_snapshot_ticks=2)
    c['training_set_kwargs'] = dict(c['training_set_kwargs'], max_size=10)
    tl.training_loop(**c)
    assert calls == [('fid50k_full', None, 1, 0)]  # one snapshot; metric data without max_size
    rows = [json.loads(x) for x in (run_dir / 'metric-fid50k_full.jsonl').read_text().splitlines()]
    assert rows[0]['results'] == {'fid50k_full': 1.5}
    assert rows[0]['snapshot_pkl'] == 'network-snapshot-000000.pkl'


@pytest.mark.gpu
def test_two_tick_run_on_cuda(tmp_path, dataset_zip):
    c = with_apa_ada(tiny_config(tmp_path / 'run', dataset_zip, device='cuda', cudnn_benchmark=False))
    result = tl.training_loop(**c)
    assert result['cur_nimg'] == 32
    state = training_state.load_training_state(str(tmp_path / 'run'))
    assert state['modules']['G']['mapping.w_avg'].device.type == 'cpu'
    assert state['components']['real_transform/apa']['fakes'].shape == (8, 1, 16, 16)
    assert 'gpumem' in (tmp_path / 'run' / 'log.txt').read_text()
    netfile.load_network_pickle(str(tmp_path / 'run' / 'network-snapshot-000000.pkl'))


LECAM = dict(class_name='training.heads.lecam.LeCam', weight=0.1)


def test_resume_is_strict_about_parts_and_reads_older_states(tmp_path, dataset_zip):
    def config(run_dir, **kw):
        return with_apa_ada(tiny_config(run_dir, dataset_zip, **kw))

    tl.training_loop(**config(tmp_path / 'full', total_kimg=0.064))
    training_stats._reset()
    tl.training_loop(**config(tmp_path / 'first', total_kimg=0.032))
    first = training_state.load_training_state(str(tmp_path / 'first'))

    # A part the state lacks is an error naming it, unless the run allows new parts.
    training_stats._reset()
    with pytest.raises(training_state.TrainingStateError, match='loss_term/lecam'):
        tl.training_loop(**config(tmp_path / 'x', total_kimg=0.064, resume_state=str(tmp_path / 'first'),
                                  heads_kwargs=[LECAM]))
    training_stats._reset()
    tl.training_loop(**config(tmp_path / 'added', total_kimg=0.064, resume_state=str(tmp_path / 'first'),
                              heads_kwargs=[LECAM], resume_allow_new=True))
    assert _final_state(tmp_path / 'added')['components']['loss_term/lecam']['updates'] == 4

    # A state in the layout written before the component table: separate augment_pipe,
    # real_transform and controllers entries, APA's fakes in the loss state.
    legacy = {k: v for k, v in first.items() if k not in ('components', 'path')}
    comps = first['components']
    legacy['modules'] = dict(first['modules'], augment_pipe=comps['augment/augment_pipe'],
                             real_transform={'p': comps['real_transform/apa']['p']}, heads={})
    legacy['loss'] = dict(first['loss'], latest_fakes=comps['real_transform/apa']['fakes'])
    legacy['controllers'] = [comps['controller/apa']]
    os.makedirs(tmp_path / 'legacy')
    training_state.save_training_state(str(tmp_path / 'legacy'), legacy, 32)
    training_stats._reset()
    tl.training_loop(**config(tmp_path / 'from_legacy', total_kimg=0.064, resume_state=str(tmp_path / 'legacy')))
    assert_same(_final_state(tmp_path / 'full'), _final_state(tmp_path / 'from_legacy'))
