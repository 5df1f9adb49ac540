"""Checkpoints of the original release: key layouts, conversion and strict loading.

A published checkpoint is ``{'model_state': state_dict}`` with keys such as
``recognition_network.visual_backbone_twostream.rgb_stream.backbone.base.0.conv_s.weight``.
This module rewrites them into this project's names
(``recognition_network.backbone.streams.rgb.features.0.0.0.weight``) with small tables of
key-rewrite rules, one table per published layout:

==========================  ===========================================================
layout                      published models
==========================  ===========================================================
``single_stream_rgb``       SingleStream S2G, TwoStream video-only
``single_stream_keypoint``  TwoStream keypoint-only
``two_stream``              TwoStream S2G (Phoenix-2014T, Phoenix-2014, CSL-Daily)
``project``                 this project's own checkpoints (loaded as they are)
==========================  ===========================================================

The conversion of a whole model state is composable: :func:`convert_published_state_dict`
hands each top-level prefix (``recognition_network.``, ``translation_network.``, ...) to its
own converter. The sinusoidal position tables the published heads stored (``pe.pe``) are
constants here: they are checked, then dropped. Every missing, unexpected or mis-shaped key
is reported by name in a :class:`~utils.errors.CheckpointError`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import nn

from modelling.s3d_stream import original_to_torchvision, torchvision_to_original
from modelling.visual_head import sinusoid_table
from utils.errors import CheckpointError

logger = logging.getLogger(__name__)

RECOGNITION_PREFIX = "recognition_network."
PROJECT = "project"
Converter = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


# --------------------------------------------------------------------------------------------
# key-rewrite rules
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class S3DNames:
    """Inner rewrite of S3D feature keys (original ``base.N...`` <-> torchvision ``N...``)."""

    def forward(self, key: str) -> str:
        return original_to_torchvision(key)

    def backward(self, key: str) -> str:
        return torchvision_to_original(key)


@dataclass(frozen=True)
class KeyRule:
    """``published`` <-> ``project`` key templates; ``{rest}`` may be rewritten by ``inner``.

    Templates name their variable parts: ``{i}`` matches digits, ``{rest}`` the remainder.
    ``project=None`` marks a published constant that has no counterpart here (dropped).
    """

    published: str
    project: str | None
    inner: tuple[KeyRule, ...] | S3DNames | None = None


_FIELDS = {"i": r"\d+", "rest": r".+"}


@functools.cache
def _regex(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(
        re.escape(part) if n % 2 == 0 else f"(?P<{part}>{_FIELDS[part]})"
        for n, part in enumerate(parts)
    )
    return re.compile(f"^{pattern}$")


def _rewrite(key: str, rules: tuple[KeyRule, ...] | S3DNames, to_project: bool) -> str | None:
    """Apply the first matching rule; ``None`` for a dropped constant; KeyError if none fits."""
    if isinstance(rules, S3DNames):
        return rules.forward(key) if to_project else rules.backward(key)
    for rule in rules:
        source, target = (
            (rule.published, rule.project) if to_project else (rule.project, rule.published)
        )
        if source is None:
            continue
        match = _regex(source).match(key)
        if match is None:
            continue
        if target is None:
            return None
        fields = match.groupdict()
        if rule.inner is not None:
            fields["rest"] = _rewrite(fields["rest"], rule.inner, to_project)
            if fields["rest"] is None:
                return None
        return target.format(**fields)
    raise KeyError(key)


_HEAD = (
    KeyRule("fc1.{rest}", "projection.{rest}"),
    KeyRule("bn1.norm.{rest}", "norm.bn.{rest}"),
    KeyRule("pe.pe", None),
    KeyRule("feedforward.layer_norm.{rest}", "feedforward.layer_norm.{rest}"),
    KeyRule("feedforward.pwff_layer.{rest}", "feedforward.layers.{rest}"),
    KeyRule("layer_norm.{rest}", "layer_norm.{rest}"),
    KeyRule("gloss_output_layer.{rest}", "classifier.{rest}"),
)
_PYRAMID = (
    KeyRule("upsample_layers.{i}.conv_trans_s.{rest}", "upsample.{i}.spatial.{rest}"),
    KeyRule("upsample_layers.{i}.bn_s.{rest}", "upsample.{i}.spatial_norm.{rest}"),
    KeyRule("upsample_layers.{i}.conv_trans_t.{rest}", "upsample.{i}.temporal.{rest}"),
    KeyRule("upsample_layers.{i}.bn_t.{rest}", "upsample.{i}.temporal_norm.{rest}"),
)
_S3D = S3DNames()


def _single_stream_rules(stream: str) -> tuple[KeyRule, ...]:
    suffix = "" if stream == "rgb" else "_keypoint"
    return (
        KeyRule(
            f"visual_backbone{suffix}.backbone.{{rest}}",
            f"backbone.streams.{stream}.features.{{rest}}",
            _S3D,
        ),
        KeyRule(
            f"visual_backbone{suffix}.pyramid.{{rest}}",
            f"backbone.pyramids.{stream}.{{rest}}",
            _PYRAMID,
        ),
        KeyRule(f"visual_head{suffix}.{{rest}}", "heads.gloss.{rest}", _HEAD),
        KeyRule(
            f"visual_head{suffix}_remain.{{i}}.{{rest}}",
            f"heads.{stream}_aux_{{i}}.{{rest}}",
            _HEAD,
        ),
    )


def _two_stream_rules() -> tuple[KeyRule, ...]:
    prefix = "visual_backbone_twostream"
    rules = []
    for published, stream in (("rgb_stream", "rgb"), ("pose_stream", "keypoint")):
        rules += [
            KeyRule(
                f"{prefix}.{published}.backbone.{{rest}}",
                f"backbone.streams.{stream}.features.{{rest}}",
                _S3D,
            ),
            KeyRule(
                f"{prefix}.{published}.pyramid.{{rest}}",
                f"backbone.pyramids.{stream}.{{rest}}",
                _PYRAMID,
            ),
        ]
    rules += [
        KeyRule(
            f"{prefix}.rgb_stream_lateral.{{i}}.{{rest}}",
            "backbone.fusions.{i}.keypoint_to_rgb.{rest}",
        ),
        KeyRule(
            f"{prefix}.pose_stream_lateral.{{i}}.{{rest}}",
            "backbone.fusions.{i}.rgb_to_keypoint.{rest}",
        ),
        KeyRule("visual_head.{rest}", "heads.rgb.{rest}", _HEAD),
        KeyRule("visual_head_keypoint.{rest}", "heads.keypoint.{rest}", _HEAD),
        KeyRule("visual_head_fuse.{rest}", "heads.fuse.{rest}", _HEAD),
        KeyRule("visual_head_remain.{i}.{rest}", "heads.rgb_aux_{i}.{rest}", _HEAD),
        KeyRule("visual_head_keypoint_remain.{i}.{rest}", "heads.keypoint_aux_{i}.{rest}", _HEAD),
    ]
    return tuple(rules)


LAYOUT_RULES: Mapping[str, tuple[KeyRule, ...]] = MappingProxyType(
    {
        "single_stream_rgb": _single_stream_rules("rgb"),
        "single_stream_keypoint": _single_stream_rules("keypoint"),
        "two_stream": _two_stream_rules(),
    }
)
"""Published layout name -> its key-rewrite rules (keys without ``recognition_network.``)."""


# --------------------------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointLayout:
    """What a recognition state dict holds."""

    name: str  # 'project' or a key of LAYOUT_RULES
    vocab_size: int | None  # gloss classes of its heads
    has_backbone: bool  # video (S2G) model, or heads only (S2T feature mode)


_LAYOUT_MARKERS = (
    (PROJECT, ("backbone.", "heads.")),
    ("two_stream", ("visual_backbone_twostream.", "visual_head_fuse.")),
    ("single_stream_keypoint", ("visual_backbone_keypoint.", "visual_head_keypoint.")),
    ("single_stream_rgb", ("visual_backbone.", "visual_head.")),
)


def detect_layout(state: Mapping[str, torch.Tensor]) -> CheckpointLayout:
    """The layout of a recognition state dict (keys without ``recognition_network.``)."""
    name = next(
        (name for name, markers in _LAYOUT_MARKERS if any(k.startswith(markers) for k in state)),
        None,
    )
    if name is None:
        raise CheckpointError(
            "not a recognition state dict of this project or of the original release "
            f"(first keys: {list(state)[:3]})"
        )
    classifiers = [
        v
        for k, v in state.items()
        if k.endswith(("gloss_output_layer.weight", "classifier.weight"))
    ]
    backbone = ("backbone.", "visual_backbone")
    return CheckpointLayout(
        name=name,
        vocab_size=classifiers[0].shape[0] if classifiers else None,
        has_backbone=any(k.startswith(backbone) for k in state),
    )


# --------------------------------------------------------------------------------------------
# conversion
# --------------------------------------------------------------------------------------------
def convert_recognition_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A recognition state dict (no prefix), published or this project's -> project keys."""
    layout = detect_layout(state)
    if layout.name == PROJECT:
        return dict(state)
    rules = LAYOUT_RULES[layout.name]
    converted, unknown = {}, []
    for key, value in state.items():
        try:
            new_key = _rewrite(key, rules, to_project=True)
        except KeyError:
            unknown.append(key)
            continue
        if new_key is None:
            _check_positions(key, value)
        elif new_key in converted:
            raise CheckpointError(f"two published keys map to {new_key!r} (one is {key!r})")
        else:
            converted[new_key] = value
    if unknown:
        raise CheckpointError(
            f"unexpected keys for the published {layout.name} layout:\n" + "\n".join(unknown)
        )
    return converted


def _check_positions(key: str, value: torch.Tensor) -> None:
    """A dropped ``pe.pe`` buffer must be the sinusoid table this project recomputes."""
    table = value.reshape(value.shape[-2:]).float() if value.dim() >= 2 else None
    expected = sinusoid_table(*table.shape) if table is not None else None
    if expected is None or not torch.allclose(table, expected, atol=1e-4):
        raise CheckpointError(f"{key}: not the standard sinusoidal position table")


def to_published_state_dict(
    state: Mapping[str, torch.Tensor], layout: str, positional_encoding: bool = True
) -> dict[str, torch.Tensor]:
    """Project keys (no prefix) -> the published ``layout`` (inverse of the conversion).

    The heads' position tables are added back (``pe.pe``, ``(1, 5000, hidden)``) when
    ``positional_encoding`` is set, as the published models stored them.
    """
    rules = LAYOUT_RULES[layout]
    published = {}
    for key, value in state.items():
        try:
            published[_rewrite(key, rules, to_project=False)] = value
        except KeyError as error:
            raise CheckpointError(f"no published {layout} name for {key!r}") from error
        if positional_encoding and key.startswith("heads.") and key.endswith(".projection.weight"):
            head_prefix = _rewrite(key, rules, to_project=False)[: -len("fc1.weight")]
            published[head_prefix + "pe.pe"] = sinusoid_table(5000, value.shape[0])[None]
    return published


def convert_published_state_dict(
    state: Mapping[str, torch.Tensor],
    converters: Mapping[str, Converter] | None = None,
) -> dict[str, torch.Tensor]:
    """A whole model state (published or project) -> project keys.

    Args:
        state: e.g. a checkpoint's ``model_state``.
        converters: top-level prefix -> converter of the keys under it (given without the
            prefix, returned without it). Defaults to the recognition converter; the
            translation side adds its own, e.g.
            ``{**RECOGNITION_CONVERTERS, 'translation_network.': convert_translation}``.
    """
    converters = RECOGNITION_CONVERTERS if converters is None else converters
    groups: dict[str, dict[str, torch.Tensor]] = {prefix: {} for prefix in converters}
    orphans = []
    for key, value in state.items():
        prefix = next((p for p in converters if key.startswith(p)), None)
        if prefix is None:
            orphans.append(key)
        else:
            groups[prefix][key[len(prefix) :]] = value
    if orphans:
        raise CheckpointError(f"keys outside {sorted(converters)}:\n" + "\n".join(orphans))
    return {
        prefix + key: value
        for prefix, group in groups.items()
        if group
        for key, value in converters[prefix](group).items()
    }


RECOGNITION_CONVERTERS: Mapping[str, Converter] = MappingProxyType(
    {RECOGNITION_PREFIX: convert_recognition_state_dict}
)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------
def _recognition_part(model_state: Mapping[str, torch.Tensor], source: str) -> dict:
    part = {
        k[len(RECOGNITION_PREFIX) :]: v
        for k, v in model_state.items()
        if k.startswith(RECOGNITION_PREFIX)
    }
    if not part:
        raise CheckpointError(f"{source}: no {RECOGNITION_PREFIX}* weights")
    return part


def recognition_state_dict(
    model_state: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
) -> dict[str, torch.Tensor]:
    """The ``recognition_network.`` part of a model state, in project keys, prefix removed."""
    try:
        return convert_recognition_state_dict(_recognition_part(model_state, source))
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from error


_VIDEO_ONLY = re.compile(r"^(backbone\.|heads\.(rgb|keypoint)_aux_\d+\.)")


def state_dict_problems(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    describe: Callable[[str], str] = str,
) -> list[str]:
    """Missing, unexpected and mis-shaped keys of ``given`` against ``expected``, by name.

    ``describe`` renders a key in the messages (e.g. adding its published name).
    """
    problems = [f"missing: {describe(k)}" for k in expected if k not in given]
    problems += [f"unexpected: {describe(k)}" for k in given if k not in expected]
    problems += [
        f"shape {tuple(given[k].shape)} != {tuple(v.shape)}: {describe(k)}"
        for k, v in expected.items()
        if k in given and given[k].shape != v.shape
    ]
    return problems


def _describer(layout: str) -> Callable[[str], str]:
    """Project key -> ``'key (published: recognition_network.old_key)'`` for published layouts."""
    if layout == PROJECT:
        return str

    def describe(key: str) -> str:
        try:
            published = _rewrite(key, LAYOUT_RULES[layout], to_project=False)
        except KeyError:
            return key
        return f"{key} (published: {RECOGNITION_PREFIX}{published})"

    return describe


def load_recognition_state_dict(
    network: nn.Module, model_state: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
) -> None:
    """Load a (published or project) model state into a recognition network, strictly.

    Every missing, unexpected or mis-shaped key is named in a :class:`CheckpointError`
    (with its published name for published checkpoints). A feature-mode network (no
    backbone, no auxiliary heads) takes the heads of a video-mode state: the backbone and
    auxiliary-head weights are left out, and logged.
    """
    part = _recognition_part(model_state, source)
    layout = detect_layout(part).name
    state = recognition_state_dict(model_state, source)
    own = network.state_dict()
    if not any(_VIDEO_ONLY.match(k) for k in own):
        dropped = [k for k in state if _VIDEO_ONLY.match(k)]
        if dropped:
            logger.info(
                "%s: feature-mode network; %d backbone/aux-head tensors not used",
                source,
                len(dropped),
            )
        state = {k: v for k, v in state.items() if not _VIDEO_ONLY.match(k)}
    problems = state_dict_problems(own, state, _describer(layout))
    if problems:
        raise CheckpointError(
            f"{source}: the {layout} checkpoint does not fit the recognition network:\n"
            + "\n".join(problems)
        )
    network.load_state_dict(state)
