"""Settings of an ``evaluate`` run (the ``evaluation:`` block of an ``eval_*.yaml`` config).

Kept free of torch / OpenCV imports: the CLI reads the type to build its parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .protocols import PROTOCOLS, MaskProtocol, override_protocol

# The model as the protocol says (dense for short videos, coarse-to-fine for long ones).
MODEL_METHOD = "m3ddm"
# Baseline: the same model, always dense (paper 4.3 / Fig. 2 compares the two on long videos).
DENSE_MODEL_METHOD = "m3ddm_dense"
BASELINE_METHODS = ("telea", "edge_replicate")
MODEL_METHODS = (MODEL_METHOD, DENSE_MODEL_METHOD)
METHODS: tuple[str, ...] = (*MODEL_METHODS, *BASELINE_METHODS)


def _default_protocols() -> list[str]:
    return ["davis_h025", "davis_h0666"]


def _default_methods() -> list[str]:
    return list(METHODS)


@dataclass
class EvaluationConfig:
    """What to evaluate and how to score it.

    Attributes:
        protocols: protocol names (see :data:`lightning_m3ddm.evaluation.protocols.PROTOCOLS`).
        methods: any of ``m3ddm`` (the model, inference as the protocol says: dense for
            short videos, paper 4.2 / C.2; coarse-to-fine for ``long_video``, paper 4.3),
            ``m3ddm_dense`` (the model, always dense), ``telea`` (per-frame OpenCV
            inpainting), ``edge_replicate`` (nearest known pixel).
        frame_size: evaluation frame side for every protocol instead of its own (256 /
            128): for quick runs; results then say that the protocol was changed and the
            paper's numbers are not printed beside them.
        protocol_overrides: per protocol name, fields to change, e.g.
            ``{long_video: {ratio: 0.5, strides: [15, 5, 1]}}`` (same caveat).
        i3d_path: local ``i3d_torchscript.pt`` for FVD; ``None``: FVD is null with a reason.
        i3d_input_format: how that network takes frames (``uint8`` as StyleGAN-V's file).
        lpips_net: LPIPS backbone (AlexNet, the ``lpips`` package's default).
        lpips_backbone_weights: local torchvision state dict of that backbone; default:
            torchvision's cache file if present, else LPIPS is null with a reason.
        allow_download: let torchvision download the LPIPS backbone.
        telea_radius: inpainting radius of the ``telea`` baseline, pixels.
        work_dir: folder for temporary files (the model's per-clip latents).
    """

    protocols: list[str] = field(default_factory=_default_protocols)
    methods: list[str] = field(default_factory=_default_methods)
    frame_size: Optional[int] = None
    protocol_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    i3d_path: Optional[str] = None
    i3d_input_format: Literal["uint8", "minus_one_one"] = "uint8"
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    lpips_backbone_weights: Optional[str] = None
    allow_download: bool = False
    telea_radius: float = 5.0
    work_dir: Optional[str] = None


def resolve_protocols(config: EvaluationConfig) -> list[MaskProtocol]:
    """The protocols of a run, with ``frame_size`` and ``protocol_overrides`` applied.

    Raises:
        ValueError: no protocol, a duplicate, an unknown name (listing the known ones),
            an override for a protocol not in the run, or an invalid override.
    """
    names = list(config.protocols or [])
    if not names:
        raise ValueError(f"evaluation.protocols is empty; known protocols: {sorted(PROTOCOLS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"evaluation.protocols lists a protocol twice: {names}")
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown evaluation protocol(s) {unknown}; known: {sorted(PROTOCOLS)}")
    stray = sorted(set(config.protocol_overrides or {}) - set(names))
    if stray:
        raise ValueError(f"evaluation.protocol_overrides names protocol(s) {stray} that are not in evaluation.protocols {names}")
    protocols = []
    for name in names:
        changes = dict((config.protocol_overrides or {}).get(name) or {})
        if config.frame_size is not None:
            changes.setdefault("frame_size", config.frame_size)
        protocols.append(override_protocol(name, changes))
    return protocols


def check_methods(methods: list[str]) -> list[str]:
    """``methods`` validated (non-empty, known, no duplicates).

    Raises:
        ValueError: naming the bad entry and the known methods.
    """
    methods = list(methods or [])
    if not methods:
        raise ValueError(f"evaluation.methods is empty; known methods: {list(METHODS)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown evaluation method(s) {unknown}; known: {list(METHODS)}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"evaluation.methods lists a method twice: {methods}")
    return methods


def check_config(config: EvaluationConfig) -> str | None:
    """The first problem with ``config`` (one line), or None; loads nothing."""
    try:
        resolve_protocols(config)
        check_methods(config.methods)
    except (ValueError, KeyError) as error:
        return str(error).strip("'\"")
    if config.frame_size is not None and (isinstance(config.frame_size, bool) or config.frame_size < 2):
        return f"evaluation.frame_size must be an integer >= 2, got {config.frame_size!r}"
    if config.telea_radius <= 0:
        return f"evaluation.telea_radius must be > 0, got {config.telea_radius!r}"
    return None
