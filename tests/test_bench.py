"""The step benchmark runs end to end on CPU and reports every required key."""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from tools import bench  # noqa: E402

TINY = ["--d_model=32", "--nhead=2", "--num_encoder_layers=3", "--d_ffn=64",
        "--n_codebooks=4", "--codebook_size=64", "--target_layers=[0, 2]"]


def test_bench_reports_ratios_and_writes_markdown(tmp_path, capsys):
    out = tmp_path / "perf.md"
    summary = bench.main(["--device", "cpu", "--batch-seconds", "4", "--utt-seconds", "2",
                          "--warmup", "1", "--iters", "1", "--quantizer-frames",
                          "--out", str(out), *TINY])
    for key in ("step_time_ratio_online", "step_time_ratio_cached", "sb_way_vs_ours_stage0",
                "best_rq_step_s", "latent_rq_online_step_s", "latent_rq_cached_step_s"):
        assert summary[key] > 0, key
    # the target encoder's forward adds counted FLOPs, but less than a training step
    assert 1.0 < summary["step_time_ratio_online_flop_floor"] < 2.0
    for key in ("fast_frontend_speedup", "fast_ffn_speedup", "fast_attention_speedup"):
        assert summary[key] > 0, key
    assert summary["quantizer_speedup"] is None  # no quantizer frames asked
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("{") and '"step_time_ratio_online"' in printed[-1]
    text = out.read_text()
    assert "| BEST-RQ, all fast paths | 0 |" in text
    assert "| Latent-RQ, target cache (all fast paths) | 1 |" in text
    assert "| BEST-RQ, fast_frontend off (SpeechBrain's Conv2d layout) | 0 |" in text
    assert "Compute floor of the online ratio" in text
    # every latent-target variant is timed against BEST-RQ
    from recipes.reproduce.reproduce import VARIANTS
    assert sorted(summary["target_variants"]) == sorted(VARIANTS)
    for name, v in summary["target_variants"].items():
        assert v["step_s"] > 0 and v["ratio"] > 0 and v["transition_s"] > 0, name
        assert f"| {name} |" in text
    # and every layer regulariser against BEST-RQ
    from recipes.reproduce.reproduce import REGULARIZERS
    assert sorted(summary["regularizers"]) == sorted(REGULARIZERS)
    assert "## Layer regularisers (stage 0, vs BEST-RQ)" in text
    assert text.startswith(f"# Performance\n\n{bench.BEGIN}\nProduced by ")
    assert text.rstrip().endswith(bench.END)


def test_bench_out_keeps_hand_written_sections_and_refuses_unmarked_files(tmp_path, capsys):
    """A rerun replaces only the generated part; a file with no markers is
    refused before the benchmark runs, and left as it was."""
    import pytest

    notes = tmp_path / "notes.md"
    notes.write_text("# Notes by hand\n")
    with pytest.raises(SystemExit):
        bench.parse_args(["--out", str(notes)])
    assert "notes.md holds text tools.bench did not write" in capsys.readouterr().err
    assert notes.read_text() == "# Notes by hand\n"
    perf = tmp_path / "perf.md"
    perf.write_text(f"# Perf\n\nintro\n{bench.BEGIN}\nold table\n{bench.END}\n## By hand\nkept\n")
    assert bench.parse_args(["--out", str(perf)]).out == str(perf)
    new = bench.splice_generated(str(perf), "new table")
    assert new == f"# Perf\n\nintro\n{bench.BEGIN}\nnew table\n{bench.END}\n## By hand\nkept\n"


def test_bench_times_only_the_regularizers(capsys):
    from recipes.reproduce.reproduce import REGULARIZERS

    summary = bench.main(["--device", "cpu", "--batch-seconds", "4", "--utt-seconds", "2",
                          "--warmup", "0", "--iters", "1", "--only-regularizers", *TINY])
    assert summary["BEST-RQ"] > 0
    assert sorted(summary["regularizers"]) == sorted(REGULARIZERS)
    assert all(v["step_s"] > 0 and v["ratio"] > 0 for v in summary["regularizers"].values())
    assert "| sigreg005 |" in capsys.readouterr().out
