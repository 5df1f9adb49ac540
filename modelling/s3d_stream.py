"""One S3D stream: the first blocks of torchvision's S3D.

An S3D stream is the feature extractor of the RGB or the keypoint-heatmap input. It is
``torchvision.models.video.S3D().features`` cut after ``use_block`` blocks (the same
architecture as the published S3D: BatchNorm eps 1e-3, momentum 1e-3), with the first
convolution replaced when the input does not have 3 channels (one heatmap per keypoint).

Blocks end at feature indices 0, 3, 6 and 12::

    block  features        output channels  time stride  space stride
    1      [0]             64               2            2
    2      [1..3]          192              2            4
    3      [4..6]          480              2            8
    4      [7..12]         832              4            16

Published S3D checkpoints (``s3ds_actioncls_ckpt``, ``s3ds_glosscls_ckpt``) use the
original S3D module names (``base.N.conv_s`` ...); :func:`original_to_torchvision` and
:func:`torchvision_to_original` translate between the two namings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torchvision.models.video import S3D

from utils.errors import CheckpointError
from utils.files import load_torch_file

logger = logging.getLogger(__name__)

BLOCK_END_INDICES = (0, 3, 6, 12)
BLOCK_CHANNELS = (64, 192, 480, 832)
BLOCK_TIME_STRIDES = (2, 2, 2, 4)
RGB_CHANNELS = 3
FIRST_CONV = "features.0.0.0.weight"
TORCHVISION_PREFIX = "features."

# -- original S3D naming <-> torchvision naming ---------------------------------------------
# Original: SepConv3d = conv_s/bn_s/conv_t/bn_t, BasicConv3d = conv/bn, inception branches
# wrapped in Sequentials. torchvision: TemporalSeparableConv = Sequential of two
# Conv3dNormActivation (conv at 0, norm at 1), and branch0 is a bare Conv3dNormActivation.
_SEPARABLE = {"conv_s": "0.0", "bn_s": "0.1", "conv_t": "1.0", "bn_t": "1.1"}
_BASIC = {"conv": "0", "bn": "1"}


def _inception_table() -> dict[str, str]:
    table = {f"branch0.0.{k}": f"branch0.{v}" for k, v in _BASIC.items()}
    for branch in (1, 2):
        table |= {f"branch{branch}.0.{k}": f"branch{branch}.0.{v}" for k, v in _BASIC.items()}
        table |= {f"branch{branch}.1.{k}": f"branch{branch}.1.{v}" for k, v in _SEPARABLE.items()}
    table |= {f"branch3.1.{k}": f"branch3.1.{v}" for k, v in _BASIC.items()}
    return table


_INCEPTION = _inception_table()
# feature index -> {original module path: torchvision module path}; max pools have no weights
_MODULE_TABLES: dict[int, dict[str, str]] = {
    0: _SEPARABLE,
    2: _BASIC,
    3: _SEPARABLE,
    **{index: _INCEPTION for index in (5, 6, 8, 9, 10, 11, 12, 14, 15)},
}
_INVERSE_TABLES = {i: {v: k for k, v in table.items()} for i, table in _MODULE_TABLES.items()}
_ORIGINAL_KEY = re.compile(r"^base\.(\d+)\.(.+)\.([a-z_]+)$")
_TORCHVISION_KEY = re.compile(r"^(\d+)\.(.+)\.([a-z_]+)$")


def original_to_torchvision(key: str) -> str:
    """``'base.0.conv_s.weight'`` -> ``'0.0.0.weight'`` (a key of ``S3D().features``)."""
    return _translate(key, _ORIGINAL_KEY, _MODULE_TABLES, "{index}.{module}.{param}")


def torchvision_to_original(key: str) -> str:
    """``'0.0.0.weight'`` -> ``'base.0.conv_s.weight'`` (the original S3D naming)."""
    return _translate(key, _TORCHVISION_KEY, _INVERSE_TABLES, "base.{index}.{module}.{param}")


def _translate(key: str, pattern: re.Pattern, tables: Mapping, template: str) -> str:
    match = pattern.match(key)
    table = tables.get(int(match.group(1))) if match else None
    module = table.get(match.group(2)) if table else None
    if module is None:
        raise KeyError(f"not a weight of the S3D feature layers: {key!r}")
    return template.format(index=match.group(1), module=module, param=match.group(3))


# -- the stream ------------------------------------------------------------------------------
class S3DStream(nn.Module):
    """The first ``use_block`` blocks of S3D.

    Args:
        in_channels: 3 for RGB; the number of keypoints for heatmaps (new first conv).
        use_block: how many blocks to keep (1..4).
        freeze_block: blocks ``1..freeze_block`` get no gradient.
        frozen_mode: ``'eval'``: the frozen blocks stay in eval mode (their BatchNorms use and
            keep the running statistics); ``'train'``: they follow the stream's mode, so in
            training their BatchNorms normalise with batch statistics and update the running
            ones, as the original TwoStream network does (see
            :data:`utils.config.FROZEN_BLOCK_MODES`).
        activation_checkpointing: recompute the trainable blocks' activations in backward.
    """

    def __init__(
        self,
        in_channels: int = RGB_CHANNELS,
        use_block: int = 4,
        freeze_block: int = 0,
        activation_checkpointing: bool = False,
        frozen_mode: str = "eval",
    ) -> None:
        super().__init__()
        if frozen_mode not in ("eval", "train"):
            raise ValueError(f"frozen_mode must be 'eval' or 'train', got {frozen_mode!r}")
        if not 1 <= use_block <= len(BLOCK_END_INDICES):
            raise ValueError(f"use_block must be 1..4, got {use_block}")
        if not 0 <= freeze_block <= use_block:
            raise ValueError(f"freeze_block must be 0..use_block, got {freeze_block}")
        layers = list(S3D().features)[: BLOCK_END_INDICES[use_block - 1] + 1]
        if in_channels != RGB_CHANNELS:
            old = layers[0][0][0]
            layers[0][0][0] = nn.Conv3d(
                in_channels,
                old.out_channels,
                kernel_size=old.kernel_size,
                stride=old.stride,
                padding=old.padding,
                bias=False,
            )
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.use_block = use_block
        self.freeze_block = freeze_block
        self.frozen_mode = frozen_mode
        self.activation_checkpointing = activation_checkpointing
        for param in self._frozen_layers().parameters():
            param.requires_grad = False
        self._frozen_layers().eval()

    @property
    def out_channels(self) -> int:
        return BLOCK_CHANNELS[self.use_block - 1]

    def _frozen_layers(self) -> nn.Sequential:
        if self.freeze_block == 0:
            return nn.Sequential()
        return self.features[: BLOCK_END_INDICES[self.freeze_block - 1] + 1]

    def block_layers(self, block: int) -> nn.Sequential:
        """The feature layers of ``block`` (1-based)."""
        start = 0 if block == 1 else BLOCK_END_INDICES[block - 2] + 1
        return self.features[start : BLOCK_END_INDICES[block - 1] + 1]

    def train(self, mode: bool = True) -> S3DStream:
        """Switch modes; frozen blocks stay in eval mode unless ``frozen_mode`` is 'train'."""
        super().train(mode)
        if self.frozen_mode == "eval":
            self._frozen_layers().eval()
        return self

    def forward_block(self, x: torch.Tensor, block: int) -> torch.Tensor:
        """Run one block: ``(B, C, T, H, W)`` -> that block's output."""
        layers = self.block_layers(block)
        trainable = self.training and torch.is_grad_enabled() and block > self.freeze_block
        if self.activation_checkpointing and trainable:
            return checkpoint(
                layers,
                x,
                use_reentrant=False,
                context_fn=lambda: (_no_op(), _keep_running_stats(layers)),
            )
        return layers(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(B, C, T, H, W)`` -> the output of every block, ``[(B, C_b, T_b, H_b, W_b)]``."""
        outputs = []
        for block in range(1, self.use_block + 1):
            x = self.forward_block(x, block)
            outputs.append(x)
        return outputs

    def load_published(self, path: str | Path) -> None:
        """Load a published S3D checkpoint (see :func:`load_published_s3d`)."""
        load_published_s3d(self, path)


@contextmanager
def _no_op() -> Iterator[None]:
    yield


@contextmanager
def _keep_running_stats(module: nn.Module) -> Iterator[None]:
    """During recomputation, leave BatchNorm running statistics as the first pass left them."""
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)


# -- published S3D checkpoints ---------------------------------------------------------------
_WRAPPER_PREFIXES = ("module.", "backbone.")


def find_s3d_checkpoint(path: str | Path) -> Path:
    """The checkpoint file of a published S3D folder (one ``*.pt`` or ``*.pth.tar``), or ``path``."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: S3D checkpoint folder not found")
    files = sorted(path.glob("*.pt")) + sorted(path.glob("*.pth.tar"))
    if len(files) != 1:
        raise CheckpointError(
            f"{path}: expected exactly one *.pt or *.pth.tar file, found {[f.name for f in files]}"
        )
    return files[0]


def published_s3d_weights(raw: Mapping, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The S3D feature weights of a published checkpoint, in torchvision naming.

    ``s3ds_actioncls_ckpt`` holds a plain state dict keyed ``module.base.N...``;
    ``s3ds_glosscls_ckpt`` holds ``{'state_dict': ...}`` keyed ``backbone.base.N...``
    (the original ``S3D_backbone``); torchvision's Kinetics-400 weights (``s3d-d76dad2f.pth``,
    ported from the same model) are keyed ``features.N...``. Other keys (classifier,
    pyramid) are left out.
    """
    state = raw.get("state_dict", raw)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a state dict, got {type(state).__name__}")
    weights, skipped = {}, []
    for key, value in state.items():
        name = key
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        if name.startswith(TORCHVISION_PREFIX):
            weights[name[len(TORCHVISION_PREFIX) :]] = value
            continue
        if not name.startswith("base."):
            skipped.append(key)
            continue
        try:
            weights[original_to_torchvision(name)] = value
        except KeyError as error:
            raise CheckpointError(f"{source}: unexpected S3D key {key!r}") from error
    if skipped:
        logger.info("%s: ignoring %d non-S3D keys, e.g. %s", source, len(skipped), skipped[0])
    return weights


def load_published_s3d(stream: S3DStream, path: str | Path) -> None:
    """Initialise ``stream`` from a published S3D checkpoint folder or file.

    Keys of blocks beyond ``use_block`` are ignored; the first convolution keeps its
    initialisation when its input channels differ (keypoint heatmaps). Any other missing
    or mis-shaped weight is a :class:`CheckpointError` naming the keys.
    """
    file = find_s3d_checkpoint(path)
    raw = load_torch_file(file, "S3D checkpoint")
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{file}: expected a dict, got {type(raw).__name__}")
    weights = {f"features.{k}": v for k, v in published_s3d_weights(raw, str(file)).items()}
    own = stream.state_dict()
    missing = [k for k in own if k not in weights]
    mismatched = [k for k in own if k in weights and weights[k].shape != own[k].shape]
    if FIRST_CONV in mismatched and stream.in_channels != RGB_CHANNELS:
        mismatched.remove(FIRST_CONV)
        del weights[FIRST_CONV]
        logger.info(
            "%s: first convolution left at initialisation (%d input channels, checkpoint has %d)",
            file,
            stream.in_channels,
            own[FIRST_CONV].shape[1],
        )
    if missing or mismatched:
        details = [f"missing: {k}" for k in missing] + [
            f"shape {tuple(weights[k].shape)} != {tuple(own[k].shape)}: {k}" for k in mismatched
        ]
        raise CheckpointError(f"{file}: S3D weights do not fit the stream:\n" + "\n".join(details))
    stream.load_state_dict({k: v for k, v in weights.items() if k in own}, strict=False)
    logger.info("loaded S3D blocks 1..%d from %s", stream.use_block, file)
