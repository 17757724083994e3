"""Quantizer benchmark (ours vs SpeechBrain's) on tiny sizes: rows, CLI, skips."""

import json
import math
import subprocess
import sys

import pytest
import torch

from tools import bench_quantizer as bq

KEYS = {
    "frames", "ours_s", "sb_s", "speedup", "ours_peak_mib", "sb_peak_mib",
    "memory_ratio", "codes_equal", "max_tie_gap", "sb_estimate_gib", "sb_skipped",
    "mem_method", "threads",
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """One real CLI run (2 codebooks x 256 x 8): its stdout lines and rows."""
    rows_json = tmp_path_factory.mktemp("bench") / "rows.json"
    out = subprocess.run(
        [sys.executable, "-m", "tools.bench_quantizer", "--frames", "200",
         "1000", "--codebooks", "2", "--vocab", "256", "--dim", "8",
         "--repeats", "2", "--rows-json", str(rows_json)],
        capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    return out.strip().splitlines(), json.loads(rows_json.read_text())


def test_rows(cli):
    _, rows = cli
    assert [r["frames"] for r in rows] == [200, 1000]
    for r in rows:
        assert KEYS <= set(r), KEYS - set(r)
        assert r["sb_skipped"] is None
        for key in ("ours_s", "sb_s", "ours_peak_mib", "sb_peak_mib"):
            assert r[key] > 0 and math.isfinite(r[key]), (key, r[key])
        assert r["speedup"] == pytest.approx(r["sb_s"] / r["ours_s"])
        assert r["memory_ratio"] == pytest.approx(r["sb_peak_mib"] / r["ours_peak_mib"])
        # Same buffers, same definition: equal up to fp32 near-ties.
        assert r["codes_equal"] >= 0.999
        assert r["max_tie_gap"] < 1e-4


def test_cli_table_and_json(cli):
    lines, rows = cli
    assert lines[-1].startswith("{")
    summary = json.loads(lines[-1])
    assert summary["frames"] == 1000
    assert summary["quantizer_speedup"] == pytest.approx(rows[-1]["speedup"], rel=1e-3)
    assert summary["quantizer_memory_ratio"] == pytest.approx(
        rows[-1]["memory_ratio"], rel=1e-3
    )
    assert sum(line.startswith("| 200 |") or line.startswith("| 1000 |")
               for line in lines) == 2


def test_skip_over_cap_and_summary(monkeypatch):
    """SpeechBrain's point over the cap is skipped, not run; summary ignores it."""
    calls = []

    def fake(impl, spec, device):
        calls.append((impl, spec["frames"]))
        codes = torch.zeros(spec["frames"], spec["n_codebooks"], dtype=torch.int32)
        return {"seconds": 0.5 if impl == "sb" else 0.1, "codes": codes.numpy(),
                "peak_mib": 30.0 if impl == "sb" else 10.0,
                "mem_method": "fake", "threads": 1}

    monkeypatch.setattr(bq, "_measure", fake)
    # (1, 64, T, 8) fp32: 2 KiB per frame; cap 1 MiB -> 100 runs, 1000 is skipped.
    rows = bq.compare_quantizers((100, 1000), 2, 64, 8, 16, sb_cap_gib=1 / 1024)
    assert calls == [("ours", 100), ("sb", 100), ("ours", 1000)]
    assert rows[0]["speedup"] == pytest.approx(5) and rows[0]["codes_equal"] == 1.0
    assert rows[0]["memory_ratio"] == pytest.approx(3)
    assert rows[1]["sb_s"] is None and "cap" in rows[1]["sb_skipped"]
    assert bq.summary(rows) == {"quantizer_speedup": pytest.approx(5),
                                "quantizer_memory_ratio": pytest.approx(3),
                                "frames": 100}
    assert "skipped" in bq.format_table(rows).splitlines()[-1]


def test_max_tie_gap_on_a_forced_mismatch():
    spec = dict(frames=5, n_codebooks=2, codebook_size=256, codebook_dim=8,
                input_dim=320, seed=0)
    ours = bq._ours(2, 256, 8, 320, 0)
    codes = ours(bq._input(5, 320, 0), "mel").to(torch.int32).numpy()
    assert bq._max_tie_gap(spec, codes, codes.copy()) == 0.0
    other = codes.copy()
    other[0, 0] = (other[0, 0] + 1) % 256
    gap = bq._max_tie_gap(spec, codes, other)
    assert 0 < gap <= 2  # a real (non-tie) gap between two unit-vector scores
