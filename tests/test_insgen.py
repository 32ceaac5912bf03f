"""InsGen head: InfoNCE, queues, momentum updates, the features path, the diversity term,
slot-ordered keys across processes, exact resume, network pickles and train.py runs."""

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train
from torch_utils import distributed, netfile
from training import networks
from training.heads import insgen
from training.loss import StyleGAN2Loss
from train_helpers import TINY, run_ok, write_blobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_nets(c_dim=0):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=16, img_channels=1,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=128, channel_max=8))
    D = networks.Discriminator(c_dim=c_dim, img_resolution=16, img_channels=1, channel_base=128, channel_max=8)
    return G.requires_grad_(False), D.requires_grad_(False)


def make_head(G, D, **kwargs):
    kwargs = dict(dict(real_queue_size=6, fake_queue_size=5), **kwargs)
    return insgen.InsGen(device='cpu', G=G, D=D, **kwargs)


def heads_state(head):
    return {k: v.clone() for k, v in head.heads.state_dict().items()}


# ---------------------------------------------------------------------------------------
# Pieces.

def test_info_nce_matches_numpy():
    rng = np.random.RandomState(0)
    norm = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    q, k, neg = norm(rng.randn(5, 7)), norm(rng.randn(5, 7)), norm(rng.randn(9, 7))
    t = 0.2
    # Independent formula: -log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t))).
    pos = np.exp((q * k).sum(1) / t)
    expected = -np.log(pos / (pos + np.exp(q @ neg.T / t).sum(1)))
    got = insgen.info_nce(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(neg), t)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    # A query equal to its key and orthogonal to all negatives: loss = log(1 + K e^{-1/t}).
    e = torch.eye(4, dtype=torch.float64)
    loss = insgen.info_nce(e[:1], e[:1], e[1:], 0.5)
    assert abs(float(loss) - np.log(1 + 3 * np.exp(-2.0))) < 1e-12


def test_enqueue_wraps_and_moves_the_pointer():
    queue, ptr = torch.zeros(5, 1), torch.zeros([], dtype=torch.int64)
    insgen.enqueue(queue, ptr, torch.tensor([[1.], [2.], [3.]]))
    assert queue.flatten().tolist() == [1, 2, 3, 0, 0] and int(ptr) == 3
    insgen.enqueue(queue, ptr, torch.tensor([[4.], [5.], [6.]]))       # wraps around
    assert queue.flatten().tolist() == [6, 2, 3, 4, 5] and int(ptr) == 1
    insgen.enqueue(queue, ptr, torch.arange(10, 17, dtype=torch.float32)[:, None])  # more than K keys
    # One-at-a-time semantics: keys 10..16 written at 1,2,3,4,0,1,2 -> the last five survive.
    assert queue.flatten().tolist() == [14, 15, 16, 12, 13] and int(ptr) == 3
    insgen.enqueue(queue, ptr, torch.zeros(0, 1))
    assert int(ptr) == 3


def test_momentum_update_formula():
    src, dst = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = dst.weight.detach().clone()
    insgen.momentum_update(dst, src, 0.999)
    torch.testing.assert_close(dst.weight, 0.999 * before + 0.001 * src.weight.detach(), rtol=0, atol=1e-7)
    insgen.momentum_update(dst, src, 0.0)
    assert torch.equal(dst.weight, src.weight) and torch.equal(dst.bias, src.bias)


def test_heads_shapes_and_momentum_copies():
    heads = insgen.InstanceHeads(8, 128, real_queue_size=6, fake_queue_size=4)
    assert heads.real_queue.shape == (6, 128) and heads.fake_queue.shape == (4, 128)
    torch.testing.assert_close(heads.real_queue.norm(dim=1), torch.ones(6))
    for a, b in zip(heads.real.parameters(), heads.real_momentum.parameters()):
        assert torch.equal(a, b) and not b.requires_grad
    q = heads.query('real', torch.randn(3, 8))
    assert q.shape == (3, 128)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match='real_queue_size'):
        insgen.InstanceHeads(8, real_queue_size=0)


# ---------------------------------------------------------------------------------------
# The head in the loss.

def test_features_path_and_query_use_d_features():
    G, D = tiny_nets()
    img = torch.randn(3, 1, 16, 16)
    logits, features = D(img, None, return_features=True)
    assert features.shape == (3, D.b4.in_channels, 4, 4) and features.dtype == torch.float32
    assert torch.equal(logits, D(img, None))
    head = make_head(G, D)
    assert head.heads.in_features == D.b4.in_channels

    seen = {}

    class Spy:
        name = 'spy'

        def d_loss(self, kind, features, **kwargs):
            seen[kind] = features

    loss = StyleGAN2Loss('cpu', G, D, heads=[Spy()], style_mixing_prob=0)
    torch.manual_seed(1)
    loss.accumulate_gradients('Dmain', img, torch.zeros(3, 0), torch.randn(3, 8), torch.zeros(3, 0), 1, 0)
    # The real-pass features are exactly D's map before the epilogue of the real batch.
    assert torch.equal(seen['real'], features)


def run_phase(loss, phase, slot=0, n=4, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 1, 16, 16)
    z = torch.randn(n, 8)
    c = torch.zeros(n, 0)
    return loss.accumulate_gradients(phase, x, c, z, c, gain=1, cur_nimg=0, slot=slot)


def test_d_step_trains_heads_and_end_step_enqueues_in_slot_order():
    G, D = tiny_nets()
    head = make_head(G, D, real_queue_size=16, fake_queue_size=16)
    loss = StyleGAN2Loss('cpu', G, D, heads=[head])
    trainable = head.trainable_modules()
    assert set(trainable) == {'real', 'fake'}
    for m in trainable.values():
        m.requires_grad_(True)
    D.requires_grad_(True)
    terms = run_phase(loss, 'Dmain', slot=1, seed=1)
    assert {'Loss/insgen/d_loss_real', 'Loss/insgen/d_loss_fake'} <= set(terms)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.heads.real.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.heads.fake.parameters())
    assert all(p.grad is None for p in head.heads.real_momentum.parameters())
    assert all(p.grad is None for p in head.D_ema.parameters())
    run_phase(loss, 'Dmain', slot=0, seed=2)
    keys = {kind: dict(head._pending[kind]) for kind in ('real', 'fake')}
    queue_before = heads_state(head)
    with pytest.raises(RuntimeError, match='pending'):
        head.state_dict()

    # Keys leave the queue untouched until end_step, which writes slot 0 before slot 1.
    assert torch.equal(head.heads.real_queue, queue_before['real_queue'])
    d_before = [p.detach().clone() for p in D.parameters()]
    ema_before = [p.detach().clone() for p in head.D_ema.parameters()]
    with torch.no_grad():
        for p in D.parameters():
            p.add_(0.5)
    head.end_step(8)
    for kind in ('real', 'fake'):
        queue = getattr(head.heads, f'{kind}_queue')
        assert torch.equal(queue[:4], keys[kind][0]) and torch.equal(queue[4:8], keys[kind][1])
        assert int(getattr(head.heads, f'{kind}_queue_ptr')) == 8
        torch.testing.assert_close(keys[kind][0].norm(dim=1), torch.ones(4))
    # D_ema moved once with momentum 0.999 toward the updated D.
    for e0, d0, e1 in zip(ema_before, d_before, head.D_ema.parameters()):
        torch.testing.assert_close(e1, 0.999 * e0 + 0.001 * (d0 + 0.5), rtol=0, atol=1e-6)


def test_diversity_term_reaches_g_and_leaves_the_head_unchanged():
    G, D = tiny_nets()
    head = make_head(G, D)
    loss = StyleGAN2Loss('cpu', G, D, heads=[head], style_mixing_prob=0)
    before = heads_state(head)
    G.requires_grad_(True)       # the G phase: only G trains; D and the heads are frozen
    terms = run_phase(loss, 'Gmain')
    g_term = float(terms['Loss/insgen/g_loss'])
    assert g_term > 0
    assert all(p.grad is None for p in head.heads.parameters())
    assert all(p.grad is None for p in D.parameters())
    for name, value in heads_state(head).items():
        assert torch.equal(value, before[name]), name
    assert not any(head._pending.values())           # nothing enqueued in the G step

    # The term alone gives G gradients (through D's features), 0.1 times the plain loss.
    G.zero_grad(set_to_none=True)
    only = make_head(G, D, real_weight=0, fake_weight=0)
    only.heads.load_state_dict(head.heads.state_dict())
    torch.manual_seed(5)
    z = torch.randn(4, 8)
    img = G(z, torch.zeros(4, 0))
    _, feats = D(img, None, return_features=True)
    torch.manual_seed(6)
    value = only.g_loss(img=img, raw=img, c=torch.zeros(4, 0), z=z, logits=None, features=feats)
    value.mean().backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    unweighted = make_head(G, D, g_weight=1.0)
    unweighted.heads.load_state_dict(head.heads.state_dict())
    torch.manual_seed(6)
    raw_value = unweighted.g_loss(img=img.detach(), raw=img.detach(), c=torch.zeros(4, 0), z=z, logits=None,
                                  features=feats.detach())
    torch.testing.assert_close(value.detach(), 0.1 * raw_value, rtol=1e-5, atol=1e-7)
    # --no-cl-on-g: no term at all.
    assert make_head(G, D, g_weight=0).g_loss(img=img, raw=img, c=None, z=z, logits=None, features=feats) is None


def test_state_and_network_pickle_resume(tmp_path):
    G, D = tiny_nets()
    head = make_head(G, D)
    loss = StyleGAN2Loss('cpu', G, D, heads=[head])
    run_phase(loss, 'Dmain')
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(1.5)
    head.end_step(4)
    state = head.state_dict()
    assert int(state['heads']['real_queue_ptr']) == 4

    # Exact state: a fresh head takes everything, including the pointers and D_ema.
    fresh = make_head(*tiny_nets())
    fresh.load_state_dict(state)
    for name, value in head.heads.state_dict().items():
        assert torch.equal(fresh.heads.state_dict()[name], value), name
    for name, value in head.D_ema.state_dict().items():
        assert torch.equal(fresh.D_ema.state_dict()[name], value), name

    # Network pickle: D_ema and the heads are stored and read back as our classes.
    path = str(tmp_path / 'net.pkl')
    netfile.save_network_pickle(path, dict(D=D, **head.network_modules()))
    data = netfile.load_network_pickle(path)
    assert isinstance(data['insgen'], insgen.InstanceHeads)
    logs = []
    other = make_head(*tiny_nets())
    other.resume_from_network(data, logs.append)
    assert torch.equal(other.heads.fake_queue, head.heads.fake_queue)
    assert all(torch.equal(a, b) for a, b in zip(other.D_ema.parameters(), head.D_ema.parameters()))

    # A pickle without InsGen parts: D_ema starts as the (resumed) D, the heads stay fresh.
    G2, D2 = tiny_nets()
    with torch.no_grad():
        for p in D2.parameters():
            p.add_(0.25)
    plain = make_head(G2, D2)
    fresh_heads = heads_state(plain)
    plain.resume_from_network(dict(D=D2), logs.append)
    assert all(torch.equal(a, b) for a, b in zip(plain.D_ema.parameters(), D2.parameters()))
    assert all(torch.equal(v, fresh_heads[k]) for k, v in plain.heads.state_dict().items())
    assert any('no D_ema' in line for line in logs)

    # Queues of another size keep their fresh values and say so.
    resized = make_head(*tiny_nets(), real_queue_size=3)
    del logs[:]
    resized.resume_from_network(data, logs.append)
    assert resized.heads.real_queue.shape == (3, 128)
    assert any('real_queue' in line and 'start fresh' in line for line in logs), logs


def _gather_worker(rank, port, out):
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        # Rank r runs slots r and r + 2; keys are filled with the slot number.
        pending = {s: torch.full([2, 3], float(s)) for s in (rank, rank + 2)}
        keys = insgen.gather_in_slot_order(pending, torch.device('cpu'))
        torch.save(keys, os.path.join(out, f'rank{rank}.pt'))
    except BaseException:
        torch.distributed.destroy_process_group()
        raise
    distributed.leave_and_exit()


def test_keys_are_gathered_across_ranks_in_slot_order(tmp_path):
    port = distributed.find_free_port()
    torch.multiprocessing.spawn(_gather_worker, args=(port, str(tmp_path)), nprocs=2)
    expected = torch.tensor([0., 0, 1, 1, 2, 2, 3, 3])[:, None].expand(8, 3)
    for rank in range(2):
        assert torch.equal(torch.load(tmp_path / f'rank{rank}.pt', weights_only=True), expected)


# ---------------------------------------------------------------------------------------
# train.py end to end.

@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A 16x16 grayscale zip with 32 images (soft blobs)."""
    return write_blobs(str(tmp_path_factory.mktemp('data') / 'blobs.zip'), seed=7)


def only_run_dir(outdir):
    return sorted(d for d in glob.glob(os.path.join(str(outdir), '*')) if os.path.isdir(d))[-1]


def newest(run_dir):
    pkls = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')), key=os.path.getmtime)
    return pkls[-1]


def state_heads(run_dir):
    state = torch.load(train.find_training_state(run_dir), map_location='cpu', weights_only=True)
    return state


INSGEN_ARGS = ['--aug=ada', '--insgen=1', '--rqs=6', '--fqs=5']


def assert_same_modules(a, b, keys, exact=True):
    for key in keys:
        sa, sb = dict(a[key].state_dict()), dict(b[key].state_dict())
        assert sa.keys() == sb.keys()
        for name in sa:
            if exact:
                assert torch.equal(sa[name], sb[name]), f'{key}.{name} differs'
            else:
                torch.testing.assert_close(sa[name], sb[name], rtol=1e-4, atol=1e-5, msg=f'{key}.{name}')


def test_two_tick_run_and_exact_resume(tmp_path, dataset):
    """Two ticks with --insgen=1, then N + M ticks in one go == N ticks, resume, M ticks."""
    base = ['--data', dataset] + TINY + INSGEN_ARGS
    res = run_ok(['--outdir', tmp_path / 'part'] + base)
    part = only_run_dir(tmp_path / 'part')
    assert part.endswith('-insgen') and 'InsGen' in res.output
    data = netfile.load_network_pickle(newest(part))
    assert isinstance(data['insgen'], insgen.InstanceHeads) and isinstance(data['D_ema'], networks.Discriminator)
    # 4 steps of 4 keys through queues of 6 and 5.
    assert int(data['insgen'].real_queue_ptr) == 16 % 6 and int(data['insgen'].fake_queue_ptr) == 16 % 5
    state = state_heads(part)
    assert {'head_insgen.real', 'head_insgen.fake'} <= set(state['optimizers'])
    with open(os.path.join(part, 'stats.jsonl')) as f:
        last = f.read().strip().splitlines()[-1]
    for name in ('Loss/insgen/real', 'Loss/insgen/fake', 'Loss/insgen/g_div'):
        assert name in last

    longer = base + ['--kimg=0.032']
    run_ok(['--outdir', tmp_path / 'full'] + longer)
    run_ok(['--outdir', tmp_path / 'resumed'] + longer + ['--resume', part])
    full = netfile.load_network_pickle(newest(only_run_dir(tmp_path / 'full')))
    resumed = netfile.load_network_pickle(newest(only_run_dir(tmp_path / 'resumed')))
    assert_same_modules(full, resumed, ('G', 'D', 'G_ema', 'D_ema', 'insgen'))
    s_full = state_heads(only_run_dir(tmp_path / 'full'))['components']['loss_term/insgen']
    s_res = state_heads(only_run_dir(tmp_path / 'resumed'))['components']['loss_term/insgen']
    assert torch.equal(s_full['augment_pipe']['p'], s_res['augment_pipe']['p'])


def test_resume_from_a_pickle_without_insgen(tmp_path, dataset):
    run_ok(['--outdir', tmp_path / 'plain', '--data', dataset] + TINY + ['--aug=ada'])
    pkl = newest(only_run_dir(tmp_path / 'plain'))
    assert 'insgen' not in netfile.load_network_pickle(pkl)
    res = run_ok(['--outdir', tmp_path / 'ins', '--data', dataset] + TINY + INSGEN_ARGS
                 + ['--resume', pkl, '--kimg=0.008'])
    assert 'no D_ema; starting it from the resumed D' in res.output
    data = netfile.load_network_pickle(newest(only_run_dir(tmp_path / 'ins')))
    assert 'insgen' in data and 'D_ema' in data


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, dataset):
    """--gpus=2 on the CPU (gloo): queues gathered across ranks give the one-process result."""
    common = [sys.executable, 'train.py', '--data', dataset] + TINY + INSGEN_ARGS + ['--batch-gpu=2']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for gpus in (1, 2):
        proc = subprocess.run(common + ['--outdir', str(tmp_path / f'g{gpus}'), f'--gpus={gpus}'], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    one = netfile.load_network_pickle(newest(only_run_dir(tmp_path / 'g1')))
    two = netfile.load_network_pickle(newest(only_run_dir(tmp_path / 'g2')))
    assert_same_modules(one, two, ('G', 'D', 'G_ema', 'D_ema', 'insgen'), exact=False)


def test_phases_train_only_the_heads_with_their_own_optimizers():
    from training import training_loop  # pylint: disable=import-outside-toplevel
    G, D = tiny_nets()
    opt = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8)
    head = make_head(G, D)
    phases = training_loop.build_phases(G, D, opt, opt, 4, 16, heads=[head])
    dmain = next(p for p in phases if p.name == 'Dmain')
    assert dmain.opt_names == ['D', 'head_insgen.real', 'head_insgen.fake']
    trained = {id(p) for o in dmain.opts[1:] for g in o.param_groups for p in g['params']}
    assert trained == {id(p) for p in head.heads.real.parameters()} | {id(p) for p in head.heads.fake.parameters()}
    # D's settings without the lazy-regularisation rescaling; a head's own settings win.
    assert dmain.opts[1].param_groups[0]['lr'] == 0.002 and dmain.opts[1].param_groups[0]['betas'] == (0.0, 0.99)
    own = make_head(G, D, opt_kwargs=dict(opt, lr=0.01))
    dmain = next(p for p in training_loop.build_phases(G, D, opt, opt, 4, 16, heads=[own]) if p.name == 'Dmain')
    assert dmain.opts[1].param_groups[0]['lr'] == 0.01
