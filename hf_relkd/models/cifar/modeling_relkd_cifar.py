"""CIFAR-100 distillation benchmark model zoo (the CRD / RepDistiller architectures) as 🤗 Transformers models.

All networks are built for 32x32 inputs, as in the benchmark, and end with global average pooling, so other
resolutions work as well. Sub-module names inside ``backbone`` follow the benchmark's reference models, so a
benchmark checkpoint can be imported with :func:`convert_repdistiller_state_dict`.

This file is self-contained: it imports only ``torch``, ``transformers`` and the sibling configuration module,
so that ``save_pretrained`` can ship it as remote code (``trust_remote_code=True``).
"""

import contextlib
import functools

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

try:  # transformers >= 5: init functions that skip tensors already loaded from a checkpoint
    from transformers import initialization as init
except ImportError:  # transformers 4.x
    from torch.nn import init

from .configuration_relkd_cifar import CIFAR_ARCHITECTURES, CifarConfig

# ---------------------------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------------------------


def _conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes, out_planes, stride=1, groups=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, groups=groups, bias=False)


def _relu_(bn_output):
    """ReLU in place on a BatchNorm output: BatchNorm's backward reads its input, not its output, so the buffer
    can become the ReLU's (one activation-sized allocation fewer; torchvision's ResNets do the same)."""
    return F.relu(bn_output, inplace=True)


def _residual_relu(bn_output, shortcut):
    """``relu(bn_output + shortcut)`` written into ``bn_output`` (see :func:`_relu_`). This is the end of a block,
    where a training forward's memory peaks (every earlier activation is saved); in place it holds two
    activation-sized buffers fewer there. Out of place when the dtypes differ (autocast), so the sum is never
    rounded to the lower precision."""
    if bn_output.dtype != shortcut.dtype:
        return F.relu(bn_output + shortcut)
    return F.relu(bn_output.add_(shortcut), inplace=True)


class CheckpointableBlock(nn.Module):
    """A network block that activation checkpointing can wrap: with ``gradient_checkpointing`` set (by
    ``model.activation_checkpointing_enable()`` / ``gradient_checkpointing_enable()``, e.g. from the Trainer's
    ``activation_checkpointing=True``), a training forward keeps only the block's input for backward and runs the
    block again in the backward pass.

    The re-run normalises with the batch statistics like the first run but leaves the BatchNorm running statistics
    alone: a plain ``torch.utils.checkpoint`` of a BatchNorm network applies the momentum update twice per step
    (and counts every batch twice), so the running statistics -- what evaluation uses -- would drift from those of
    the same training without checkpointing. Subclasses implement ``_forward(x)``.
    """

    gradient_checkpointing = False

    def forward(self, x):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            checkpoint = getattr(self, "_gradient_checkpointing_func", None) or functools.partial(
                torch.utils.checkpoint.checkpoint, use_reentrant=False
            )
            return checkpoint(_FirstRunUpdatesStatistics(self._forward, self), x)
        return self._forward(x)

    def _forward(self, x):
        raise NotImplementedError


class _FirstRunUpdatesStatistics:
    """``forward`` as the checkpointed function: its first call is the forward pass, any later call a backward
    re-run, made with the BatchNorm running statistics of ``block`` frozen."""

    def __init__(self, forward, block):
        self.forward, self.block, self.calls = forward, block, 0

    def __call__(self, x):
        self.calls += 1
        if self.calls == 1:
            return self.forward(x)
        with _running_statistics_frozen(self.block):
            return self.forward(x)


@contextlib.contextmanager
def _running_statistics_frozen(module):
    # The re-run updates throw-away copies of the running statistics: it calls BatchNorm exactly as the first run
    # did (checkpointing checks that it saves the same tensors), and the real buffers see one update per step.
    names = ("running_mean", "running_var", "num_batches_tracked")
    tracking = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    originals = [{n: getattr(m, n) for n in names} for m in tracking]
    for m, buffers in zip(tracking, originals):
        for name, buffer in buffers.items():
            if buffer is not None:
                setattr(m, name, buffer.clone())
    try:
        yield
    finally:
        for m, buffers in zip(tracking, originals):
            for name, buffer in buffers.items():
                setattr(m, name, buffer)


def _channel_shuffle(x, groups):
    if groups == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class CifarBasicBlock(CheckpointableBlock):
    """Post-activation residual block (two 3x3 convolutions) of the CIFAR ResNets."""

    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(_conv1x1(in_planes, planes, stride), nn.BatchNorm2d(planes))

    def _forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = _relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return _residual_relu(out, identity)


class CifarBottleneck(CheckpointableBlock):
    """1x1 -> 3x3 -> 1x1 bottleneck block (expansion 4) of the CIFAR ResNet50."""

    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = _conv1x1(in_planes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(_conv1x1(in_planes, out_planes, stride), nn.BatchNorm2d(out_planes))

    def _forward(self, x):
        out = _relu_(self.bn1(self.conv1(x)))
        out = _relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return _residual_relu(out, self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet with three stages of basic blocks (depth = 6n + 2), e.g. resnet56 or resnet32x4."""

    def __init__(self, depth, filters, in_channels=3):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_channels, filters[0])
        self.bn1 = nn.BatchNorm2d(filters[0])
        in_planes = filters[0]
        for i, stride in zip(range(1, 4), (1, 2, 2)):
            blocks = []
            for j in range(n):
                blocks.append(CifarBasicBlock(in_planes, filters[i], stride if j == 0 else 1))
                in_planes = filters[i]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.num_features = in_planes

    def forward(self, x):
        x = _relu_(self.bn1(self.conv1(x)))
        feats = [x]
        for layer in (self.layer1, self.layer2, self.layer3):
            x = layer(x)
            feats.append(x)
        return feats, x


class CifarResNetBottleneck(nn.Module):
    """Four-stage bottleneck ResNet with a 3x3 stride-1 stem (the benchmark's CIFAR ``ResNet50``)."""

    def __init__(self, num_blocks=(3, 4, 6, 3), in_channels=3):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(CifarBottleneck(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * CifarBottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.num_features = in_planes

    def forward(self, x):
        x = _relu_(self.bn1(self.conv1(x)))
        feats = [x]
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats, x


class WideBasicBlock(CheckpointableBlock):
    """Pre-activation wide residual block (BN-ReLU-conv x2)."""

    def __init__(self, in_planes, out_planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = _conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = _conv3x3(out_planes, out_planes)
        self.equalInOut = in_planes == out_planes
        self.convShortcut = None if self.equalInOut else _conv1x1(in_planes, out_planes, stride)

    def _forward(self, x):
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        # As in the reference WRN, the projection shortcut sees the pre-activated input.
        shortcut = x if self.equalInOut else self.convShortcut(pre)
        return out + shortcut


class WideStage(nn.Module):
    def __init__(self, num_blocks, in_planes, out_planes, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(num_blocks)
            ]
        )

    def forward(self, x):
        return self.layer(x)


class CifarWideResNet(nn.Module):
    """Wide ResNet WRN-depth-width for CIFAR (depth = 6n + 4)."""

    def __init__(self, depth, widen_factor, in_channels=3):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = _conv3x3(in_channels, channels[0])
        self.block1 = WideStage(n, channels[0], channels[1], 1)
        self.block2 = WideStage(n, channels[1], channels[2], 2)
        self.block3 = WideStage(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.num_features = channels[3]

    def forward(self, x):
        x = self.conv1(x)
        feats = [x]
        for stage in (self.block1, self.block2, self.block3):
            x = stage(x)
            feats.append(x)
        return feats, F.relu(self.bn1(x))


_VGG_CFGS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


class CifarVGGBlock(CheckpointableBlock, nn.Sequential):
    """A VGG stage: conv-BN(-ReLU) layers; the last ReLU is left to the network (pre-activation features)."""

    def _forward(self, x):
        return nn.Sequential.forward(self, x)


def _vgg_block(widths, in_channels):
    layers = []
    for i, width in enumerate(widths):
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width)]
        if i < len(widths) - 1:  # the block's last ReLU is applied in forward (pre-activation features)
            layers.append(nn.ReLU(inplace=True))
        in_channels = width
    return CifarVGGBlock(*layers)


class CifarVGG(nn.Module):
    """VGG with BatchNorm for CIFAR: five conv blocks, no FC stack, global average pooling."""

    def __init__(self, cfg, in_channels=3):
        super().__init__()
        for i, widths in enumerate(cfg):
            setattr(self, f"block{i}", _vgg_block(widths, in_channels))
            in_channels = widths[-1]
        self.num_features = in_channels

    def forward(self, x):
        feats = []
        blocks = (self.block0, self.block1, self.block2, self.block3, self.block4)
        for i, block in enumerate(blocks):
            # Max-pool between blocks; at 32x32 the benchmark skips the 4th pooling so block4 runs at 4x4.
            if 0 < i < 4 or (i == 4 and x.shape[-1] > 4):
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = F.relu(block(x))
            feats.append(x)
        return feats, x


class InvertedResidual(CheckpointableBlock):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection (expansion always applied)."""

    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        )

    def _forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res_connect else out


def _conv_bn_relu(inp, oup, kernel_size, stride):
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 as used by the benchmark (``mobile_half``: width 0.5, expansion 6, stride-2 stem)."""

    def __init__(self, expansion=6, width_mult=0.5, in_channels=3):
        super().__init__()
        setting = [  # expansion t, channels c, repeats n, stride s
            (1, 16, 1, 1),
            (expansion, 24, 2, 1),
            (expansion, 32, 3, 2),
            (expansion, 64, 4, 2),
            (expansion, 96, 3, 1),
            (expansion, 160, 3, 2),
            (expansion, 320, 1, 1),
        ]
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in setting:
            out_channels = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
                channels = out_channels
            self.blocks.append(nn.Sequential(*stage))
        last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last_channel, 1, 1)
        self.num_features = last_channel

    def forward(self, x):
        x = self.conv1(x)
        feats = [x]
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in (1, 2, 4, 6):
                feats.append(x)
        return feats, self.conv2(x)


class ShuffleV1Block(CheckpointableBlock):
    """ShuffleNetV1 unit: grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1; stride 2 concatenates."""

    def __init__(self, in_planes, out_planes, stride, groups):
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        first_groups = 1 if in_planes == 24 else groups  # the first unit after the stem is not grouped
        self.shuffle_groups = first_groups
        self.conv1 = _conv1x1(in_planes, mid_planes, groups=first_groups)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = _conv1x1(mid_planes, out_planes, groups=groups)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def _forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = _channel_shuffle(out, self.shuffle_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            shortcut = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1)
            return F.relu(torch.cat([out, shortcut], dim=1))
        return F.relu(out + x)


class CifarShuffleNetV1(nn.Module):
    """ShuffleNetV1 (g=3) for CIFAR: 1x1 stem, stages of 4/8/4 units with 240/480/960 channels."""

    def __init__(self, out_planes=(240, 480, 960), num_blocks=(4, 8, 4), groups=3, in_channels=3):
        super().__init__()
        self.conv1 = _conv1x1(in_channels, 24)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        for i, (planes, n) in enumerate(zip(out_planes, num_blocks), start=1):
            units = []
            for j in range(n):
                # the first (stride-2) unit concatenates its input, so its branch only adds the missing channels
                branch_planes, stride = (planes - in_planes, 2) if j == 0 else (planes, 1)
                units.append(ShuffleV1Block(in_planes, branch_planes, stride, groups))
                in_planes = planes
            setattr(self, f"layer{i}", nn.Sequential(*units))
        self.num_features = in_planes

    def forward(self, x):
        x = _relu_(self.bn1(self.conv1(x)))
        feats = [x]
        for layer in (self.layer1, self.layer2, self.layer3):
            x = layer(x)
            feats.append(x)
        return feats, x


class ShuffleV2Block(CheckpointableBlock):
    """ShuffleNetV2 basic unit: channel split, 1x1 -> depthwise 3x3 -> 1x1 on one half, concat, shuffle."""

    def __init__(self, channels):
        super().__init__()
        half = channels // 2
        self.conv1 = _conv1x1(half, half)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, kernel_size=3, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = _conv1x1(half, half)
        self.bn3 = nn.BatchNorm2d(half)

    def _forward(self, x):
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return _channel_shuffle(torch.cat([x1, out], dim=1), 2)


class ShuffleV2DownBlock(CheckpointableBlock):
    """ShuffleNetV2 spatial down-sampling unit (two stride-2 branches, concatenated and shuffled)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = _conv1x1(in_channels, mid)
        self.bn2 = nn.BatchNorm2d(mid)
        # right branch
        self.conv3 = _conv1x1(in_channels, mid)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = _conv1x1(mid, mid)
        self.bn5 = nn.BatchNorm2d(mid)

    def _forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return _channel_shuffle(torch.cat([left, right], dim=1), 2)


class CifarShuffleNetV2(nn.Module):
    """ShuffleNetV2 (net size 1) for CIFAR: 1x1 stem, stages of 3/7/3 units, 1x1 conv to 1024 channels."""

    def __init__(self, out_channels=(116, 232, 464, 1024), num_blocks=(3, 7, 3), in_channels=3):
        super().__init__()
        self.conv1 = _conv1x1(in_channels, 24)
        self.bn1 = nn.BatchNorm2d(24)
        channels = 24
        for i, (width, n) in enumerate(zip(out_channels[:3], num_blocks), start=1):
            units = [ShuffleV2DownBlock(channels, width)] + [ShuffleV2Block(width) for _ in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*units))
            channels = width
        self.conv2 = _conv1x1(channels, out_channels[3])
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.num_features = out_channels[3]

    def forward(self, x):
        x = _relu_(self.bn1(self.conv1(x)))
        feats = [x]
        for layer in (self.layer1, self.layer2, self.layer3):
            x = layer(x)
            feats.append(x)
        return feats, F.relu(self.bn2(self.conv2(x)))


_RESNET_SPECS = {
    "resnet8": (8, (16, 16, 32, 64)),
    "resnet14": (14, (16, 16, 32, 64)),
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet44": (44, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}
_WRN_SPECS = {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}


def build_cifar_backbone(architecture, in_channels=3):
    """Build the feature extractor of a zoo architecture (canonical name).

    The returned module maps images to ``(feature_maps, final_map)``: the list of stage outputs (the
    benchmark's intermediate features) and the map that is globally average-pooled into the embedding. It has a
    ``num_features`` attribute (embedding width).
    """
    if architecture in _RESNET_SPECS:
        depth, filters = _RESNET_SPECS[architecture]
        return CifarResNet(depth, filters, in_channels)
    if architecture in _WRN_SPECS:
        depth, width = _WRN_SPECS[architecture]
        return CifarWideResNet(depth, width, in_channels)
    if architecture in _VGG_CFGS:
        return CifarVGG(_VGG_CFGS[architecture], in_channels)
    if architecture == "ResNet50":
        return CifarResNetBottleneck((3, 4, 6, 3), in_channels)
    if architecture == "MobileNetV2":
        return CifarMobileNetV2(6, 0.5, in_channels)
    if architecture == "ShuffleV1":
        return CifarShuffleNetV1(in_channels=in_channels)
    if architecture == "ShuffleV2":
        return CifarShuffleNetV2(in_channels=in_channels)
    raise ValueError(
        f"Unknown CIFAR architecture {architecture!r}; expected one of {', '.join(CIFAR_ARCHITECTURES)}"
    )


# ---------------------------------------------------------------------------------------------------------------
# 🤗 Transformers models
# ---------------------------------------------------------------------------------------------------------------


class CifarPreTrainedModel(PreTrainedModel):
    config_class = CifarConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False
    _no_split_modules = []

    @torch.no_grad()
    def _init_weights(self, module):
        """Benchmark initialisation.

        Convolutions: Kaiming normal (fan_out, ReLU), bias 0 -- except ShuffleNets, which the benchmark leaves at
        the PyTorch default. BatchNorm: weight 1, bias 0 (running statistics reset). Linear: N(0, 0.01) and bias 0
        for VGG / MobileNetV2, PyTorch default otherwise (WRN zeroes the bias).

        Uses ``transformers.initialization`` when available, whose functions skip tensors that ``from_pretrained``
        has already loaded.
        """
        arch = self.config.architecture
        if isinstance(module, nn.Conv2d):
            if arch in ("ShuffleV1", "ShuffleV2"):
                init.kaiming_uniform_(module.weight, a=5**0.5)
            else:
                init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if module.running_mean is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, nn.Linear):
            if arch.startswith("vgg") or arch == "MobileNetV2":
                init.normal_(module.weight, mean=0.0, std=0.01)
                init.zeros_(module.bias)
            else:
                init.kaiming_uniform_(module.weight, a=5**0.5)
                if module.bias is not None:
                    if arch.startswith("wrn"):
                        init.zeros_(module.bias)
                    else:
                        bound = module.weight.shape[1] ** -0.5
                        init.uniform_(module.bias, -bound, bound)


class CifarForImageClassification(CifarPreTrainedModel):
    """A CIFAR benchmark network with a linear classifier on the globally pooled penultimate embedding.

    ``self.backbone`` produces the feature maps, which are average-pooled into the embedding ``(B, D)``
    (``D = self.num_features``), and ``self.classifier`` (an ``nn.Linear``) maps the embedding to logits.

    The ResNet blocks and the ResNet / ShuffleNet stems add their shortcut and apply their ReLU in place on the
    output of their last BatchNorm (as torchvision's ResNets do). A forward hook on such a BatchNorm sees its output,
    but the tensor it receives holds the rectified sum once the block has run: clone it in the hook to keep it. The
    feature maps returned with ``output_hidden_states`` are never modified.
    """

    def __init__(self, config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.backbone = build_cifar_backbone(config.architecture, config.num_channels)
        self.num_features = self.backbone.num_features
        self.classifier = nn.Linear(self.num_features, config.num_labels)
        self.post_init()

    def _embed(self, pixel_values):
        feats, final = self.backbone(pixel_values)
        pooled = torch.flatten(F.adaptive_avg_pool2d(final, 1), 1)
        return feats, pooled

    def forward_features(self, pixel_values):
        """Pooled penultimate embedding ``(B, num_features)``, i.e. the input of ``self.classifier``."""
        return self._embed(pixel_values)[1]

    def forward(self, pixel_values, labels=None, output_hidden_states=None, return_dict=None):
        r"""
        pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`): the images.
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*): class indices (or class probabilities of
            shape `(batch_size, num_labels)`) for the cross-entropy loss.
        output_hidden_states (`bool`, *optional*): also return the stage feature maps followed by the pooled
            embedding `(batch_size, num_features)` as the last element.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        feats, pooled = self._embed(pixel_values)
        logits = self.classifier(pooled)

        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits, labels.to(logits.device))

        hidden_states = (*feats, pooled) if output_hidden_states else None
        if not return_dict:
            return tuple(v for v in (loss, logits, hidden_states) if v is not None)
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=hidden_states)


_HEAD_PREFIXES = ("fc.", "linear.", "classifier.0.", "classifier.")


def convert_repdistiller_state_dict(state_dict):
    """Map a benchmark (RepDistiller / CRD) checkpoint ``state_dict`` onto :class:`CifarForImageClassification`.

    Accepts the raw dict or a checkpoint ``{"model": state_dict, ...}``; strips ``module.`` prefixes, renames the
    final layer (``fc`` / ``linear`` / ``classifier``) to ``classifier`` and prefixes everything else with
    ``backbone.``.
    """
    if "model" in state_dict and isinstance(state_dict["model"], dict):
        state_dict = state_dict["model"]
    converted = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module.") :]
        for prefix in _HEAD_PREFIXES:
            if key.startswith(prefix) and key.count(".") == prefix.count("."):
                key = "classifier." + key[len(prefix) :]
                break
        else:
            key = "backbone." + key
        converted[key] = value
    return converted


CifarForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "CifarForImageClassification",
    "CifarPreTrainedModel",
    "build_cifar_backbone",
    "convert_repdistiller_state_dict",
]
