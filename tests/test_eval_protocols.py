"""Evaluation protocols (mask geometry) and the paper's reference numbers."""

import math

import numpy as np
import pytest

from lightning_m3ddm.evaluation.paper_results import load_paper_results, paper_rows
from lightning_m3ddm.evaluation.protocols import (
    LATENT_GRID,
    PROTOCOLS,
    get_protocol,
    long_video_protocol,
    mask_bands,
    mask_for,
    masked_fraction,
)


def _runs(line: np.ndarray) -> tuple[int, int]:
    """Lengths of the masked runs at the start and at the end of a 1D bool line."""
    start = int(np.argmin(line)) if not line.all() else line.size
    end = int(np.argmin(line[::-1])) if not line.all() else line.size
    return start, end


@pytest.mark.parametrize("name, ratio", [("davis_h025", 0.25), ("davis_h0666", 0.666), ("ytvos_h025", 0.25), ("ytvos_h0666", 0.666)])
@pytest.mark.parametrize("height, width", [(256, 256), (480, 854), (144, 176)])
def test_horizontal_protocols_mask_left_and_right_evenly(name, ratio, height, width):
    mask = mask_for(name, height, width)
    assert mask.shape == (height, width) and mask.dtype == bool
    # Same band on every row; no row fully masked (top / bottom stay known).
    assert (mask == mask[:1]).all()
    left, right = _runs(mask[0])
    assert left == right > 0
    assert left % LATENT_GRID == 0
    # Within half a grid cell per side of the asked ratio of the width.
    assert abs(masked_fraction(mask) - ratio) <= LATENT_GRID / width + 1e-9


def test_paper_resolution_ratios_are_exact_where_the_grid_allows():
    assert masked_fraction(mask_for("davis_h025", 256, 256)) == 0.25
    # 0.333 * 256 = 85.25 px per side -> nearest multiple of 8 is 88.
    assert mask_bands("davis_h0666", 256, 256).left == 88


def test_opc_keeps_magvit_central_box():
    # MAGVIT rectangle_central at 128 x 128: rows and columns [H//4, 3H//4) known.
    mask = mask_for("ssv2_opc", 128, 128)
    expected = np.ones((128, 128), dtype=bool)
    expected[32:96, 32:96] = False
    assert np.array_equal(mask, expected)
    assert masked_fraction(mask) == 0.75


def test_opc_area_ratio_on_other_sizes():
    mask = mask_for("ssv2_opc", 256, 320)
    bands = mask_bands("ssv2_opc", 256, 320)
    assert bands.top == bands.bottom and bands.left == bands.right
    assert abs(masked_fraction(mask) - 0.75) < 0.03


def test_opv_and_oph_follow_magvit_naming():
    opv, oph = mask_for("ssv2_opv", 128, 128), mask_for("ssv2_oph", 128, 128)
    # OPV: known central vertical strip (all rows, columns [32, 96)).
    assert not opv[:, 32:96].any() and opv[:, :32].all() and opv[:, 96:].all()
    # OPH: known central horizontal strip (all columns, rows [32, 96)).
    assert not oph[32:96].any() and oph[:32].all() and oph[96:].all()
    assert masked_fraction(opv) == masked_fraction(oph) == 0.5


def test_ssv2_protocols_carry_magvit_clip_sampling():
    for name in ("ssv2_opc", "ssv2_opv", "ssv2_oph"):
        protocol = get_protocol(name)
        assert (protocol.frame_size, protocol.clip_frames, protocol.clips_per_video, protocol.inference) == (128, 16, 2, "dense")


def test_long_video_protocol_ratio_is_configurable():
    default = get_protocol("long_video")
    assert default.inference == "coarse_to_fine" and default.strides == (30, 15, 1)
    custom = long_video_protocol(ratio=0.5)
    assert masked_fraction(mask_for(custom, 256, 256)) == 0.5
    left, right = _runs(mask_for(custom, 256, 256)[0])
    assert left == right == 64


def test_tiny_frames_fall_back_to_pixel_rounding():
    mask = mask_for("davis_h025", 12, 12)
    left, right = _runs(mask[0])
    assert left == right and 1 <= left < 6
    assert (~mask).any()
    with pytest.raises(ValueError, match="too small"):
        mask_for("davis_h025", 2, 2)


def test_bad_inputs_have_clear_messages():
    with pytest.raises(KeyError, match="known:"):
        mask_for("davis_h05", 64, 64)
    with pytest.raises(ValueError, match="height"):
        mask_for("davis_h025", 0, 64)


def test_paper_data_is_complete_and_consistent():
    data = load_paper_results()
    for table in data["tables"]:
        for protocol in table["protocols"]:
            assert protocol in PROTOCOLS, f"{table['id']} names unknown protocol {protocol}"
        for row in table["rows"]:
            assert set(row["values"]) == set(table["columns"])
            for text in row["values"].values():
                assert math.isfinite(float(text))
    table3 = next(t for t in data["tables"] if t["id"] == "table3_ssv2")
    for row in table3["rows"]:
        values = {k: float(v) for k, v in row["values"].items()}
        # AVG is the mean of the three outpainting settings, to the printed precision.
        assert abs(values["avg"] - (values["opc"] + values["opv"] + values["oph"]) / 3) <= 0.05 + 1e-9
    for table in data["tables"]:
        if table["table"] != "Table 1":
            continue
        for row in table["rows"]:
            mse, psnr = float(row["values"]["mse"]), float(row["values"]["psnr"])
            # Mean of per-video PSNRs >= PSNR of the mean MSE (Jensen): catches swapped columns.
            assert psnr >= 10 * math.log10(1 / mse)


def test_paper_rows_match_protocols():
    davis = paper_rows("davis_h025")
    assert [r.method for r in davis] == ["Dehan [6]", "SDM [28]", "Ours"]
    assert davis == paper_rows("davis_h0666")
    assert set(davis[0].printed) == {"mse", "psnr", "ssim", "lpips", "fvd"}
    assert davis[2].values["mse"] == float(davis[2].printed["mse"])
    opc = paper_rows("ssv2_opc")
    assert [r.method for r in opc] == ["MAGVIT-L-MT [43]", "Ours"]
    assert all(set(r.printed) == {"fvd"} for r in opc)
    opv = paper_rows("ssv2_opv")
    # Each SSv2 protocol takes the FVD of its own column.
    assert len({r.printed["fvd"] for r in opc + opv}) == 4
    assert {r.table for r in paper_rows("long_video")} == {"Table 2"}
    assert paper_rows("no_such_protocol") == []
