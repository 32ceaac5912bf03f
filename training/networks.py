"""StyleGAN2 generator and discriminator.

The modules, their constructor arguments and the names and layouts of their parameters and
buffers follow the published StyleGAN2 (stylegan2-ada-pytorch) networks, so that the
checkpoints released with it and with its forks map onto these modules tensor for tensor.

Conventions shared by every layer:
- Equalized learning rate (Karras et al. 2018, sec. 4.1): weights are stored with unit
  variance (divided by `lr_multiplier`) and scaled by `lr_multiplier / sqrt(fan_in)` at run
  time, so that the optimiser sees the same dynamic range for every layer.
- Mixed precision: blocks flagged `use_fp16` run in float16 only when their tensors live on
  a CUDA device; on the CPU float16 is much slower than float32, so they stay in float32.
  Activations of such blocks are clamped to +-`conv_clamp` to keep float16 finite.
"""

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from torch_utils import misc, netfile
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d

_NOISE_MODES = ('random', 'const', 'none')
_ARCHITECTURES = ('orig', 'skip', 'resnet')


def _check_architecture(architecture: str, where: str) -> None:
    if architecture not in _ARCHITECTURES:
        raise ValueError(f'{where}: unknown architecture {architecture!r}; '
                         f'expected one of {", ".join(_ARCHITECTURES)}')


def _block_precision(use_fp16: bool, channels_last: bool, force_fp32: bool,
                     device: torch.device) -> Tuple[torch.dtype, torch.memory_format]:
    """Chooses the dtype and memory format a block computes in.

    float16 only on CUDA (on the CPU it is far slower than float32); `force_fp32` turns off
    both float16 and channels_last, e.g. for exact comparisons or debugging.
    """
    if force_fp32:
        return torch.float32, torch.contiguous_format
    dtype = torch.float16 if (use_fp16 and device.type == 'cuda') else torch.float32
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return dtype, memory_format


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scales `x` to unit root-mean-square along `dim` (pixel norm of the latent codes).

    Args:
        x: Input tensor.
        dim: Dimension to normalise over.
        eps: Added to the mean square to avoid dividing by zero.

    Returns:
        Tensor of the same shape as `x`.
    """
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


# ---------------------------------------------------------------------------------------
# Basic layers.

@netfile.register
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalized learning rate; weight layout [out_features, in_features]."""

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,               # Whether to add a bias.
                 activation: str = 'linear',      # Activation name, see bias_act.
                 lr_multiplier: float = 1,        # Learning-rate multiplier of this layer.
                 bias_init: float = 0,            # Initial value of the bias.
                 ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        # Stored weights are unit variance / lr_multiplier; the run-time gain restores the scale.
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        # A linear layer with a bias is one fused matmul-add; otherwise go through bias_act.
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return bias_act.bias_act(x, b, act=self.activation)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'


@netfile.register
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalized learning rate, optional FIR up/downsampling, bias and activation."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 bias: bool = True,                          # Whether to add a bias.
                 activation: str = 'linear',                 # Activation name, see bias_act.
                 up: int = 1,                                # Integer upsampling factor.
                 down: int = 1,                              # Integer downsampling factor.
                 resample_filter: Sequence[int] = (1, 3, 3, 1),  # Low-pass filter for resampling.
                 conv_clamp: Optional[float] = None,         # Clamp outputs to +-X, None = off.
                 channels_last: bool = False,                # Weights in channels_last layout.
                 trainable: bool = True,                     # False: weights are frozen buffers.
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_tensor = torch.zeros([out_channels]) if bias else None
        # Frozen layers (discriminator freeze_layers) keep their weights as persistent buffers so
        # that they are saved and loaded but never handed to an optimiser.
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias_tensor) if bias_tensor is not None else None
        else:
            self.register_buffer('weight', weight)
            if bias_tensor is not None:
                self.register_buffer('bias', bias_tensor)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        # Upsampling convolutions are transposed, whose kernel orientation is already flipped.
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding, flip_weight=(self.up == 1))
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, '
                f'activation={self.activation}, up={self.up}, down={self.down}')


# ---------------------------------------------------------------------------------------
# Mapping network.

@netfile.register
class MappingNetwork(torch.nn.Module):
    """Maps latents z (and labels c) to intermediate latents w, broadcast to `num_ws` copies.

    Keeps a running average of w (`w_avg`) for the truncation trick.
    """

    def __init__(self,
                 z_dim: int,                           # Latent dimensionality, 0 = no latent.
                 c_dim: int,                           # Label dimensionality, 0 = unconditional.
                 w_dim: int,                           # Output dimensionality.
                 num_ws: Optional[int],                # Number of ws to output, None = no broadcast.
                 num_layers: int = 8,                  # Number of dense layers.
                 embed_features: Optional[int] = None,  # Label embedding width, None = w_dim.
                 layer_features: Optional[int] = None,  # Hidden width, None = w_dim.
                 activation: str = 'lrelu',            # Activation of the hidden layers.
                 lr_multiplier: float = 0.01,          # Learning-rate multiplier of the layers.
                 w_avg_beta: Optional[float] = 0.995,  # Decay of the w average, None = no tracking.
                 ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        # Normalised z and normalised label embedding are concatenated at the input.
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor], truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False) -> torch.Tensor:
        """Computes ws.

        Args:
            z: Latents [N, z_dim] (ignored when z_dim is 0).
            c: Labels [N, c_dim] (ignored when c_dim is 0).
            truncation_psi: 1 = no truncation; 0 = every w equals w_avg.
            truncation_cutoff: Truncate only the first this many ws; None = all of them.
            update_emas: Move `w_avg` toward the batch mean of w (training only).

        Returns:
            ws [N, num_ws, w_dim], or w [N, w_dim] when num_ws is None.
        """
        # Embed, normalise and concatenate the inputs.
        parts = []
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        if not parts:
            raise ValueError('MappingNetwork needs z_dim > 0 or c_dim > 0')
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        # Track the average w; only when asked, so that evaluation never moves it.
        if update_emas and self.w_avg_beta is not None and self.num_ws is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        # Truncation trick: pull ws toward the average, optionally only the coarse ones.
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError('Truncation needs w_avg, but this mapping network was built with w_avg_beta=None')
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                cutoff = int(truncation_cutoff)
                head = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
                x = torch.cat([head, x[:, cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'


# ---------------------------------------------------------------------------------------
# Synthesis network.

_demod_per_sample = False


@contextlib.contextmanager
def established_numerics() -> Iterator[None]:
    """The established code's order of summation where ours differs only by rounding, which
    makes forward and backward passes bit-identical to it (for side-by-side verification,
    benchmarks/compare_established.py; slower): demodulation coefficients from the per-sample
    weights, and upsampling of the skip images through a zero-filled canvas
    (`upfirdn2d.canvas_upsampling`)."""
    global _demod_per_sample  # pylint: disable=global-statement
    prev, _demod_per_sample = _demod_per_sample, True
    try:
        with upfirdn2d.canvas_upsampling():
            yield
    finally:
        _demod_per_sample = prev


def modulated_conv2d(x: torch.Tensor,                  # Input [N, in, H, W].
                     weight: torch.Tensor,             # Shared weight [out, in, kh, kw].
                     styles: torch.Tensor,             # Per-sample input scales [N, in].
                     noise: Optional[torch.Tensor] = None,  # Added noise, broadcast to [N, out, H', W'].
                     up: int = 1,
                     down: int = 1,
                     padding: int = 0,
                     resample_filter: Optional[torch.Tensor] = None,
                     demodulate: bool = True,
                     flip_weight: bool = True,
                     fused_modconv: bool = True,
                     ) -> torch.Tensor:
    """Modulated convolution of StyleGAN2 (Karras et al. 2020, sec. 2.2, eqs. 1-3).

    Each sample's weights are scaled per input channel by its styles and, with `demodulate`,
    renormalised to unit L2 norm per output channel.

    Args:
        x: Input activations [N, in, H, W].
        weight: Convolution weight [out, in, kh, kw], unscaled.
        styles: Modulation [N, in].
        noise: Optional noise added after the convolution (before the bias).
        up, down, padding, resample_filter, flip_weight: As for conv2d_resample.
        demodulate: Normalise each output channel's effective weights.
        fused_modconv: One grouped convolution over per-sample weights (faster for inference)
            instead of scaling the activations before and after a shared convolution.

    Returns:
        Output activations [N, out, H', W'] in the dtype of `x`.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    # In float16 the products below can overflow; rescaling by the max-norm first keeps them
    # in range and is undone exactly by demodulation.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw)
                           / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    # Demodulation coefficients (eq. 3): sum_{i,k} (s_i w_oik)^2 = sum_i s_i^2 sum_k w_oik^2,
    # one [N, in] x [in, out] matmul instead of building the per-sample [N, out, in, kh, kw]
    # weights (equal up to float rounding: the sum is taken in another order).
    w = None
    dcoefs = None
    if demodulate and _demod_per_sample:
        dcoefs = ((weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)).square().sum(dim=[2, 3, 4])
                  + 1e-8).rsqrt()
    elif demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, out]
    if fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, out, in, kh, kw]
        if demodulate:
            w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    if not fused_modconv:
        # Scale activations in, convolve with the shared weight, scale out (mathematically the
        # same as per-sample weights, and differentiable twice through plain convolutions).
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x + noise.to(x.dtype)
        return x

    # Fused: fold the batch into the channel axis and run one grouped convolution.
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


@netfile.register
class SynthesisLayer(torch.nn.Module):
    """Style-modulated 3x3 convolution with per-pixel noise, bias and activation."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 w_dim: int,                                 # Dimensionality of w.
                 resolution: int,                            # Output resolution.
                 kernel_size: int = 3,
                 up: int = 1,                                # Integer upsampling factor.
                 use_noise: bool = True,                     # Add per-pixel noise.
                 activation: str = 'lrelu',
                 resample_filter: Sequence[int] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None,
                 channels_last: bool = False,
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        # Styles start at 1 (bias_init=1) so that modulation is initially the identity.
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            # A fixed noise image makes noise_mode='const' reproducible across runs and files.
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = 'random',
                fused_modconv: bool = True, gain: float = 1) -> torch.Tensor:
        if noise_mode not in _NOISE_MODES:
            raise ValueError(f'Unknown noise_mode {noise_mode!r}; expected one of {", ".join(_NOISE_MODES)}')
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.in_channels, in_resolution, in_resolution])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)

        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')


@netfile.register
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation."""

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 w_dim: int,
                 kernel_size: int = 1,
                 conv_clamp: Optional[float] = None,
                 channels_last: bool = False,
                 ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation the equalized-lr gain is applied to the styles instead.
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False,
                             fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}'


@netfile.register
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (const or upsampling conv), conv, toRGB."""

    def __init__(self,
                 in_channels: int,                           # 0 = first block, starts from a learned constant.
                 out_channels: int,
                 w_dim: int,
                 resolution: int,                            # Resolution of this block.
                 img_channels: int,
                 is_last: bool,                              # Last block: always has a toRGB.
                 architecture: str = 'skip',                 # 'orig', 'skip' or 'resnet'.
                 resample_filter: Sequence[int] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None,
                 use_fp16: bool = False,
                 fp16_channels_last: bool = False,
                 fused_modconv_default: Union[bool, str, None] = None,  # True, False, 'inference_only' or None (auto).
                 **layer_kwargs: Any,                        # Further SynthesisLayer arguments.
                 ):
        _check_architecture(architecture, 'SynthesisBlock')
        if fused_modconv_default not in (None, True, False, 'inference_only'):
            raise ValueError(f'SynthesisBlock: fused_modconv_default must be True, False, \'inference_only\' '
                             f'or None, got {fused_modconv_default!r}')
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1

        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                force_fp32: bool = False, fused_modconv: Optional[bool] = None,
                update_emas: bool = False, **layer_kwargs: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """Runs the block.

        Args:
            x: Features from the previous block [N, in, res/2, res/2], None for the first block.
            img: Image so far (skip architecture), or None.
            ws: The block's ws [N, num_conv + num_torgb, w_dim].
            force_fp32: Compute in float32 even where float16 is enabled.
            fused_modconv: See modulated_conv2d; None = the block's fused_modconv_default, whose
                default None means fused in eval mode unless in float16 with a batch larger than 1.
            update_emas: Accepted for a uniform interface; the block tracks no averages.
            layer_kwargs: Passed to the synthesis layers (e.g. noise_mode).

        Returns:
            (x, img): features [N, out, res, res] and the float32 image [N, img_channels, res, res].
        """
        del update_emas
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype, memory_format = _block_precision(self.use_fp16, self.channels_last, force_fp32, ws.device)
        # Fused modulation is faster for inference; the unfused form trains better in float16.
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = not self.training
        if fused_modconv is None:
            fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        # Input: the learned constant for the first block, otherwise the previous features.
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)

        # Main layers; the resnet branch scales both paths by sqrt(1/2) to keep the variance.
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        # Image output: upsample the running image and add this block's toRGB (skip), or take
        # the last block's toRGB only (orig, resnet).
        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


@netfile.register
class SynthesisNetwork(torch.nn.Module):
    """Turns ws into images through blocks at resolutions 4, 8, ..., img_resolution."""

    def __init__(self,
                 w_dim: int,
                 img_resolution: int,                  # Output resolution, a power of two >= 4.
                 img_channels: int,
                 channel_base: int = 32768,            # Channels at resolution r: channel_base / r ...
                 channel_max: int = 512,               # ... capped at channel_max.
                 num_fp16_res: int = 0,                # float16 in this many highest resolutions.
                 **block_kwargs: Any,                  # Further SynthesisBlock arguments.
                 ):
        log2 = int(np.log2(img_resolution)) if img_resolution > 0 else 0
        if img_resolution < 4 or 2 ** log2 != img_resolution:
            raise ValueError(f'SynthesisNetwork: img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(2, log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)

        # Every block consumes one w per conv; the toRGB of a block shares the w of the next
        # block's first conv, so only the last block's toRGB adds a w of its own.
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=(res == img_resolution),
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_conv
            if res == img_resolution:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws: torch.Tensor, **block_kwargs: Any) -> torch.Tensor:
        """Synthesises images.

        Args:
            ws: Intermediate latents [N, num_ws, w_dim].
            block_kwargs: noise_mode ('random', 'const', 'none'), force_fp32, fused_modconv,
                update_emas.

        Returns:
            Images [N, img_channels, img_resolution, img_resolution], float32, roughly in [-1, 1].
        """
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}'


@netfile.register
class Generator(torch.nn.Module):
    """StyleGAN2 generator: mapping network followed by synthesis network."""

    def __init__(self,
                 z_dim: int,                                   # Latent dimensionality.
                 c_dim: int,                                   # Label dimensionality, 0 = none.
                 w_dim: int,                                   # Intermediate latent dimensionality.
                 img_resolution: int,
                 img_channels: int,
                 mapping_kwargs: Optional[Dict[str, Any]] = None,    # MappingNetwork arguments.
                 synthesis_kwargs: Optional[Dict[str, Any]] = None,  # SynthesisNetwork arguments.
                 **more_synthesis_kwargs: Any,                       # Merged into synthesis_kwargs.
                 ):
        # Later releases of the StyleGAN2 networks pass the synthesis arguments as keywords of
        # the generator itself; both layouts build the same network. Unknown names still fail
        # in the layer that would receive them.
        synthesis_kwargs = dict(synthesis_kwargs or {})
        for key in more_synthesis_kwargs:
            if key in synthesis_kwargs:
                raise ValueError(f'Generator: synthesis argument {key!r} given twice')
        synthesis_kwargs.update(more_synthesis_kwargs)
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    @property
    def block_resolutions(self) -> List[int]:
        return self.synthesis.block_resolutions

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: Optional[int] = None, update_emas: bool = False,
                **synthesis_kwargs: Any) -> torch.Tensor:
        """Generates images.

        Args:
            z: Latents [N, z_dim].
            c: Labels [N, c_dim] (may be [N, 0] for unconditional models).
            truncation_psi, truncation_cutoff: Truncation trick, see MappingNetwork.forward.
            update_emas: Update w_avg (training only).
            synthesis_kwargs: noise_mode, force_fp32, fused_modconv.

        Returns:
            Images [N, img_channels, img_resolution, img_resolution], float32.
        """
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)


# ---------------------------------------------------------------------------------------
# Discriminator.

@netfile.register
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of the discriminator: (fromRGB), conv, downsampling conv, (skip)."""

    def __init__(self,
                 in_channels: int,                           # 0 = first block, reads the image.
                 tmp_channels: int,                          # Channels of the intermediate conv.
                 out_channels: int,
                 resolution: int,                            # Input resolution of this block.
                 img_channels: int,
                 first_layer_idx: int,                       # Index of this block's first layer.
                 architecture: str = 'resnet',               # 'orig', 'skip' or 'resnet'.
                 activation: str = 'lrelu',
                 resample_filter: Sequence[int] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None,
                 use_fp16: bool = False,
                 fp16_channels_last: bool = False,
                 freeze_layers: int = 0,                     # Freeze layers with index < this.
                 ):
        _check_architecture(architecture, 'DiscriminatorBlock')
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'DiscriminatorBlock: in_channels must be 0 or tmp_channels ({tmp_channels}), '
                             f'got {in_channels}')
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(list(resample_filter)))

        # Layers are numbered across the whole discriminator from the input side (fromrgb,
        # conv0, conv1, skip per block); those below freeze_layers are frozen (FreezeD).
        self.num_layers = 0

        def next_trainable() -> bool:
            trainable = (first_layer_idx + self.num_layers) >= freeze_layers
            self.num_layers += 1
            return trainable

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=next_trainable(), conv_clamp=conv_clamp,
                                       channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=next_trainable(), conv_clamp=conv_clamp,
                                 channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=next_trainable(), resample_filter=resample_filter,
                                 conv_clamp=conv_clamp, channels_last=self.channels_last)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=next_trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor],
                force_fp32: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Runs the block.

        Args:
            x: Features [N, in, res, res], None for the first block.
            img: Image at this resolution [N, img_channels, res, res] where the block reads it.
            force_fp32: Compute in float32 even where float16 is enabled.

        Returns:
            (x, img): features [N, out, res/2, res/2] and the downsampled image (skip) or None.
        """
        device = x.device if x is not None else img.device
        dtype, memory_format = _block_precision(self.use_fp16, self.channels_last, force_fp32, device)

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)

        # Image input: the first block reads the image; skip blocks read a downsampled copy.
        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        # Main layers; the resnet branch scales both paths by sqrt(1/2) to keep the variance.
        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        assert x.dtype == dtype
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


@netfile.register
class MinibatchStdLayer(torch.nn.Module):
    """Appends the standard deviation across groups of samples as extra feature maps.

    (Karras et al. 2018, sec. 3.) Samples are grouped by stride: with group size G and batch
    N, group members are samples i, i + N/G, i + 2N/G, ...
    """

    def __init__(self, group_size: Optional[int], num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        f = self.num_channels
        if c % f != 0:
            raise ValueError(f'MinibatchStdLayer: {c} channels cannot be split into {f} groups')
        g = n if self.group_size is None else min(int(self.group_size), n)
        # A batch that the group size does not divide (e.g. a last partial batch) uses the
        # largest group size that divides it rather than failing.
        while n % g != 0:
            g -= 1

        y = x.reshape(g, -1, f, c // f, h, w)      # [G, N/G, F, C/F, H, W]
        y = y - y.mean(dim=0)                      # Deviation from the group mean.
        y = y.square().mean(dim=0)                 # Variance over the group.
        y = (y + 1e-8).sqrt()                      # Standard deviation.
        y = y.mean(dim=[2, 3, 4])                  # Average over channels and pixels: [N/G, F].
        y = y.reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w)                   # Back to [N, F, H, W].
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


@netfile.register
class DiscriminatorEpilogue(torch.nn.Module):
    """Final 4x4 stage: minibatch std, conv, dense layers, and the label projection."""

    def __init__(self,
                 in_channels: int,
                 cmap_dim: int,                              # Label embedding width, 0 = unconditional.
                 resolution: int,                            # Resolution of the input map (4).
                 img_channels: int,
                 architecture: str = 'resnet',
                 mbstd_group_size: Optional[int] = 4,        # Group size, None = whole batch.
                 mbstd_num_channels: int = 1,                # Minibatch std channels, 0 = off.
                 activation: str = 'lrelu',
                 conv_clamp: Optional[float] = None,
                 ):
        _check_architecture(architecture, 'DiscriminatorEpilogue')
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels) \
            if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: Optional[torch.Tensor], cmap: Optional[torch.Tensor],
                force_fp32: bool = False) -> torch.Tensor:
        """Computes logits [N, 1] from the 4x4 features (always in float32)."""
        del force_fp32
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        # Projection discriminator (Miyato & Koyama 2018): inner product with the label embedding.
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}, cmap_dim={self.cmap_dim}'


@netfile.register
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: blocks from img_resolution down to 8, then the 4x4 epilogue."""

    def __init__(self,
                 c_dim: int,                                 # Label dimensionality, 0 = none.
                 img_resolution: int,
                 img_channels: int,
                 architecture: str = 'resnet',               # 'orig', 'skip' or 'resnet'.
                 channel_base: int = 32768,
                 channel_max: int = 512,
                 num_fp16_res: int = 0,                      # float16 in this many highest resolutions.
                 conv_clamp: Optional[float] = None,
                 cmap_dim: Optional[int] = None,             # Label embedding width, None = channels at 4x4.
                 block_kwargs: Optional[Dict[str, Any]] = None,     # DiscriminatorBlock arguments.
                 mapping_kwargs: Optional[Dict[str, Any]] = None,   # MappingNetwork arguments (labels).
                 epilogue_kwargs: Optional[Dict[str, Any]] = None,  # DiscriminatorEpilogue arguments.
                 ):
        _check_architecture(architecture, 'Discriminator')
        log2 = int(np.log2(img_resolution)) if img_resolution > 0 else 0
        if img_resolution < 8 or 2 ** log2 != img_resolution:
            raise ValueError(f'Discriminator: img_resolution must be a power of two >= 8, got {img_resolution}')
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0
        self.cmap_dim = cmap_dim

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, first_layer_idx=layer_idx,
                                       use_fp16=(res >= fp16_resolution), **(block_kwargs or {}), **common)
            setattr(self, f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        **(epilogue_kwargs or {}), **common)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor], update_emas: bool = False,
                return_features: bool = False, **block_kwargs: Any
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """Scores images.

        Args:
            img: Images [N, img_channels, img_resolution, img_resolution].
            c: Labels [N, c_dim] (ignored when c_dim is 0).
            update_emas: Accepted for a uniform interface; D tracks no averages.
            return_features: Also return the [N, C, 4, 4] map that enters the epilogue
                (float32, e.g. for the InsGen contrastive heads).
            block_kwargs: force_fp32.

        Returns:
            Logits [N, 1], or (logits, features) with return_features.
        """
        del update_emas
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        # The epilogue computes in float32 anyway; heads that read the features get float32 too.
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        features = x

        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        logits = self.b4(x, img, cmap)
        if return_features:
            return logits, features
        return logits

    def extra_repr(self) -> str:
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'
