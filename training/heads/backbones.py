"""Frozen pretrained backbones of the vision-aided discriminator (Kumari et al. 2022).

Each backbone is a `Backbone` module: it maps images in [-1, 1] (any resolution, 1 or 3
channels) to a list of feature levels. Preprocessing is part of the module: [-1, 1] -> [0, 1],
grey -> RGB, area resize to the backbone's input size (224), then the normalisation the
backbone was trained with. A backbone is frozen: eval mode always, no parameter requires
gradients; gradients still flow through it to its input (the G step needs them).

Registered backbones and their feature levels at 224x224 (documented in
docs/vision_aided.md; `feature_shapes()` gives them without building the network):

    clip   CLIP ViT-B/32 (OpenAI)   [768, 7, 7] after block 4, [768, 7, 7] after block 8,
                                    [512] final image embedding
    dino   DINO ViT-B/16            [768, 14, 14] after block 4, [768, 14, 14] after block 8,
                                    [768] final CLS token
    swin   Swin-T (ImageNet-1k)     [768, 7, 7] final map
    vgg16  VGG16 (ImageNet)         [512, 28, 28] relu4_3, [512, 14, 14] relu5_3

The last level is the single-level feature (used by the non-multilevel losses).

Weights come from the official location of each model through dnnlib's download cache, or
from a local file; `weights='random'` keeps the random initialisation (tests, benchmarks).
Files are read as data only: safetensors, or torch.load(weights_only=True).

The architectures come from open_clip (CLIP) and timm (DINO, Swin); both are imported
lazily so that the rest of the framework does not need them.
"""

import dataclasses
import importlib
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

import dnnlib

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_WEIGHTS = 'random'     # The `weights` value that keeps the random initialisation.

FeatureShape = Tuple[int, ...]


class BackboneError(RuntimeError):
    """A backbone cannot be built or its weights cannot be read."""


def require(module: str, package: str) -> Any:
    """Imports an optional dependency, or raises BackboneError naming the pip package.

    Args:
        module: Module to import (e.g. 'open_clip').
        package: pip package that provides it (e.g. 'open-clip-torch').
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise BackboneError(f'The vision-aided discriminator needs the package {package!r} '
                            f'(pip install {package}); importing {module!r} failed: {e}') from e


# ---------------------------------------------------------------------------------------
# The backbone module.

class Backbone(torch.nn.Module):
    """A frozen feature extractor with its own preprocessing.

    Subclasses build `self.net` in `build()` and implement `extract(x) -> [levels]` on
    normalised [N, 3, S, S] input; `convert_state_dict` maps a weights file onto `self.net`.

    Args:
        resolution: Input size of the network (224 for the pretrained models).
    """

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD

    def __init__(self, resolution: int = 224):
        super().__init__()
        self.resolution = int(resolution)
        self.net = self.build()
        self.register_buffer('norm_mean', torch.tensor(self.mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('norm_std', torch.tensor(self.std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.freeze()

    # Subclass interface.
    def build(self) -> torch.nn.Module:
        raise NotImplementedError

    def extract(self, x: torch.Tensor) -> List[torch.Tensor]:
        raise NotImplementedError

    @classmethod
    def feature_shapes(cls, resolution: int = 224, **kwargs: Any) -> List[FeatureShape]:
        """Shapes of the feature levels (without the batch axis) for an input size."""
        raise NotImplementedError

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Maps the tensors of a weights file onto the names of `self.net`."""
        return dict(state)

    # Common behaviour.
    def freeze(self) -> 'Backbone':
        """Eval mode and no parameter gradients (no optimizer may ever update a backbone)."""
        super().train(False)
        self.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> 'Backbone':
        # Always eval: dropout and the like stay off, whatever the caller's mode.
        del mode
        return super().train(False)

    def preprocess(self, img: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] in [-1, 1] (C = 1 or 3) -> normalised [N, 3, S, S] (area resize)."""
        if img.ndim != 4 or img.shape[1] not in (1, 3):
            raise ValueError(f'{type(self).__name__}: expected images [N, 1 or 3, H, W], got {tuple(img.shape)}')
        x = (img.to(torch.float32) + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode='area')
        return (x - self.norm_mean) / self.norm_std

    def forward(self, img: torch.Tensor) -> List[torch.Tensor]:
        """Feature levels of images in [-1, 1]; see `feature_shapes`."""
        return self.extract(self.preprocess(img))

    def load_weights(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Loads a weights file's tensors strictly into `self.net`.

        Raises:
            BackboneError: names missing / unexpected tensors and the file.
        """
        converted = self.convert_state_dict(state)
        try:
            result = self.net.load_state_dict(converted, strict=False)
        except RuntimeError as e:   # Shape mismatches.
            raise BackboneError(f'{source} does not fit the {type(self).__name__} architecture: '
                               f'{" ".join(str(e).split())}') from e
        if result.missing_keys or result.unexpected_keys:
            raise BackboneError(
                f'{source} does not fit the {type(self).__name__} architecture: missing '
                f'{_short(result.missing_keys)}; unexpected {_short(result.unexpected_keys)}')
        self.freeze()


def _short(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    if not names:
        return 'none'
    return ', '.join(names[:limit]) + (f' ... ({len(names) - limit} more)' if len(names) > limit else '')


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries under `prefix`, renamed without it, when any exist; else all entries."""
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


# ---------------------------------------------------------------------------------------
# The four backbones.

class CLIPBackbone(Backbone):
    """CLIP ViT-B/32 image tower (QuickGELU, as OpenAI trained it): token maps after blocks
    4 and 8 plus the final image embedding."""

    mean, std = CLIP_MEAN, CLIP_STD
    BLOCKS = (4, 8)

    def build(self) -> torch.nn.Module:
        open_clip = require('open_clip', 'open-clip-torch')
        # open_clip logs a warning for every model built without weights; we load our own.
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            model = open_clip.create_model('ViT-B-32', pretrained=None, quick_gelu=True,
                                           force_image_size=self.resolution)
        finally:
            logger.setLevel(level)
        return model.visual

    def extract(self, x: torch.Tensor) -> List[torch.Tensor]:
        out = self.net.forward_intermediates(x, indices=[b - 1 for b in self.BLOCKS])
        return list(out['image_intermediates']) + [out['image_features']]

    @classmethod
    def feature_shapes(cls, resolution: int = 224, **kwargs: Any) -> List[FeatureShape]:
        grid = resolution // 32
        return [(768, grid, grid)] * len(cls.BLOCKS) + [(512,)]

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # A full open_clip model (image and text towers) or the image tower alone.
        return _strip_prefix(state, 'visual.')


class DINOBackbone(Backbone):
    """DINO ViT-B/16: token maps after blocks 4 and 8 plus the final (normalised) CLS token."""

    BLOCKS = (4, 8)

    def build(self) -> torch.nn.Module:
        timm = require('timm', 'timm')
        return timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                                 img_size=self.resolution)

    def extract(self, x: torch.Tensor) -> List[torch.Tensor]:
        final, maps = self.net.forward_intermediates(x, indices=[b - 1 for b in self.BLOCKS], output_fmt='NCHW')
        return list(maps) + [final[:, 0]]

    @classmethod
    def feature_shapes(cls, resolution: int = 224, **kwargs: Any) -> List[FeatureShape]:
        grid = resolution // 16
        return [(768, grid, grid)] * len(cls.BLOCKS) + [(768,)]

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # The published file is the teacher backbone; full training checkpoints nest it.
        if 'teacher' in state and isinstance(state['teacher'], Mapping):
            state = state['teacher']
        state = _strip_prefix(_strip_prefix(state, 'module.'), 'backbone.')
        return {k: v for k, v in state.items() if not k.startswith('head.')}


class SwinBackbone(Backbone):
    """Swin-T (patch 4, window 7) trained on ImageNet-1k: the final feature map."""

    def build(self) -> torch.nn.Module:
        timm = require('timm', 'timm')
        return timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, num_classes=0,
                                 img_size=self.resolution)

    def extract(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [self.net.forward_features(x).permute(0, 3, 1, 2)]   # NHWC -> NCHW

    @classmethod
    def feature_shapes(cls, resolution: int = 224, **kwargs: Any) -> List[FeatureShape]:
        return [(768, resolution // 32, resolution // 32)]

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # The Microsoft release stores {'model': state} with its own layer layout; timm's
        # converter maps it (and drops the non-persistent index buffers).
        from timm.models import swin_transformer  # pylint: disable=import-outside-toplevel
        state = swin_transformer.checkpoint_filter_fn(dict(state), self.net)
        return {k: v for k, v in state.items() if not k.startswith('head.')}


class VGG16Backbone(Backbone):
    """VGG16 convolutional features: relu4_3 and relu5_3 (torchvision's layer numbering).

    Args:
        width: Channel multiplier (1 = the real VGG16; smaller only for tests).
        resolution: Input size.
    """

    CONFIG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)
    TAPS = (22, 29)   # Indices of relu4_3 and relu5_3 in torchvision's vgg16().features.

    def __init__(self, width: float = 1.0, resolution: int = 224):
        self.width = float(width)
        super().__init__(resolution=resolution)

    def build(self) -> torch.nn.Module:
        layers: List[torch.nn.Module] = []
        channels = 3
        for item in self.CONFIG:
            if item == 'M':
                layers.append(torch.nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out = max(int(round(item * self.width)), 1)
                layers += [torch.nn.Conv2d(channels, out, kernel_size=3, padding=1), torch.nn.ReLU(inplace=False)]
                channels = out
        net = torch.nn.Module()
        net.features = torch.nn.Sequential(*layers)
        return net

    def extract(self, x: torch.Tensor) -> List[torch.Tensor]:
        levels = []
        for index, layer in enumerate(self.net.features):
            x = layer(x)
            if index in self.TAPS:
                levels.append(x)
        return levels

    @classmethod
    def feature_shapes(cls, resolution: int = 224, width: float = 1.0, **kwargs: Any) -> List[FeatureShape]:
        c = max(int(round(512 * width)), 1)
        return [(c, resolution // 8, resolution // 8), (c, resolution // 16, resolution // 16)]

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        # torchvision's file also holds the classifier, which the features do not use.
        return {k: v for k, v in state.items() if k.startswith('features.')}


# ---------------------------------------------------------------------------------------
# Registry.

@dataclasses.dataclass
class BackboneSpec:
    """A registered backbone: its class, constructor keywords and official weights URL."""
    name: str
    cls: type
    kwargs: Dict[str, Any]
    url: Optional[str]
    description: str

    def feature_shapes(self) -> List[FeatureShape]:
        """Shapes of the feature levels, without building the network."""
        return self.cls.feature_shapes(**self.kwargs)

    def build(self) -> Backbone:
        """The architecture with random weights (frozen)."""
        return self.cls(**self.kwargs)


BACKBONES: Dict[str, BackboneSpec] = {}


def register_backbone(name: str, cls: type, url: Optional[str], description: str = '',
                      **kwargs: Any) -> BackboneSpec:
    """Adds a backbone to the registry (the CLI validates `--cv` against it).

    Args:
        name: Short name used in `--cv` (letters, digits, '_' and '-'; no '+').
        cls: A Backbone subclass.
        url: Official weights location (http(s)), or None when there is none.
        description: One line for listings.
        **kwargs: Constructor keywords of `cls`.

    Returns:
        The registered BackboneSpec.
    """
    if not name or '+' in name or '=' in name or not name.replace('_', '').replace('-', '').isalnum():
        raise ValueError(f'Backbone name {name!r} must be made of letters, digits, "_" and "-"')
    if not (isinstance(cls, type) and issubclass(cls, Backbone)):
        raise ValueError(f'Backbone {name!r}: {cls!r} is not a Backbone subclass')
    spec = BackboneSpec(name=name, cls=cls, kwargs=dict(kwargs), url=url, description=description)
    BACKBONES[name] = spec
    return spec


register_backbone(
    'clip', CLIPBackbone, description='CLIP ViT-B/32 (OpenAI weights)',
    url='https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/open_clip_model.safetensors')
register_backbone(
    'dino', DINOBackbone, description='DINO ViT-B/16',
    url='https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth')
register_backbone(
    'swin', SwinBackbone, description='Swin-T, ImageNet-1k',
    url='https://github.com/SwinTransformer/storage/releases/download/v1.0.0/swin_tiny_patch4_window7_224.pth')
register_backbone(
    'vgg16', VGG16Backbone, description='VGG16, ImageNet (torchvision)',
    url='https://download.pytorch.org/models/vgg16-397923af.pth')


def get_spec(name: str) -> BackboneSpec:
    """The registered backbone `name`; KeyError listing the known names otherwise."""
    if name not in BACKBONES:
        raise KeyError(f'unknown backbone {name!r}; choose from {", ".join(BACKBONES)} (combine with "+")')
    return BACKBONES[name]


def parse_backbones(value: str) -> List[str]:
    """Splits and validates a backbone list such as 'clip+dino' (',' also accepted).

    Raises:
        ValueError: empty list, unknown or repeated name (the message lists the known names).
    """
    names = [n.strip() for n in str(value).replace(',', '+').split('+') if n.strip()]
    if not names:
        raise ValueError(f'no backbone in {value!r}; choose from {", ".join(BACKBONES)} (combine with "+")')
    for n in names:
        get_spec(n)
    if len(set(names)) != len(names):
        raise ValueError(f'backbone listed twice in {value!r}')
    return names


def parse_weights(items: Sequence[str]) -> Dict[str, str]:
    """Parses repeated NAME=PATH values (PATH may be 'random') into {name: path}.

    Raises:
        ValueError: a malformed item, an unknown backbone name or a name given twice.
    """
    out: Dict[str, str] = {}
    for item in items or ():
        name, sep, path = str(item).partition('=')
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise ValueError(f'{item!r} is not NAME=PATH (e.g. clip=weights/clip.safetensors, or vgg16=random)')
        get_spec(name)
        if name in out:
            raise ValueError(f'weights for {name!r} given twice')
        out[name] = path
    return out


# ---------------------------------------------------------------------------------------
# Weights.

def read_weights_file(path: str) -> Dict[str, torch.Tensor]:
    """Reads a weights file as data: safetensors, or a torch file with weights_only=True.

    A torch file may hold the state dict itself or nest it under 'state_dict' or 'model'.

    Raises:
        BackboneError: the file cannot be read as tensors (the message names it).
    """
    try:
        if path.endswith('.safetensors'):
            safetensors_torch = require('safetensors.torch', 'safetensors')
            return dict(safetensors_torch.load_file(path, device='cpu'))
        data = torch.load(path, map_location='cpu', weights_only=True)
    except BackboneError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise BackboneError(f'Cannot read backbone weights from {path}: {type(e).__name__}: {e}. Expected a '
                            f'.safetensors file or a PyTorch state dict (read with weights_only=True).') from e
    for key in ('state_dict', 'model'):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, (torch.Tensor, dict)) for v in data.values()):
        raise BackboneError(f'{path} does not hold a state dict of tensors')
    return data


def resolve_weights_path(name: str, weights: Optional[str] = None) -> Optional[str]:
    """A local file with the weights of backbone `name`: `weights` if given, else the
    official file through the download cache. None for `weights='random'`.

    Raises:
        BackboneError: the local file does not exist, or the download failed; the message
            names the file and the two ways to provide it.
    """
    spec = get_spec(name)
    if weights == RANDOM_WEIGHTS:
        return None
    if weights is not None:
        if not os.path.isfile(weights):
            raise BackboneError(f'--cv-weights {name}={weights}: no such file')
        return weights
    if spec.url is None:
        raise BackboneError(f'Backbone {name!r} has no official weights location; give a file with '
                            f'--cv-weights {name}=PATH (or {name}=random for random weights)')
    try:
        return dnnlib.open_url(spec.url, return_filename=True, verbose=True)
    except Exception as e:  # pylint: disable=broad-except
        raise BackboneError(
            f'Cannot get the weights of backbone {name!r} from {spec.url} ({type(e).__name__}: {e}). '
            f'Download that file by hand and pass it with --cv-weights {name}=PATH, or place it in the '
            f'download cache ({dnnlib.make_cache_dir_path("downloads")}; see docs/vision_aided.md).') from e


def build_backbone(name: str, weights: Optional[str] = None,
                   device: Optional[torch.device] = None) -> Backbone:
    """Builds a registered backbone, loads its weights and freezes it.

    Args:
        name: Registered name ('clip', 'dino', 'swin', 'vgg16', ...).
        weights: None (official file via the cache), a local path, or 'random'.
        device: Where to put it.

    Returns:
        The frozen Backbone in eval mode.

    Raises:
        BackboneError: missing package, unreadable or missing weights (naming the file).
    """
    spec = get_spec(name)
    path = resolve_weights_path(name, weights)   # Before the (slow) build: fail fast.
    backbone = spec.build()
    if path is not None:
        backbone.load_weights(read_weights_file(path), source=path)
    backbone.name = name
    if device is not None:
        backbone.to(device)
    return backbone.freeze()


def build_backbones(names: Sequence[str], weights: Optional[Mapping[str, str]] = None,
                    device: Optional[torch.device] = None) -> Dict[str, Backbone]:
    """`build_backbone` for each name; `weights` maps names to local paths or 'random'."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise BackboneError(f'--cv-weights names {", ".join(unknown)}, which --cv does not list ({"+".join(names)})')
    return {n: build_backbone(n, weights.get(n), device) for n in names}
