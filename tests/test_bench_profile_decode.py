"""bench/profile_decode.py on a tiny model: it runs and its per-token figures add up."""

from helpers import bench_module, tiny_model

bench = bench_module("profile_decode")


def test_the_decode_profile_splits_a_token_into_operators_and_the_rest(tmp_path, capsys):
    model = tiny_model(tmp_path / "tiny")
    figures = bench.main(["--model", str(model), "--new-tokens", "4", "--top", "3"])
    assert 0 < figures["operators_ms_per_token"] < figures["ms_per_token"]
    printed = capsys.readouterr().out.splitlines()
    assert "tokens/s unprofiled" in printed[0] and "aten::" in printed[2]
    assert printed[-1].startswith("(outside operators") and printed[-2].startswith("(all operators)")
