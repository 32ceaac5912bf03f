"""Tests of the StyleGAN2 generator and discriminator (training/networks.py).

Tiny networks (16x16, a few dozen channels) keep every test fast on the CPU; the standard
configurations are only constructed, to check their parameter counts.
"""

import copy

import numpy as np
import pytest
import torch

from training import networks

Z_DIM = 32
W_DIM = 32
RES = 16
C_DIM = 3
BATCH = 4


def make_G(architecture='skip', c_dim=0, **synthesis_kwargs):
    kwargs = dict(channel_base=256, channel_max=32, architecture=architecture)
    kwargs.update(synthesis_kwargs)
    return networks.Generator(z_dim=Z_DIM, c_dim=c_dim, w_dim=W_DIM, img_resolution=RES, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=kwargs)


def make_D(architecture='resnet', c_dim=0, **kwargs):
    args = dict(architecture=architecture, channel_base=256, channel_max=32,
                epilogue_kwargs=dict(mbstd_group_size=2))
    args.update(kwargs)
    return networks.Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, **args)


def make_inputs(c_dim, batch=BATCH, z_dim=Z_DIM):
    z = torch.randn([batch, z_dim])
    c = torch.nn.functional.one_hot(torch.arange(batch) % max(c_dim, 1), max(c_dim, 1)).float()
    c = c[:, :c_dim]
    return z, c


def set_noise_strength(G, value):
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(value)


def assert_all_grads_nonzero(module, skip=()):
    for name, p in module.named_parameters():
        if any(name.endswith(s) for s in skip):
            continue
        assert p.grad is not None, f'{name} received no gradient'
        assert torch.isfinite(p.grad).all(), f'{name} has a non-finite gradient'
        assert p.grad.abs().max() > 0, f'{name} has an all-zero gradient'


# ---------------------------------------------------------------------------------------
# Forward and backward.

@pytest.mark.parametrize('c_dim', [0, C_DIM])
@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_generator_forward_backward(architecture, c_dim):
    G = make_G(architecture, c_dim).train()
    z, c = make_inputs(c_dim)
    img = G(z, c)
    assert img.shape == (BATCH, 3, RES, RES)
    assert img.dtype == torch.float32
    assert torch.isfinite(img).all()
    # Equalized learning rate keeps the initial output at a sane scale.
    assert 0.01 < img.std().item() < 10
    (img * torch.randn_like(img)).sum().backward()
    assert_all_grads_nonzero(G)
    assert G.num_ws == G.synthesis.num_ws == 2 * int(np.log2(RES)) - 2
    assert G.block_resolutions == [4, 8, 16]


@pytest.mark.parametrize('c_dim', [0, C_DIM])
@pytest.mark.parametrize('architecture', ['orig', 'skip', 'resnet'])
def test_discriminator_forward_backward(architecture, c_dim):
    D = make_D(architecture, c_dim).train()
    _, c = make_inputs(c_dim)
    img = torch.randn([BATCH, 3, RES, RES])
    logits = D(img, c)
    assert logits.shape == (BATCH, 1)
    assert torch.isfinite(logits).all()
    (logits * torch.randn_like(logits)).sum().backward()
    assert_all_grads_nonzero(D)


def test_fused_and_unfused_modconv_agree():
    G = make_G('skip', C_DIM)
    set_noise_strength(G, 0.3)
    z, c = make_inputs(C_DIM)
    ws = G.mapping(z, c)
    fused = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    unfused = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    assert torch.allclose(fused, unfused, atol=1e-5, rtol=1e-4)
    # Eval mode defaults to the fused path, train mode to the unfused one: same images.
    assert torch.allclose(G.eval()(z, c, noise_mode='const'), G.train()(z, c, noise_mode='const'), atol=1e-5)


def test_batch_of_one_and_batch_agree():
    # Each sample must be computed independently of the others in the generator.
    G = make_G('skip', C_DIM).eval()
    z, c = make_inputs(C_DIM)
    full = G(z, c, noise_mode='const')
    single = torch.cat([G(z[i:i + 1], c[i:i + 1], noise_mode='const') for i in range(BATCH)])
    assert torch.allclose(full, single, atol=1e-5)


# ---------------------------------------------------------------------------------------
# Noise and truncation.

def test_noise_modes():
    G = make_G('skip').eval()
    set_noise_strength(G, 0.5)
    z, c = make_inputs(0)
    const_a = G(z, c, noise_mode='const')
    const_b = G(z, c, noise_mode='const')
    random_a = G(z, c, noise_mode='random')
    random_b = G(z, c, noise_mode='random')
    none = G(z, c, noise_mode='none')
    assert torch.equal(const_a, const_b)
    assert (random_a - random_b).abs().max() > 1e-3
    assert (none - const_a).abs().max() > 1e-3
    with pytest.raises(ValueError, match='noise_mode'):
        G(z, c, noise_mode='fixed')


def test_noise_off_when_strength_zero_and_use_noise_false():
    # Freshly built layers have noise strength 0: all modes agree.
    G = make_G('skip').eval()
    z, c = make_inputs(0)
    assert torch.equal(G(z, c, noise_mode='const'), G(z, c, noise_mode='none'))
    G2 = make_G('skip', use_noise=False).eval()
    assert not any('noise' in name for name, _ in G2.named_parameters())
    assert not any('noise' in name for name, _ in G2.named_buffers())


def test_truncation_psi_zero_gives_w_avg_for_every_z():
    G = make_G('skip', C_DIM).eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([W_DIM]))
    z, c = make_inputs(C_DIM)
    c = c[:1].repeat(BATCH, 1)
    ws = G.mapping(z, c, truncation_psi=0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))
    img = G(z, c, truncation_psi=0, noise_mode='const')
    assert (img - img[:1]).abs().max() < 1e-5
    # Without truncation the same z give different images.
    img1 = G(z, c, noise_mode='const')
    assert (img1 - img1[:1]).abs().max() > 1e-3


def test_truncation_cutoff_only_touches_first_ws():
    G = make_G('skip').eval()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([W_DIM]))
    z, c = make_inputs(0)
    ws = G.mapping(z, c)
    cut = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.equal(cut[:, 2:], ws[:, 2:])
    expected = G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg)
    assert torch.allclose(cut[:, :2], expected, atol=1e-6)
    assert (cut[:, :2] - ws[:, :2]).abs().max() > 1e-3


def test_w_avg_moves_only_with_update_emas():
    G = make_G('skip').train()
    z, c = make_inputs(0)
    before = G.mapping.w_avg.clone()
    G(z, c)
    G.mapping(z, c)
    assert torch.equal(G.mapping.w_avg, before)
    w = G.mapping(z, c, update_emas=True)[:, 0]
    beta = G.mapping.w_avg_beta
    expected = before * beta + w.detach().mean(0) * (1 - beta)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)
    assert G.mapping.w_avg.abs().max() > 0
    G(z, c, update_emas=True)
    assert not torch.allclose(G.mapping.w_avg, expected)


def test_mapping_normalises_z():
    # z and 10 * z map to the same w (pixel norm of the latent).
    G = make_G('skip')
    z, c = make_inputs(0)
    assert torch.allclose(G.mapping(z, c), G.mapping(10 * z, c), atol=1e-5)


# ---------------------------------------------------------------------------------------
# Second-order gradients (lazy regularisation).

@pytest.mark.parametrize('architecture', ['skip', 'resnet'])
def test_r1_second_order_gradients(architecture):
    D = make_D(architecture, C_DIM).train()
    _, c = make_inputs(C_DIM)
    img = torch.randn([BATCH, 3, RES, RES], requires_grad=True)
    logits = D(img, c)
    (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
    penalty = grad.square().sum(dim=[1, 2, 3]).mean()
    penalty.backward()
    grads = {name: p.grad for name, p in D.named_parameters()}
    for name, g in grads.items():
        assert g is None or torch.isfinite(g).all(), name
    # The image gradient does not depend on the output bias; it does on the weights.
    first = f'b{RES}.fromrgb.weight'
    for name in [first, f'b{RES}.conv0.weight', 'b4.fc.weight', 'b4.out.weight', 'mapping.fc0.weight']:
        assert grads[name] is not None and grads[name].abs().max() > 0, name


def test_path_length_second_order_gradients():
    G = make_G('skip', C_DIM).train()
    set_noise_strength(G, 0.1)
    z, c = make_inputs(C_DIM)
    ws = G.mapping(z, c)
    img = G.synthesis(ws, noise_mode='const')
    pl_noise = torch.randn_like(img) / np.sqrt(img.shape[2] * img.shape[3])
    (pl_grads,) = torch.autograd.grad((img * pl_noise).sum(), ws, create_graph=True)
    lengths = pl_grads.square().sum(2).mean(1).sqrt()
    (lengths - lengths.detach().mean() * 0.9).square().mean().backward()
    # Purely additive terms (e.g. the toRGB biases) do not enter the Jacobian: no gradient.
    for name, p in G.synthesis.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    for name in ['b4.conv1.weight', 'b8.conv0.affine.weight', f'b{RES}.conv1.weight', f'b{RES}.torgb.weight']:
        g = G.synthesis.get_parameter(name).grad
        assert g.abs().max() > 0, name
    assert G.mapping.fc0.weight.grad.abs().max() > 0


# ---------------------------------------------------------------------------------------
# Standard configurations, names and layouts.

def _num_params(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('res,channel_base,g_params,d_params', [
    (256, 16384, 24_767_458, 24_001_089),
    (1024, 32768, 30_370_060, 29_012_513),
])
def test_standard_parameter_counts(res, channel_base, g_params, d_params):
    G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=res, img_channels=3,
                           mapping_kwargs=dict(num_layers=8),
                           synthesis_kwargs=dict(channel_base=channel_base, channel_max=512, num_fp16_res=4,
                                                 conv_clamp=256, architecture='skip'))
    assert _num_params(G) == g_params
    assert G.num_ws == 2 * int(np.log2(res)) - 2
    del G
    D = networks.Discriminator(c_dim=0, img_resolution=res, img_channels=3, architecture='resnet',
                               channel_base=channel_base, channel_max=512, num_fp16_res=4, conv_clamp=256,
                               epilogue_kwargs=dict(mbstd_group_size=4, mbstd_num_channels=1))
    assert _num_params(D) == d_params


def test_state_dict_names_and_layouts():
    G = make_G('skip', C_DIM)
    sd = G.state_dict()
    expected_shapes = {
        'mapping.embed.weight': (W_DIM, C_DIM),
        'mapping.fc0.weight': (W_DIM, Z_DIM + W_DIM),
        'mapping.fc0.bias': (W_DIM,),
        'mapping.w_avg': (W_DIM,),
        'synthesis.b4.const': (32, 4, 4),
        'synthesis.b4.resample_filter': (4, 4),
        'synthesis.b4.conv1.weight': (32, 32, 3, 3),
        'synthesis.b4.conv1.bias': (32,),
        'synthesis.b4.conv1.noise_strength': (),
        'synthesis.b4.conv1.noise_const': (4, 4),
        'synthesis.b4.conv1.resample_filter': (4, 4),
        'synthesis.b4.conv1.affine.weight': (32, W_DIM),
        'synthesis.b4.conv1.affine.bias': (32,),
        'synthesis.b4.torgb.weight': (3, 32, 1, 1),
        'synthesis.b16.conv0.weight': (16, 32, 3, 3),
        'synthesis.b16.conv0.noise_const': (16, 16),
        'synthesis.b16.torgb.affine.weight': (16, W_DIM),
        'synthesis.b16.torgb.bias': (3,),
    }
    for name, shape in expected_shapes.items():
        assert name in sd, name
        assert tuple(sd[name].shape) == shape, name
    # Initialisation conventions: styles start at 1, mapping weights are stored / lr_multiplier.
    assert torch.equal(G.synthesis.b8.conv0.affine.bias, torch.ones(32))
    assert 50 < G.mapping.fc1.weight.std().item() < 200
    assert abs(G.synthesis.b8.conv0.noise_const.std().item() - 1) < 0.5
    assert abs(G.synthesis.b4.resample_filter.sum().item() - 1) < 1e-6
    # Only the last block of 'orig' has a toRGB.
    orig = make_G('orig').state_dict()
    assert 'synthesis.b8.torgb.weight' not in orig and 'synthesis.b16.torgb.weight' in orig
    resnet = make_G('resnet').state_dict()
    assert tuple(resnet['synthesis.b8.skip.weight'].shape) == (32, 32, 1, 1)

    D = make_D('resnet', C_DIM)
    sd = D.state_dict()
    expected_shapes = {
        'b16.fromrgb.weight': (16, 3, 1, 1),
        'b16.fromrgb.bias': (16,),
        'b16.conv0.weight': (16, 16, 3, 3),
        'b16.conv1.weight': (32, 16, 3, 3),
        'b16.skip.weight': (32, 16, 1, 1),
        'b16.resample_filter': (4, 4),
        'b8.conv0.weight': (32, 32, 3, 3),
        'b4.conv.weight': (32, 33, 3, 3),
        'b4.fc.weight': (32, 32 * 16),
        'b4.out.weight': (32, 32),
        'mapping.embed.weight': (32, C_DIM),
        'mapping.fc0.weight': (32, 32),
    }
    for name, shape in expected_shapes.items():
        assert name in sd, name
        assert tuple(sd[name].shape) == shape, name
    assert 'b8.fromrgb.weight' not in sd and 'b16.skip.bias' not in sd
    assert not any(name.startswith('mapping.w_avg') for name in sd)
    assert tuple(make_D('resnet').state_dict()['b4.out.weight'].shape) == (1, 32)


def test_rebuild_from_constructor_args_gives_same_outputs():
    # Network files store (class, constructor args, state); rebuilding must reproduce outputs.
    G = make_G('resnet', C_DIM).eval()
    D = make_D('skip', C_DIM).eval()
    z, c = make_inputs(C_DIM)
    for net, args in [(G, (z, c)), (D, (torch.randn([BATCH, 3, RES, RES]), c))]:
        kwargs = copy.deepcopy(net._init_kwargs)
        rebuilt = type(net)(*net._init_args, **kwargs).eval()
        rebuilt.load_state_dict(net.state_dict())
        kw = dict(noise_mode='const') if net is G else {}
        assert torch.equal(net(*args, **kw), rebuilt(*args, **kw))


def test_flat_synthesis_kwargs_and_fused_modconv_default():
    # Synthesis arguments given as generator keywords build the same network.
    nested = make_G('resnet')
    flat = networks.Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32,
                              architecture='resnet', fused_modconv_default='inference_only')
    assert {k: v.shape for k, v in flat.state_dict().items()} == \
        {k: v.shape for k, v in nested.state_dict().items()}
    flat.load_state_dict(nested.state_dict())
    z, c = make_inputs(0)
    assert torch.allclose(flat.eval()(z, c, noise_mode='const'), nested.eval()(z, c, noise_mode='const'),
                          atol=1e-5)
    with pytest.raises(TypeError):
        networks.Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=3,
                           channel_bse=256)
    with pytest.raises(ValueError, match='given twice'):
        networks.Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=RES, img_channels=3,
                           synthesis_kwargs=dict(channel_max=32), channel_max=64)
    with pytest.raises(ValueError, match='fused_modconv_default'):
        make_G('skip', fused_modconv_default='sometimes')


def test_return_features():
    D = make_D('resnet', C_DIM).eval()
    _, c = make_inputs(C_DIM)
    img = torch.randn([BATCH, 3, RES, RES])
    logits, features = D(img, c, return_features=True)
    assert features.shape == (BATCH, 32, 4, 4)
    assert torch.equal(logits, D(img, c))


def test_freeze_layers_turns_weights_into_buffers():
    D = make_D('resnet', block_kwargs=dict(freeze_layers=2))
    params = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    assert 'b16.fromrgb.weight' in buffers and 'b16.conv0.weight' in buffers
    assert 'b16.fromrgb.weight' not in params and 'b16.conv0.weight' not in params
    assert 'b16.conv1.weight' in params and 'b8.conv0.weight' in params
    # Frozen weights still appear in the state dict under the same names.
    assert set(D.state_dict()) == set(make_D('resnet').state_dict())


def test_minibatch_std_groups_by_stride():
    layer = networks.MinibatchStdLayer(group_size=2, num_channels=1)
    x = torch.randn([4, 3, 2, 2])
    y = layer(x)
    assert y.shape == (4, 4, 2, 2)
    assert torch.equal(y[:, :3], x)
    # Groups are {0, 2} and {1, 3}.
    for members in [(0, 2), (1, 3)]:
        std = x[list(members)].std(dim=0, unbiased=False).mean()
        for i in members:
            assert torch.allclose(y[i, 3], std.expand(2, 2), atol=1e-5)
    # A batch the group size does not divide still works (smaller groups).
    assert torch.isfinite(layer(torch.randn([3, 3, 2, 2]))).all()


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match='architecture'):
        make_G('fancy')
    with pytest.raises(ValueError, match='architecture'):
        make_D('fancy')
    with pytest.raises(ValueError, match='img_resolution'):
        networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=12, img_channels=3)
    G = make_G('skip')
    with pytest.raises(AssertionError, match='dimension'):
        G(torch.randn([2, Z_DIM + 1]), None)


# ---------------------------------------------------------------------------------------
# Mixed precision and memory format.

def test_fp16_blocks_stay_float32_on_cpu_and_channels_last_runs():
    base = make_G('skip', num_fp16_res=2, conv_clamp=256).eval()
    cl = make_G('skip', num_fp16_res=2, conv_clamp=256, fp16_channels_last=True).eval()
    cl.load_state_dict(base.state_dict())
    assert cl.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not cl.synthesis.b4.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    set_noise_strength(base, 0.2)
    set_noise_strength(cl, 0.2)
    z, c = make_inputs(0)
    ref = base(z, c, noise_mode='const', force_fp32=True)
    img = base(z, c, noise_mode='const')
    assert img.dtype == torch.float32
    assert torch.allclose(img, ref, atol=1e-6)
    img_cl = cl(z, c, noise_mode='const')
    assert img_cl.is_contiguous()
    assert torch.allclose(img_cl, ref, atol=1e-5)

    D = make_D('resnet', num_fp16_res=2, conv_clamp=256).eval()
    D_cl = make_D('resnet', num_fp16_res=2, conv_clamp=256, block_kwargs=dict(fp16_channels_last=True)).eval()
    D_cl.load_state_dict(D.state_dict())
    x = torch.randn([BATCH, 3, RES, RES])
    assert torch.allclose(D(x, None), D_cl(x, None), atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize('channels_last', [False, True])
def test_fp16_close_to_fp32_on_cuda(channels_last):
    device = torch.device('cuda')
    G = networks.Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3,
                           mapping_kwargs=dict(num_layers=2),
                           synthesis_kwargs=dict(channel_base=2048, channel_max=64, num_fp16_res=2,
                                                 conv_clamp=256, fp16_channels_last=channels_last))
    G = G.eval().to(device)
    D = networks.Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=2048, channel_max=64,
                               num_fp16_res=2, conv_clamp=256, block_kwargs=dict(fp16_channels_last=channels_last))
    D = D.eval().to(device)
    z = torch.randn([8, 64], device=device)
    with torch.no_grad():
        img16 = G(z, None, noise_mode='const')
        img32 = G(z, None, noise_mode='const', force_fp32=True)
        assert img16.dtype == torch.float32 and torch.isfinite(img16).all()
        assert (img16 - img32).abs().max() < 0.05 * img32.abs().max()
        logits16 = D(img32, None)
        logits32 = D(img32, None, force_fp32=True)
        assert torch.isfinite(logits16).all()
        assert (logits16 - logits32).abs().max() < 0.05 * logits32.abs().max() + 1e-3
    # Training mode (unfused modulated convolutions) in float16 with gradients.
    G.train()
    D.train()
    img = G(z, None)
    D(img, None).sum().backward()
    for name, p in G.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
