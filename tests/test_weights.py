"""weights.py: one place builds and loads UNets; inference never imports the training module."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_predict_and_evaluation_do_not_import_the_training_module():
    modules = [
        "lightning_m3ddm.predict",
        "lightning_m3ddm.predict.cli_args",
        "lightning_m3ddm.evaluation.runner",
        "lightning_m3ddm.evaluation.evaluator",
        "lightning_m3ddm.evaluation.model_runner",
        "lightning_m3ddm.weights",
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print('lightning_m3ddm.lit_module' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_only_the_video_package_opens_video_files():
    """Video I/O lives in lightning_m3ddm/video: no other module imports PyAV or OpenCV's readers."""
    package = ROOT / "lightning_m3ddm"
    offenders = []
    for path in package.rglob("*.py"):
        if path.parent == package / "video":
            continue
        text = path.read_text()
        if any(pattern in text for pattern in ("import av\n", "from av ", "av.open(", "cv2.VideoCapture", "cv2.VideoWriter")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
