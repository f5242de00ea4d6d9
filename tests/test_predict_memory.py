"""Peak memory of `predict` does not grow with the video's length (2,000 vs 200 frames).

Each run is a fresh interpreter (peak RSS only ever grows), running the CLI with
configs/predict_tiny.yaml made cheaper where it does not touch memory per frame: an
8-channel UNet, one step, one guidance branch. ``max_batch`` is
small enough that both videos fill whole batches, so the model's activations are the
same size in both runs and any difference is what the video's length costs.
"""

import os
import subprocess
import sys
from pathlib import Path

from lightning_m3ddm.video.samples import write_sample_video

REPO = Path(__file__).resolve().parents[1]
# Allocator and thread-arena noise. Holding the long video in RAM would cost far more: its
# decoded frames 2000 x 160x120x3 B = 115 MB, its latents (context, start, generated) 3 x 2000
# x 192x8x8 x 4 B = 295 MB.
MARGIN_KB = 24 * 1024

RUNNER = """
import resource, sys
from lightning_m3ddm.cli import main
try:
    main(sys.argv[1:])
except SystemExit as done:
    assert not done.code, done.code
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""

CHEAP = [
    "--model.init_args.unet",
    "{block_out_channels: [8, 8, 8, 8], layers_per_block: 1, norm_num_groups: 8, attention_head_dim: 2,"
    " cross_attention_dim: 8, temporal_position_embed_dim: 8}",
    "--model.init_args.sampling.num_inference_steps", "1",
    "--model.init_args.sampling.guidance_context", "1.0",
    "--model.init_args.sampling.guidance_global", "1.0",
    "--model.init_args.schedule.max_batch", "4",
    "--writer.preset", "ultrafast",
]


def peak_rss_kb(video: Path, out: Path) -> int:
    args = ["predict", "--config", str(REPO / "configs" / "predict_tiny.yaml"), "--input", str(video),
            "--target_ratio", "16:9", "--output_dir", str(out), *CHEAP]
    # one intra-op thread: on a shared 2-core machine, spinning OpenMP workers slow tiny ops 10x
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [l for l in done.stdout.splitlines() if l.startswith("PEAK_RSS_KB")]
    return int(line.split()[1])


def test_peak_memory_does_not_grow_with_length(tmp_path):
    short = write_sample_video(tmp_path / "short.mp4", 200, 160, 120)
    long = write_sample_video(tmp_path / "long.mp4", 2000, 160, 120)
    short_kb = peak_rss_kb(short, tmp_path / "out")
    long_kb = peak_rss_kb(long, tmp_path / "out")
    print(f"peak RSS: 200 frames {short_kb / 1024:.1f} MiB, 2000 frames {long_kb / 1024:.1f} MiB")
    assert long_kb <= short_kb + MARGIN_KB, (short_kb, long_kb)
    for name in ("short_16-9.mp4", "long_16-9.mp4"):
        assert (tmp_path / "out" / name).stat().st_size > 0
