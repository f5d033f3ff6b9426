"""bench/serve.py: its figures (percentiles, failures) and a small run against a real `gpts serve` on loopback."""

import asyncio
import json
import math

import pytest
from helpers import bench_module, tiny_model

bs = bench_module("serve")


def test_summary_counts_failures_and_takes_percentiles_of_the_successes():
    results = [bs.RequestResult(ok=True, tokens=10, ttft=0.1, itl=[0.01, 0.03], e2e=1.0),
               bs.RequestResult(ok=True, tokens=6, ttft=0.3, itl=[0.02], e2e=2.0),
               bs.RequestResult(ok=False, error="HTTP 429: queue full")]
    report = bs.summarize(2, results, wall_s=4.0)
    assert (report.requests, report.completed, report.failed) == (3, 2, 1)
    assert report.generated_tokens == 16 and report.tokens_per_s == 4.0
    assert report.ttft_ms["p50"] == pytest.approx(200) and report.ttft_ms["p99"] == pytest.approx(298)
    assert report.itl_ms["p50"] == pytest.approx(20) and report.e2e_ms["p99"] == pytest.approx(1990)
    assert report.errors == ["HTTP 429: queue full"]
    nothing = bs.summarize(1, [], wall_s=0.0)
    assert nothing.tokens_per_s == 0 and math.isnan(nothing.ttft_ms["p50"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_bench_against_a_real_gpts_server(tiny, tmp_path, capsys):
    out = tmp_path / "report.json"
    results = bs.main(["--model", str(tiny), "--clients", "1,3", "--requests", "2", "--max-tokens", "4",
                       "--no-llama-server", "--json", str(out)])
    assert list(results) == ["gpts"]
    one, three = results["gpts"]
    assert (one.clients, one.requests, three.clients, three.requests) == (1, 2, 3, 6)
    for report in (one, three):
        assert report.failed == 0 and report.completed == report.requests, report.errors
        assert 0 < report.generated_tokens <= 4 * report.requests and report.tokens_per_s > 0
        assert 0 < report.ttft_ms["p50"] <= report.ttft_ms["p99"] <= report.e2e_ms["p99"]
    written = json.loads(out.read_text())
    assert [r["clients"] for r in written["gpts"]] == [1, 3] and "scaling_8_over_1" in written
    printed = capsys.readouterr().out
    assert "TTFT p50/p99 ms" in printed and "failed requests: 0" in printed and "llama-server: off" in printed


def test_requests_that_fail_are_counted_with_their_error():
    """A server that is not there: every request fails, none crashes the bench or counts as done."""
    url = f"http://127.0.0.1:{bs.free_port()}"
    report = asyncio.run(bs.run_load(url, "any", clients=2, requests=2, max_tokens=2, time_limit=60))
    assert (report.requests, report.completed, report.failed) == (4, 0, 4)
    assert report.errors == ["ConnectError: All connection attempts failed"] and report.tokens_per_s == 0
