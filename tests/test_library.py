"""docs/library.md: the example GAN built from our methods trains as written."""

import os
import re

import pytest
import torch

from torch_utils import training_stats
from training.heads import backbones as B

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'library.md')


def test_the_documented_gan_trains_with_every_method():
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    block = re.search(r'```python\n(.*?)```', text, re.S)
    # Blank lines before the block, so that tracebacks and warnings name the doc's own lines.
    code = '\n' * text.count('\n', 0, block.start(1)) + block.group(1)
    scope = {}
    exec(compile(code, DOC, 'exec'), scope)  # pylint: disable=exec-used
    name = 'vgg16_library_test'
    if name not in B.BACKBONES:
        B.register_backbone(name, B.VGG16Backbone, url=None, description='test only', width=1 / 16, resolution=32)
    torch.manual_seed(0)
    training_stats._reset()
    reals = torch.rand(32, 3, 16, 16) * 2 - 1
    G, history = scope['train'](reals, steps=24, batch=8, cv_backbone=name, cv_weights={name: 'random'},
                                  target=-1.0)
    assert len(history) == 24 and all(torch.isfinite(torch.tensor(h)).all() for h in history)
    assert G(torch.randn(2, 32)).shape == (2, 3, 16, 16)
    # With target -1 every reported sign is above target: the shared p must rise each interval,
    # which shows the statistic reaches the controller (24 steps of 8 = 6 rises of 32/500).
    assert history[-1][2] == pytest.approx(6 * 32 / 500)
    training_stats._reset()
