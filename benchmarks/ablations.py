"""Do the paper's mechanisms work here? Guide frames, global frames, mask modeling and
coarse-to-fine, measured in miniature (paper Table 2, Fig. 6a; issue 16).

Three tiny models (``configs/tiny_cpu.yaml``) are trained on the same generated videos for the
same budget, differing only in what the paper ablates (Table 2):

- ``full``: M3DDM, the paper's mask modeling mix (3.2.1) and global frames (3.2.2, p2 = 0.1);
- ``no_global``: "MSDM w/o prompt": the same mix, global frames always null (p2 = 1);
- ``sdm``: "SDM": first and last frames always given as guides, no other guide case,
  global frames always null.

Training (one variant per process, so that two can share the two cores)::

    python benchmarks/ablations.py train --variant full --out outputs/ablations
    python benchmarks/ablations.py evaluate --out outputs/ablations     # every trained variant
    python benchmarks/ablations.py --quick                              # smoke test (in the suite)
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import convergence  # noqa: E402

from lightning_m3ddm.data.augmentation import AugmentationConfig, GuideFrameConfig  # noqa: E402

VARIANTS = ("full", "no_global", "sdm")
ROW_NAMES = {"full": "M3DDM (full)", "no_global": "MSDM w/o prompt (p2 = 1)", "sdm": "SDM-like (first/last guides only, no global frames)"}


def variant_config(config: dict, variant: str) -> dict:
    """``config`` changed as the paper's ablation ``variant`` (see the module docstring)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    config = copy.deepcopy(config)
    model, data = config["model"]["init_args"], config["data"]["init_args"]
    if variant in ("no_global", "sdm"):
        model["condition_dropout"] = {**(model.get("condition_dropout") or {}), "global_frames": 1.0}
    if variant == "sdm":
        guide = GuideFrameConfig(p_none=0.0, p_first=0.0, p_first_and_last=1.0, p_random_frames=0.0)
        data["augmentation"] = AugmentationConfig(guide=guide)
    return config


def load_config(path: Path, quick: bool) -> dict:
    config = yaml.safe_load(path.read_text())
    if quick:  # smallest clips the model takes: a smoke test of the harness, not a result
        config["model"]["init_args"].setdefault("optimizer", {})["warmup_steps"] = 1
        config["data"]["init_args"].update(
            resolution=32, num_frames=4, num_global_frames=2, video_width=48, video_height=48, video_frames=24
        )
    return config


def train_variant(args: argparse.Namespace, variant: str) -> Path:
    """Train ``variant`` into ``args.out / variant / model.ckpt`` and record its cost."""
    config = convergence.with_anneal(variant_config(load_config(args.config, args.quick), variant), args.steps, args.anneal_steps)
    out = args.out / variant
    out.mkdir(parents=True, exist_ok=True)
    module = convergence.build_module(config, args.seed)
    seconds = convergence.train(
        module, config, args.steps, args.out / "data", args.seed, args.train_videos, out,
        num_workers=0 if args.quick else args.num_workers,
    )
    module.trainer.save_checkpoint(out / "model.ckpt")
    budget = {
        "variant": variant, "steps": args.steps, "anneal_steps": args.anneal_steps, "seed": args.seed,
        "train_videos": args.train_videos, "train_seconds": round(seconds, 1), "threads": torch.get_num_threads(),
        "commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "budget.json").write_text(json.dumps(budget, indent=2))
    return out / "model.ckpt"


def git_commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=["train", "evaluate"], default="evaluate")
    parser.add_argument("--variant", choices=VARIANTS, action="append", help="train or evaluate these (default: all)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "tiny_cpu.yaml")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of every variant (the budget)")
    parser.add_argument("--anneal-steps", type=int, default=350)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-videos", type=int, default=512)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ablations")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variant or list(VARIANTS)
    if args.quick:
        args.steps, args.anneal_steps, args.train_videos = 3, 1, 4
    if args.command == "train" or args.quick:
        for variant in variants:
            train_variant(args, variant)
    return None


if __name__ == "__main__":
    main()
