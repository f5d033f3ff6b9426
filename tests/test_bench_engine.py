"""bench/engine.py on a tiny model: it runs, prints its figures, and the prefix is reused as it says."""

from helpers import bench_module, tiny_model

bench = bench_module("engine")


def test_engine_bench_reports_step_ratio_and_prefix_reuse(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny", context_length=512)
    summary = bench.main(["--model", str(model), "--rows", "2", "--steps", "3", "--trials", "1"])
    assert summary["tokens_per_step_ratio"] > 0 and summary["first_token_ms_reused"] > 0
    printed = capsys.readouterr().out
    assert "x the tokens per step" in printed and printed.count("prefix reuse:") == 3
    assert "0 of" in printed.splitlines()[1]  # the first conversation has nothing to reuse; the later ones do
    assert all(" 0 of" not in line for line in printed.splitlines()[2:4])
