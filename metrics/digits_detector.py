"""A trained feature network for the built-in digits: a domain detector for FID and KID.

The Inception network of the established FID sees 299x299 photographs; on 8x8 handwritten
digits upscaled to 16 or 32 pixels its features say little, and its weights cannot be
fetched everywhere. As MNIST GAN papers do, the limited-data benchmark and the demo measure
a *domain FID* instead: the Frechet distance between the penultimate-layer features (128
values) of a small classifier trained on all 1,797 labelled digits. The number is
comparable only with other numbers from this same detector file, never with published
Inception FIDs.

The trained network ships as `digits-detector.pkl` beside this file, a network file of the
framework (data only, loaded through the restricted unpickler). `--detector=digits` in
`calc_metrics.py` and `train.py` selects it. Rebuild it with
`python -m metrics.digits_detector` (deterministic for a seed on one machine; prints the
accuracy of a held-out check).
"""

import os
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import netfile

DETECTOR_NAME = 'digits'
DETECTOR_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'digits-detector.pkl')
INPUT_RESOLUTION = 16


@netfile.register
class DigitFeatures(torch.nn.Module):
    """A small CNN: uint8-valued images (any channels and size) -> 128 features or 10 logits.

    The input is averaged to one channel and area-resized to 16x16, so it scores images of
    the demo (32x32), of the benchmark (16x16) and RGB renderings alike.
    """

    def __init__(self, features: int = 128, num_classes: int = 10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(32, 32, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64 * 4 * 4, features)
        self.out = torch.nn.Linear(features, num_classes)

    @staticmethod
    def prepare(images: torch.Tensor) -> torch.Tensor:
        """uint8-valued [N, C, H, W] -> float [N, 1, 16, 16] in [-1, 1]."""
        x = images.to(torch.float32).mean(dim=1, keepdim=True)
        if x.shape[2:] != (INPUT_RESOLUTION, INPUT_RESOLUTION):
            x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode='area')
        return x / 127.5 - 1

    def run(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        """The network on prepared images (see `prepare`)."""
        x = F.leaky_relu(self.conv1(x), 0.2)
        x = F.avg_pool2d(F.leaky_relu(self.conv2(x), 0.2), 2)     # 8x8
        x = F.avg_pool2d(F.leaky_relu(self.conv3(x), 0.2), 2)     # 4x4
        features = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return features if return_features else self.out(features)

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return self.run(self.prepare(images), return_features)


def digit_images(resolution: int = INPUT_RESOLUTION) -> Tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 [N, 1, R, R] (the demo's upscaling) and int labels [N]."""
    from training import demo_dataset  # pylint: disable=import-outside-toplevel
    images, labels = demo_dataset.load_digits_raw()
    up = np.stack([demo_dataset.upscale(img, resolution) for img in images])[:, None]
    return up, labels


def _shift(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random integer translations of up to `max_shift` pixels (zero fill), per image."""
    n, _, h, w = x.shape
    pad = F.pad(x, [max_shift] * 4, value=-1.0)
    dx = torch.randint(0, 2 * max_shift + 1, [n], generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, [n], generator=gen)
    return torch.stack([pad[i, :, int(dy[i]):int(dy[i]) + h, int(dx[i]):int(dx[i]) + w] for i in range(n)])


def train_digits_detector(seed: int = 0, epochs: int = 40, holdout: float = 0.0,
                          log=print) -> Tuple[DigitFeatures, Optional[float]]:
    """Trains the detector on the digits (all of them unless `holdout` > 0).

    Args:
        seed: Seed of the initial weights, the batch order and the shift augmentation.
        epochs: Passes over the training digits.
        holdout: Fraction kept out to measure the accuracy (0: train on all, no accuracy).
        log: Progress printer, or None.

    Returns:
        (network in eval mode, held-out accuracy or None).
    """
    images, labels = digit_images()
    x_all = DigitFeatures.prepare(torch.from_numpy(images))
    y_all = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y_all), generator=gen)
    n_test = int(round(holdout * len(y_all)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    torch.manual_seed(seed)
    net = DigitFeatures()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)

    def logits(x):  # On prepared images: the shift augmentation works in that space.
        return net.run(x, return_features=False)

    for epoch in range(epochs):
        net.train()
        perm = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for batch in perm.split(64):
            loss = F.cross_entropy(logits(_shift(x_all[batch], gen)), y_all[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        if log is not None and (epoch + 1) % 10 == 0:
            log(f'epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.4f}')
    net.eval().requires_grad_(False)
    accuracy = None
    if n_test:
        with torch.no_grad():
            accuracy = float((logits(x_all[test_idx]).argmax(1) == y_all[test_idx]).float().mean())
    return net, accuracy


def save_detector(net: DigitFeatures, path: str = DETECTOR_PATH) -> None:
    netfile.save_network_pickle(path, {'detector': net})


def resolve(spec: str) -> str:
    """Maps the built-in name 'digits' to the shipped file; other values pass through."""
    return DETECTOR_PATH if spec == DETECTOR_NAME else spec


def main() -> None:
    import argparse  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(description='Rebuild the digits detector (domain FID features).')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs', type=int, default=40)
    parser.add_argument('--out', default=DETECTOR_PATH)
    args = parser.parse_args()
    # Through the package, not __main__: the file must name the class metrics.digits_detector.DigitFeatures.
    from metrics import digits_detector as mod  # pylint: disable=import-outside-toplevel,import-self
    _net, acc = mod.train_digits_detector(seed=args.seed, epochs=args.epochs, holdout=0.2)
    print(f'held-out accuracy with 20% of the digits kept out: {acc:.4f}')
    net, _ = mod.train_digits_detector(seed=args.seed, epochs=args.epochs)
    mod.save_detector(net, args.out)
    print(f'Trained on all digits; saved {args.out}')


if __name__ == '__main__':
    main()
