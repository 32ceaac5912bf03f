"""Named ADA pipelines: transform multipliers per preset (`--augpipe`).

Single groups (blit, geom, color, filter, noise, cutout) and the cumulative chains the ADA
paper evaluates (bg, bgc, bgcf, bgcfn, bgcfnc); bgc is the recommended default.
"""

from typing import Any, Dict

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
_FILTER = dict(imgfilter=1)
_NOISE = dict(noise=1)
_CUTOUT = dict(cutout=1)

ADA_PRESETS: Dict[str, Dict[str, Any]] = {
    'blit': dict(_BLIT),
    'geom': dict(_GEOM),
    'color': dict(_COLOR),
    'filter': dict(_FILTER),
    'noise': dict(_NOISE),
    'cutout': dict(_CUTOUT),
    'bg': {**_BLIT, **_GEOM},
    'bgc': {**_BLIT, **_GEOM, **_COLOR},
    'bgcf': {**_BLIT, **_GEOM, **_COLOR, **_FILTER},
    'bgcfn': {**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE},
    'bgcfnc': {**_BLIT, **_GEOM, **_COLOR, **_FILTER, **_NOISE, **_CUTOUT},
}


def ada_kwargs(preset: str, **overrides: Any) -> Dict[str, Any]:
    """Config-tree entry for an ADA pipeline: {'class_name': ..., multipliers..., overrides}.

    Args:
        preset: A key of ADA_PRESETS.
        **overrides: Further AugmentPipe keywords, e.g. p=0.2 or name='ada'.

    Returns:
        A new dict suitable for AugmentStage's `augments` list.

    Raises:
        ValueError: `preset` is not a known preset.
    """
    if preset not in ADA_PRESETS:
        raise ValueError(f'Unknown ADA preset {preset!r}; expected one of {", ".join(ADA_PRESETS)}')
    return {'class_name': 'training.augment.ada.AugmentPipe', **ADA_PRESETS[preset], **overrides}
