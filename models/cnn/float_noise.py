"""Two models whose outputs amplify float32 rounding past the exact check's static tolerance,
as real text detectors and recognisers do (regression models for the noise floor; not in
``CNN_MODELS``: they exist for the exact check's tests and bench/bench_noise_floor.py).

- ``text_detector``: a DBNet-like probability map. Conv-BN-ReLU backbone, a head that
  upsamples with ConvTranspose, and a bias of -9 before the Sigmoid, so that on random inputs
  the map lies near 1e-4. onnxruntime's Sigmoid is accurate to ~1e-7 absolute there (0.1%
  relative): a logit that moves by one ulp moves the map by a step of 2^-23, ~0.1% of its
  scale, ten times the static rtol.
- ``text_recognizer``: a CRNN-like deep float path: 16 3x3 convolutions without
  normalisation (He-initialised, so the input carries through), each summing 288 products,
  pooled over height into frames, centred per channel over the frames, a bias-free classifier
  whose logits spread ~10 apart (a peaked softmax of scale 1.0, as a CTC recogniser gives),
  and a softmax over the classes of each frame. The last convolution's inputs sit five times
  their spread above zero and its weights are non-negative (a smoothing filter), so its sums
  run through partial sums far larger than what the centring leaves of them: a rewrite that
  only regroups those sums moves probabilities by ~1e-4 (the static tolerance allows
  1e-5 + 1e-4 x p), while any other input, or a first layer with its filters shifted by
  one, moves them by ~0.7.

Both are exact to prune (channels only meet convolutions, BatchNorm, ReLU, pooling and a
centring over an axis that is not the channel axis); their rewrites are correct, and only
rounding tells the pruned model from the masked original.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["DETECTOR_INPUT", "RECOGNIZER_INPUT", "TextDetector", "TextRecognizer",
           "text_detector", "text_recognizer"]

DETECTOR_INPUT = (1, 3, 64, 64)
RECOGNIZER_INPUT = (1, 3, 32, 160)


class TextDetector(nn.Module):
    """Backbone (stride 2) and a head that upsamples back to a 1-channel sigmoid map."""

    def __init__(self, width: int = 32, bias: float = -9.0) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width // 2), nn.ReLU(),
            nn.Conv2d(width // 2, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU())
        self.head = nn.Sequential(
            nn.Conv2d(width, width // 2, 3, padding=1, bias=False), nn.BatchNorm2d(width // 2),
            nn.ReLU(), nn.ConvTranspose2d(width // 2, 1, 2, stride=2))
        with torch.no_grad():
            self.head[-1].bias.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(self.backbone(x)))


class TextRecognizer(nn.Module):
    """Deep conv stack, frames over the width, features centred per channel over the frames,
    per-frame class probabilities (see the module)."""

    def __init__(self, layers: int = 16, width: int = 32, classes: int = 40,
                 offset: float = 5.0, spread: float = 10.0) -> None:
        super().__init__()
        body: list[nn.Module] = []
        cin = 3
        for i in range(layers):
            last = i == layers - 1  # valid padding: no border sees zeros instead of the offset
            conv = nn.Conv2d(cin, width, 3, padding=0 if last else 1)
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")  # the input carries
            nn.init.zeros_(conv.bias)  # through all the layers (not the biases and borders)
            body += [conv, nn.ReLU()]
            if i in (1, 3):
                body.append(nn.MaxPool2d(2))
            cin = width
        self.body = nn.Sequential(*body)
        self.classifier = nn.Linear(width, classes, bias=False)  # logits follow the input
        self.register_buffer("gain", torch.tensor(1.0))
        probe = torch.randn(2, 3, *RECOGNIZER_INPUT[2:],
                            generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            # the last conv's inputs sit `offset` times their spread above zero, and its
            # weights are non-negative (a smoothing filter): each of its sums adds 288 positive
            # products around a common value, which the centring removes again
            self.body[-4].bias += offset * self.body[:-3](probe).std()
            self.body[-2].weight.abs_()
            self.gain.fill_(spread / self.logits(probe).std().item())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        f = self.body(x).mean(2)  # [N, C, T]: one frame per column
        f = f - f.mean(2, keepdim=True)  # centred per channel over the frames
        return self.gain * self.classifier(f.transpose(1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), -1)


def _randomize_bn(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))


def text_detector(seed: int = 0, **kwargs) -> TextDetector:
    torch.manual_seed(seed)
    model = TextDetector(**kwargs)
    _randomize_bn(model, seed)
    return model.eval()


def text_recognizer(seed: int = 0, **kwargs) -> TextRecognizer:
    torch.manual_seed(seed)
    return TextRecognizer(**kwargs).eval()
