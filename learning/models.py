"""Model zoo: every model the nodes, the attacks and the benchmarks build, found by name.

`build_model(name, input_shape, num_classes)` is the one entry point; `MODELS` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

InputShape = tuple[int, int, int]  # (channels, height, width)


class MLP(nn.Module):
    """Two hidden layers with ReLU; the cheap default for many-node runs."""

    def __init__(self, input_shape: InputShape, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c * h * w, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNetCNN(nn.Module):
    """LeNet-5-style CNN (LeCun et al. 1998) with ReLU and max-pooling: the project's CNN."""

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        pad = 2 if h < 28 else 0
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 5, padding=2 + pad),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, c, h, w)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LeNetZhu(nn.Module):
    """The victim network of DLG (Zhu et al. 2019) and iDLG (Zhao et al. 2020).

    Three 5x5 convolutions with sigmoid activations (no pooling) and one linear layer.
    Sigmoid keeps the network twice differentiable, which gradient matching needs; weights are
    drawn uniformly from [-0.5, 0.5] as in the reference code of both papers.
    """

    def __init__(self, input_shape: InputShape, num_classes: int) -> None:
        super().__init__()
        c, h, w = input_shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=2),
            nn.Sigmoid(),
            nn.Conv2d(12, 12, kernel_size=5, padding=2, stride=1),
            nn.Sigmoid(),
        )
        with torch.no_grad():
            flat = self.body(torch.zeros(1, c, h, w)).numel()
        self.fc = nn.Linear(flat, num_classes)
        for param in self.parameters():
            nn.init.uniform_(param, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


class _BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(8, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(8, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.GroupNorm(8, out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet-8 for CIFAR-sized inputs (He et al. 2016).

    GroupNorm replaces BatchNorm: batch statistics are not part of the parameters that federated
    averaging exchanges, and GroupNorm keeps every node's model fully described by its weights.
    """

    def __init__(self, input_shape: InputShape, num_classes: int, width: int = 16) -> None:
        super().__init__()
        c = input_shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1, bias=False), nn.GroupNorm(8, width), nn.ReLU()
        )
        self.layers = nn.Sequential(
            _BasicBlock(width, width, 1),
            _BasicBlock(width, 2 * width, 2),
            _BasicBlock(2 * width, 4 * width, 2),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


ModelFactory = Callable[[InputShape, int], nn.Module]


def _wide_mlp(input_shape: InputShape, num_classes: int) -> nn.Module:
    """The MLP at width 640: about 0.92M parameters on 28x28 inputs (the ~1M benchmark model)."""
    return MLP(input_shape, num_classes, hidden=640)


MODELS: dict[str, ModelFactory] = {
    "mlp": MLP,
    "mlp-wide": _wide_mlp,
    "cnn": LeNetCNN,
    "resnet": SmallResNet,
    "lenet-zhu": LeNetZhu,
}


def build_model(name: str, input_shape: InputShape, num_classes: int) -> nn.Module:
    """Build model `name` for inputs of `input_shape` (C, H, W) and `num_classes` outputs."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}") from None
    return factory(input_shape, num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars in `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
