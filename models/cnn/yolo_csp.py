"""YOLOv8-style detector: C2f backbone, SPPF, PAN neck and decoupled heads.

Patterns covered: chunk-based channel split inside C2f, concatenation of a
split with its own descendants, chained max pools concatenated in SPPF,
nearest upsample + concat in the top-down neck, strided conv + concat in
the bottom-up neck, and several heads whose outputs are flattened and joined.
"""

from __future__ import annotations

import torch
from torch import nn

from models.cnn.common import ConvBNAct

__all__ = ["C2f", "SPPF", "YoloCSP", "yolo_csp"]


def _conv(in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1) -> ConvBNAct:
    """YOLO 'Conv': conv (no bias) + BN(eps=1e-3) + SiLU."""
    return ConvBNAct(in_ch, out_ch, kernel, stride, act=nn.SiLU, bn_eps=1e-3)


class Bottleneck(nn.Module):
    """Two 3x3 convs with an optional residual add."""

    def __init__(self, in_ch: int, out_ch: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = _conv(in_ch, out_ch, 3)
        self.cv2 = _conv(out_ch, out_ch, 3)
        self.add = shortcut and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.cv2(self.cv1(x))
        return x + out if self.add else out


class C2f(nn.Module):
    """1x1 conv, split in two, chain n bottlenecks off the second half, concat all, 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = out_ch // 2
        self.cv1 = _conv(in_ch, 2 * self.c, 1)
        self.cv2 = _conv((2 + n) * self.c, out_ch, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): three chained 5x5 max pools, concat, 1x1 conv."""

    def __init__(self, in_ch: int, out_ch: int, k: int = 5) -> None:
        super().__init__()
        hidden = in_ch // 2
        self.cv1 = _conv(in_ch, hidden, 1)
        self.cv2 = _conv(hidden * 4, out_ch, 1)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class DetectHead(nn.Module):
    """Decoupled per-level heads: box (4 * reg_max) and class branches, concatenated."""

    def __init__(self, in_chs: tuple[int, ...], num_classes: int, reg_max: int = 4) -> None:
        super().__init__()
        box_ch = 4 * reg_max
        mid_box = max(16, in_chs[0] // 4, box_ch)
        mid_cls = max(in_chs[0], num_classes)
        self.box = nn.ModuleList(
            nn.Sequential(
                _conv(c, mid_box, 3), _conv(mid_box, mid_box, 3), nn.Conv2d(mid_box, box_ch, 1)
            )
            for c in in_chs
        )
        self.cls = nn.ModuleList(
            nn.Sequential(
                _conv(c, mid_cls, 3), _conv(mid_cls, mid_cls, 3), nn.Conv2d(mid_cls, num_classes, 1)
            )
            for c in in_chs
        )

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        outs = [
            torch.cat((box(f), cls(f)), 1).flatten(2)
            for f, box, cls in zip(feats, self.box, self.cls, strict=True)
        ]
        # (batch, 4 * reg_max + num_classes, anchors over all levels)
        return torch.cat(outs, 2)


class YoloCSP(nn.Module):
    """Backbone (P3/P4/P5 at strides 8/16/32) + SPPF + PAN neck + detect head."""

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 48, 96), num_classes: int = 4) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = _conv(3, w0, 3, 2)
        self.stage1 = nn.Sequential(_conv(w0, w1, 3, 2), C2f(w1, w1, 1, shortcut=True))
        self.stage2 = nn.Sequential(_conv(w1, w2, 3, 2), C2f(w2, w2, 2, shortcut=True))  # P3
        self.stage3 = nn.Sequential(_conv(w2, w3, 3, 2), C2f(w3, w3, 2, shortcut=True))  # P4
        # P5: C2f then SPPF, as in YOLOv8's last backbone stage.
        self.stage4 = nn.Sequential(
            _conv(w3, w4, 3, 2), C2f(w4, w4, 1, shortcut=True), SPPF(w4, w4)
        )
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = C2f(w4 + w3, w3, 1)
        self.td3 = C2f(w3 + w2, w2, 1)
        self.down3 = _conv(w2, w2, 3, 2)
        self.bu4 = C2f(w2 + w3, w3, 1)
        self.down4 = _conv(w3, w3, 3, 2)
        self.bu5 = C2f(w3 + w4, w4, 1)
        self.head = DetectHead((w2, w3, w4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        t4 = self.td4(torch.cat([self.up(p5), p4], 1))
        n3 = self.td3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        return self.head([n3, n4, n5])


def yolo_csp() -> YoloCSP:
    """YOLOv8-n-like detector at roughly 1/3 width for 64x64 inputs."""
    return YoloCSP()
