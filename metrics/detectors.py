"""Feature detectors for the metrics: finding, loading and calling them.

Two roles exist. 'inception' (FID, KID, IS) is the Inception-v3 TorchScript network
published with stylegan2-ada-pytorch; 'vgg16' (precision/recall, PPL) is its VGG16
TorchScript network with the LPIPS head. An official detector is looked up, in order, in
a user directory (`detector_dir` argument, `--detector-dir`, or `$GAN_METRICS_DETECTOR_DIR`),
in `<cache>/detectors/`, and finally fetched from its URL through `dnnlib.open_url`'s
on-disk cache. Any other TorchScript file or network file can replace a detector
(`--detector`), e.g. a CLIP image encoder for CLIP-feature FID, or a small test network.

A detector is called as `detector(images, **kwargs)` with uint8-valued NCHW images and the
keyword arguments of the established protocol (`return_features=True`,
`no_output_bias=True`, `return_lpips=True`, `resize_images=False`); keyword arguments that
a replacement's `forward` does not declare are left out, so a plain `forward(x)` works.
"""

import copy
import hashlib
import inspect
import io
import os
import threading
import warnings
from typing import Any, Dict, Optional, Union

import torch

import dnnlib

from . import digits_detector

# ---------------------------------------------------------------------------------------
# The official detectors.

DETECTOR_BASE_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/'
OFFICIAL_DETECTORS = {
    'inception': 'inception-2015-12-05.pt',  # FID, KID, IS.
    'vgg16': 'vgg16.pt',                     # Precision/recall, PPL (LPIPS).
}
DETECTOR_DIR_ENV = 'GAN_METRICS_DETECTOR_DIR'

DetectorSpec = Union[None, str, torch.nn.Module, 'Detector']


def official_detector_url(role: str) -> str:
    """Returns the download URL of the official detector for a role ('inception' or 'vgg16')."""
    return DETECTOR_BASE_URL + OFFICIAL_DETECTORS[role]


def local_detector_dir() -> str:
    """Returns the cache folder where official detector files may be placed by hand."""
    return dnnlib.make_cache_dir_path('detectors')


class DetectorNotFoundError(RuntimeError):
    """Raised when an official detector is neither on disk nor downloadable."""


# ---------------------------------------------------------------------------------------
# The callable wrapper.

def _forward_arg_names(module: torch.nn.Module) -> Optional[set]:
    """Names of the keyword arguments `module.forward` accepts; None when it takes **kwargs."""
    schema = getattr(module.forward, 'schema', None)
    if schema is not None:  # TorchScript: the compiled schema lists the arguments.
        return {a.name for a in schema.arguments}
    params = inspect.signature(module.forward).parameters.values()
    if any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


class Detector:
    """A feature network with a name and an identity for the statistics cache.

    Attributes:
        module: the network (eval mode, no gradients).
        name: short name used in cache file names, e.g. 'inception-2015-12-05'.
        identity: string that changes whenever the network's weights may differ (official
            file name, or an MD5 of a replacement's file or parameters).
    """

    def __init__(self, module: torch.nn.Module, name: str, identity: str):
        self.module = module.eval()
        for param in module.parameters():  # requires_grad_() is unavailable on TorchScript modules.
            param.requires_grad_(False)
        self.name = name
        self.identity = identity
        self._accepted = _forward_arg_names(module)

    def __call__(self, images: torch.Tensor, **kwargs) -> torch.Tensor:
        """Runs the network on uint8-valued NCHW images; drops keywords it does not take."""
        if self._accepted is not None:
            kwargs = {k: v for k, v in kwargs.items() if k in self._accepted}
        with torch.no_grad():
            return self.module(images, **kwargs)

    def to(self, device: torch.device) -> 'Detector':
        self.module = self.module.to(device)
        return self

    def __repr__(self) -> str:
        return f'Detector({self.name!r})'


# ---------------------------------------------------------------------------------------
# Loading.

def _jit_load(f, device: torch.device) -> torch.nn.Module:
    # The detectors are published as TorchScript; its deprecation notice is not actionable here.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', FutureWarning)
        return torch.jit.load(f, map_location=device)


def _md5_of_file(path: str) -> str:
    md5 = hashlib.md5()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            md5.update(chunk)
    return md5.hexdigest()


def _md5_of_module(module: torch.nn.Module) -> str:
    """Hash of a module's class and tensors: identifies an in-memory replacement detector."""
    md5 = hashlib.md5(type(module).__qualname__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        md5.update(name.encode())
        md5.update(tensor.detach().to('cpu').contiguous().numpy().tobytes())
    return md5.hexdigest()


def _module_from_network_file(path: str) -> torch.nn.Module:
    """Picks the feature network out of a network file: key 'detector', or its only module."""
    from torch_utils import netfile
    data = netfile.load_network(path)
    if isinstance(data, torch.nn.Module):
        return data
    if isinstance(data, dict):
        if isinstance(data.get('detector'), torch.nn.Module):
            return data['detector']
        modules = [v for v in data.values() if isinstance(v, torch.nn.Module)]
        if len(modules) == 1:
            return modules[0]
    raise ValueError(f'Detector file "{path}" is a network file, but holds no module under the '
                     f'key "detector" and no single module to use as one.')


def load_detector_file(path: str, device: torch.device = torch.device('cpu'),
                       name: Optional[str] = None, identity: Optional[str] = None) -> Detector:
    """Loads a detector from a TorchScript file, or from a network file of this framework.

    Args:
        path: local file.
        device: where the network runs.
        name: short name for cache files; default: the file name without extension.
        identity: cache identity; default: the file name and an MD5 of its contents.

    Returns:
        The Detector.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f'Detector file "{path}" does not exist.')
    if name is None:
        name = os.path.splitext(os.path.basename(path))[0]
    if identity is None:
        identity = f'{os.path.basename(path)}:{_md5_of_file(path)}'
    try:
        module = _jit_load(path, device)
    except Exception as jit_error:  # pylint: disable=broad-except
        # Not TorchScript: try the framework's own (safe) network-file format.
        try:
            module = _module_from_network_file(path)
        except Exception as net_error:  # pylint: disable=broad-except
            raise ValueError(f'Detector file "{path}" is neither a TorchScript file '
                             f'({jit_error.__class__.__name__}: {str(jit_error).splitlines()[0] if str(jit_error) else ""}) '
                             f'nor a network file ({net_error}).') from net_error
    return Detector(module.to(device), name=name, identity=identity)


def _find_official_file(role: str, detector_dir: Optional[str]) -> Optional[str]:
    """Looks for an official detector file in the user directory and the cache folder."""
    filename = OFFICIAL_DETECTORS[role]
    dirs = [detector_dir, os.environ.get(DETECTOR_DIR_ENV), local_detector_dir()]
    for d in dirs:
        if d and os.path.isfile(os.path.join(d, filename)):
            return os.path.join(d, filename)
    return None


def load_official_detector(role: str, device: torch.device = torch.device('cpu'),
                           detector_dir: Optional[str] = None) -> Detector:
    """Loads the official detector of a role from disk, downloading it on first use.

    Args:
        role: 'inception' or 'vgg16'.
        device: where the network runs.
        detector_dir: optional folder holding the official file (checked first).

    Returns:
        The Detector.

    Raises:
        DetectorNotFoundError: the file is not on disk and cannot be downloaded; the message
            names the file, its URL and where to put it.
    """
    if role not in OFFICIAL_DETECTORS:
        raise ValueError(f'Unknown detector role "{role}"; expected one of {sorted(OFFICIAL_DETECTORS)}.')
    filename = OFFICIAL_DETECTORS[role]
    name = os.path.splitext(filename)[0]
    path = _find_official_file(role, detector_dir)
    if path is not None:
        return load_detector_file(path, device, name=name, identity=filename)

    # Not on disk: fetch through the shared download cache.
    url = official_detector_url(role)
    try:
        with dnnlib.open_url(url) as f:
            data = f.read()
    except Exception as e:  # pylint: disable=broad-except
        raise DetectorNotFoundError(_not_found_message(role, detector_dir, e)) from e
    module = _jit_load(io.BytesIO(data), device)
    return Detector(module, name=name, identity=filename)


def _not_found_message(role: str, detector_dir: Optional[str], error: BaseException) -> str:
    filename = OFFICIAL_DETECTORS[role]
    places = [os.path.join(local_detector_dir(), filename)]
    if detector_dir:
        places.insert(0, os.path.join(detector_dir, filename))
    return (f'The {role} feature detector "{filename}" is needed but could not be loaded.\n'
            f'  Download failed: {error}\n'
            f'  Fetch it on a machine with internet access from\n    {official_detector_url(role)}\n'
            f'  and put it at\n    ' + '\n    '.join(places) + '\n'
            f'  or in a folder given with --detector-dir or ${DETECTOR_DIR_ENV}.')


def ensure_official_detector(role: str, detector_dir: Optional[str] = None) -> str:
    """The path of the official detector file of a role, downloaded now if it is not on disk.

    Training calls this at start for every metric it will compute, so a missing detector
    fails before the first step rather than at the first snapshot hours later.

    Raises:
        DetectorNotFoundError: neither on disk nor downloadable (the message says where to put it).
    """
    if role not in OFFICIAL_DETECTORS:
        raise ValueError(f'Unknown detector role "{role}"; expected one of {sorted(OFFICIAL_DETECTORS)}.')
    path = _find_official_file(role, detector_dir)
    if path is not None:
        return path
    try:
        return dnnlib.open_url(official_detector_url(role), return_filename=True, num_attempts=2)
    except Exception as e:  # pylint: disable=broad-except
        raise DetectorNotFoundError(_not_found_message(role, detector_dir, e)) from e


# Loaded detectors, shared by all metrics of a process: (role, spec key, device) -> Detector.
_cache: Dict[Any, Detector] = {}
_cache_lock = threading.Lock()


def get_detector(role: str, spec: DetectorSpec = None, device: Any = 'cpu',
                 detector_dir: Optional[str] = None) -> Detector:
    """Returns the detector for a role, loading it once per process and device.

    Args:
        role: 'inception' (FID/KID/IS) or 'vgg16' (PR/PPL).
        spec: None for the official network; a path to a TorchScript or network file, or
            'digits' for the shipped digits detector (`metrics/digits_detector.py`); an
            `nn.Module` or `Detector` object; or a dict {role: one of those} to replace only
            some roles.
        device: where the network runs.
        detector_dir: folder searched first for the official files.

    Returns:
        The Detector, on `device`.
    """
    device = torch.device(device)
    if isinstance(spec, dict):
        spec = spec.get(role)
    if isinstance(spec, str):
        spec = digits_detector.resolve(spec)   # The built-in name 'digits'.
    if isinstance(spec, Detector):
        return spec.to(device)
    if isinstance(spec, torch.nn.Module):
        key = (role, 'module', id(spec), str(device))
    elif spec is None:
        key = (role, 'official', detector_dir, str(device))
    elif isinstance(spec, str):
        key = (role, 'file', os.path.abspath(spec), os.path.getmtime(spec) if os.path.exists(spec) else None, str(device))
    else:
        raise TypeError(f'Unsupported detector specification of type {type(spec).__name__}.')
    with _cache_lock:
        if key not in _cache:
            if isinstance(spec, torch.nn.Module):
                # Leave the caller's module where it is: move a copy when it lives elsewhere.
                tensors = list(spec.parameters()) + list(spec.buffers())
                module = spec if all(t.device == device for t in tensors) else copy.deepcopy(spec).to(device)
                _cache[key] = Detector(module, name=type(spec).__name__.lower(),
                                       identity=f'module:{_md5_of_module(spec)}')
            elif spec is None:
                _cache[key] = load_official_detector(role, device, detector_dir)
            else:
                _cache[key] = load_detector_file(spec, device)
        return _cache[key]


def parse_detector_option(values) -> Union[None, str, Dict[str, str]]:
    """Turns repeated `--detector` values ('PATH' or 'ROLE=PATH') into a spec for get_detector.

    A bare PATH replaces every role; ROLE=PATH replaces only that role.
    """
    values = [v for v in (values or []) if v]
    if not values:
        return None
    # Bare paths first, so that ROLE=PATH entries override them whatever the order given.
    spec: Dict[str, str] = {}
    for v in values:
        role, sep, _path = v.partition('=')
        if not (sep and role in OFFICIAL_DETECTORS):
            spec.update({r: v for r in OFFICIAL_DETECTORS})
    for v in values:
        role, sep, path = v.partition('=')
        if sep and role in OFFICIAL_DETECTORS:
            spec[role] = path
    return spec
