"""Building blocks of the detector: conv-BN-SiLU, bottleneck, CSP (C3) and SPPF.

Written from the published architecture descriptions (CSPNet, YOLOv5's C3/SPPF layer layout); no code copied.
Every block's last convolution is called ``fuse`` (C3, SPPF) so that callers can name "the conv that produces this
feature map" uniformly, e.g. for GradNorm's last shared layer.
"""

from __future__ import annotations

import torch
from torch import nn

# BatchNorm settings. Momentum 0.1 (not the YOLO-family 0.03): short CPU searches train a few hundred steps,
# and with 0.03 the running statistics lagged the fast-changing early weights so badly that eval-mode
# predictions stayed constant for ~10 epochs (measured: view accuracy stuck at the majority class).
BN_EPS = 1e-3
BN_MOMENTUM = 0.1


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm -> SiLU.

    Padding is ``(k - 1) // 2``: 'same' for odd k at stride 1, and an exact ``H / s`` output for even inputs at
    stride s (3x3/2 -> pad 1, the 6x6/2 stem -> pad 2). (B, c_in, H, W) -> (B, c_out, H / s, W / s).
    """

    def __init__(self, c_in: int, c_out: int, k: int = 1, s: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, padding=(k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    """1x1 conv -> 3x3 conv, plus the input when ``shortcut`` and the channel counts match. Keeps (B, C, H, W)."""

    def __init__(self, c_in: int, c_out: int, shortcut: bool = True, expansion: float = 1.0):
        super().__init__()
        hidden = int(c_out * expansion)
        self.reduce = ConvBNAct(c_in, hidden, 1)
        self.conv = ConvBNAct(hidden, c_out, 3)
        self.residual = shortcut and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.reduce(x))
        return x + y if self.residual else y


class C3(nn.Module):
    """CSP block: two 1x1 branches of c_out/2 channels, n bottlenecks on the first, concat, 1x1 ``fuse``.

    The untouched second branch is the cross-stage partial path: half of the features skip the bottlenecks, which
    halves their cost and keeps a short gradient path. (B, c_in, H, W) -> (B, c_out, H, W).
    """

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = True, expansion: float = 0.5):
        super().__init__()
        hidden = int(c_out * expansion)
        self.branch_a = ConvBNAct(c_in, hidden, 1)
        self.branch_b = ConvBNAct(c_in, hidden, 1)
        self.blocks = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(n)))
        self.fuse = ConvBNAct(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat((self.blocks(self.branch_a(x)), self.branch_b(x)), dim=1))


class SPPF(nn.Module):
    """Fast spatial pyramid pooling: 1x1 to c_in/2, three chained k x k stride-1 max-pools, concat the four, 1x1.

    Chaining three 5x5 pools gives the 5/9/13 receptive fields of SPP at a fraction of the cost.
    (B, c_in, H, W) -> (B, c_out, H, W).
    """

    def __init__(self, c_in: int, c_out: int, k: int = 5):
        super().__init__()
        hidden = c_in // 2
        self.reduce = ConvBNAct(c_in, hidden, 1)
        self.pool = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)
        self.fuse = ConvBNAct(4 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.fuse(torch.cat((x, p1, p2, self.pool(p2)), dim=1))
