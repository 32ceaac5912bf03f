"""Augmentation stage of the training loop.

- `ada`: the ADA pipeline (AugmentPipe) and its presets (`presets`);
- `diffaugment`: DiffAugment policies;
- `apa`: adaptive pseudo augmentation of the real batch (PseudoAugment);
- `adaptive`: the controller that moves a `p` toward a target statistic (AdaptiveP);
- `stage`: the module that chains augmentations in front of D (AugmentStage).
"""
