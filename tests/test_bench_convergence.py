"""benchmarks/convergence.py --quick: the proof-of-learning harness runs end to end."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_convergence_quick(tmp_path):
    out = tmp_path / "conv"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "convergence.py"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    for method in ("model", "model_estimate", "telea"):
        assert set(res[method]) == {"psnr_region", "temporal_error"}
    assert set(res["model_beats_telea"]) == {"model", "model_estimate"}
    gain = res["psnr_gain_over_telea"]["model"]
    assert gain["clips"] == 2 and 0 <= gain["clips_better"] <= 2
    assert abs(gain["mean_db"] - (res["model"]["psnr_region"] - res["telea"]["psnr_region"])) < 1e-3
    # the baseline is a real fill: far better than black, worse than perfect
    assert 10 < res["telea"]["psnr_region"] < 40 and 0 < res["telea"]["temporal_error"] < 0.5
    assert res["budget"]["steps"] == 2 and res["eval"]["mask_ratio"] == 0.5
    assert (out / "preview.png").stat().st_size > 0 and (out / "model.ckpt").exists()
