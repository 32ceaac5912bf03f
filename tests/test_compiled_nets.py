"""train.py --compile (training/compiled_nets.py): compiled main phases against eager ones,
eager regularisation phases (double backward), snapshots of compiled networks."""

import copy

import pytest
import torch

from test_training_loop import _final_state, assert_same, dataset_zip, tiny_config  # noqa: F401 (a fixture)
from torch_utils import netfile, training_stats
from training import checkpoint, compiled_nets, networks
from training import training_loop as tl
from training.loss import StyleGAN2Loss

pytestmark = [pytest.mark.slow,  # inductor compiles C++ for each graph: about a minute in all
              pytest.mark.skipif(not compiled_nets.available(), reason='needs torch.compile and set_stance')]

G_KWARGS = dict(z_dim=16, w_dim=16, c_dim=0, img_resolution=8, img_channels=1, mapping_kwargs=dict(num_layers=1),
                synthesis_kwargs=dict(channel_base=64, channel_max=8, num_fp16_res=0))
D_KWARGS = dict(c_dim=0, img_resolution=8, img_channels=1, channel_base=64, channel_max=8, num_fp16_res=0,
                epilogue_kwargs=dict(mbstd_group_size=2))
LOSS_KWARGS = dict(r1_gamma=1.0, pl_weight=2.0, pl_batch_shrink=2, style_mixing_prob=0.0)
BATCH = 4


@pytest.fixture(scope='module')
def nets():
    """(eager G, eager D, compiled G, compiled D) with the same weights."""
    torch.manual_seed(0)
    G = networks.Generator(**G_KWARGS).train().requires_grad_(False)
    D = networks.Discriminator(**D_KWARGS).train().requires_grad_(False)
    cG, cD = copy.deepcopy(G), copy.deepcopy(D)
    assert compiled_nets.compile_networks(cG, cD) == ['G.mapping', 'G.synthesis', 'D']
    return G, D, cG, cD


def _phase_grads(G, D, phase):
    """Gradients of one phase of the StyleGAN2 loss (fixed inputs and noise)."""
    training_stats._reset()  # pylint: disable=protected-access
    net = G if phase.startswith('G') else D
    net.requires_grad_(True)
    torch.manual_seed(1)
    real = torch.rand([BATCH, 1, 8, 8]) * 2 - 1
    gen_z = torch.randn([BATCH, 16])
    loss = StyleGAN2Loss(torch.device('cpu'), G, D, **LOSS_KWARGS)
    with compiled_nets.phase_context(phase):
        loss.accumulate_gradients(phase=phase, real_img=real, real_c=torch.zeros([BATCH, 0]), gen_z=gen_z,
                                  gen_c=torch.zeros([BATCH, 0]), gain=1, cur_nimg=0, slot=0)
    net.requires_grad_(False)
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    for p in net.parameters():
        p.grad = None
    return grads


@pytest.mark.parametrize('phase', ['Gmain', 'Dmain'])
def test_main_phases_compiled_match_eager(nets, phase):
    G, D, cG, cD = nets
    want, got = _phase_grads(G, D, phase), _phase_grads(cG, cD, phase)
    assert want.keys() == got.keys() and len(want) > 5
    for name, w in want.items():
        scale = w.abs().max().clamp(min=1e-6)
        assert (got[name] - w).abs().max() / scale < 1e-4, name  # fused arithmetic rounds differently


@pytest.mark.parametrize('phase', ['Greg', 'Dreg'])
def test_regularisation_phases_run_eagerly(nets, phase):
    # torch.compile has no double backward: these phases must bypass the graphs, and then
    # give the eager bits.
    assert compiled_nets.double_backward(phase)
    G, D, cG, cD = nets
    want, got = _phase_grads(G, D, phase), _phase_grads(cG, cD, phase)
    assert want.keys() == got.keys() and want
    for name, w in want.items():
        assert torch.equal(got[name], w), name


def test_main_phases_are_compiled():
    assert not compiled_nets.double_backward('Gmain') and not compiled_nets.double_backward('Dmain')
    assert compiled_nets.double_backward('Gboth') and compiled_nets.double_backward('Dboth')


def test_compiled_networks_snapshot_like_eager_ones(nets, tmp_path):
    G, _D, cG, _cD = nets
    assert list(cG.state_dict()) == list(G.state_dict())
    path = str(tmp_path / 'net.pkl')
    checkpoint.save_network_snapshot(path, dict(G_ema=cG))
    loaded = netfile.load_network_pickle(path)['G_ema']
    z = torch.randn([2, 16])
    with torch.no_grad():
        assert torch.equal(loaded(z, torch.zeros([2, 0]), noise_mode='const'),
                           G.eval()(z, torch.zeros([2, 0]), noise_mode='const'))
    G.train()


def test_compiled_training_resumes_exactly(tmp_path, dataset_zip):  # noqa: F811 (the fixture)
    # A compiled run is reproducible with itself: 4 ticks in one go and 2 + 2 with a resume
    # from the training state end in the same bits (networks, optimizers, RNG, pl_mean).
    def config(run_dir, **kw):
        return tiny_config(run_dir, dataset_zip, compile=True, **kw)
    training_stats._reset()  # pylint: disable=protected-access
    tl.training_loop(**config(tmp_path / 'full', total_kimg=0.064))
    training_stats._reset()  # pylint: disable=protected-access
    tl.training_loop(**config(tmp_path / 'first', total_kimg=0.032))
    training_stats._reset()  # pylint: disable=protected-access
    tl.training_loop(**config(tmp_path / 'second', total_kimg=0.064, resume_state=str(tmp_path / 'first')))
    full, resumed = _final_state(tmp_path / 'full'), _final_state(tmp_path / 'second')
    assert full['progress'] == {'cur_nimg': 64, 'cur_tick': 4, 'batch_idx': 8}
    assert_same(full, resumed)
