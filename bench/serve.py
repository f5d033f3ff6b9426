"""Serving under load: N concurrent streaming clients against `gpts serve`, and the same load against llama.cpp's
own server (`llama-server -np 8`) on the same GGUF file, side by side.

    .venv/bin/python bench/serve.py [--model default] [--clients 1,8,32] [--requests 3] [--max-tokens 64]
                                    [--time-limit 300] [--max-batch 8] [--llama-server PATH | --no-llama-server]
                                    [--json REPORT.json]

For each number of clients N: N clients stream chat completions (greedy, --max-tokens each, eos ignored where the
server allows it) one request after another, N x --requests requests in all, none started after --time-limit
seconds. As vLLM's benchmark_serving reports them:
- aggregate generated tokens/s: all completion tokens / the wall time from the first request to the last answer;
- TTFT, time to first token: from sending the request to the first chunk with text;
- ITL, inter-token latency: the gaps between chunks with text, over every request;
- E2E, end-to-end latency: from sending the request to the end of its stream;
each as p50 and p99, and the failed requests (an HTTP error, a broken stream, no text; must be 0).
The goal line: gpts' aggregate tokens/s at 8 clients against 1 client (continuous batching: >= 5x).

Servers run one at a time, on loopback, with the machine's cores; the clients run in this process. llama-server is
found at --llama-server, $LLAMA_SERVER, on PATH, or built next to this checkout (../llamacpp-build/build/bin, see
bench/README.md); without one the bench runs gpts alone.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx2 as httpx
import numpy as np

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market in a city you like.",
    "Write a letter to a friend about your first week at a new job.",
    "Give a detailed recipe for vegetable soup, with every step.",
    "Tell the history of the printing press and why it mattered.",
    "Describe the four seasons in a mountain village.",
    "Write a long poem about the sea at night.",
]
REQUEST_TIMEOUT = 600.0  # seconds a single request may take before it counts as failed
STARTUP_TIMEOUT = 300.0  # seconds a server may take to load its model
GOAL = 5.0  # aggregate tokens/s at 8 clients over 1 client
LLAMA_SLOTS = 8
LLAMA_SLOT_CONTEXT = 1024  # tokens per llama-server slot: prompt + completion of one request


@dataclass
class RequestResult:
    ok: bool
    tokens: int = 0
    ttft: float | None = None  # seconds
    itl: list[float] = field(default_factory=list)  # seconds between chunks with text
    e2e: float = 0.0  # seconds
    error: str | None = None


@dataclass
class LoadReport:
    clients: int
    requests: int
    completed: int
    failed: int
    wall_s: float
    generated_tokens: int
    tokens_per_s: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]
    e2e_ms: dict[str, float]
    errors: list[str]


def percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    """p50 and p99 (linear interpolation, as numpy and vLLM's benchmark_serving), in milliseconds by default."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan")}
    return {f"p{q}": float(np.percentile(values, q)) * scale for q in (50, 99)}


def summarize(clients: int, results: list[RequestResult], wall_s: float) -> LoadReport:
    done = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in done)
    return LoadReport(clients=clients, requests=len(results), completed=len(done), failed=len(results) - len(done),
                      wall_s=wall_s, generated_tokens=tokens, tokens_per_s=tokens / wall_s if wall_s > 0 else 0.0,
                      ttft_ms=percentiles([r.ttft for r in done if r.ttft is not None]),
                      itl_ms=percentiles([gap for r in done for gap in r.itl]),
                      e2e_ms=percentiles([r.e2e for r in done]),
                      errors=sorted({r.error for r in results if r.error})[:5])


# -- the clients ------------------------------------------------------------------------------------------------


async def stream_one(client: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> RequestResult:
    """One streamed chat completion, timed chunk by chunk. The client is plain HTTP and a JSON parse per event, as
    vLLM's benchmark_serving: the clients share the machine with the server, so they must cost it little."""
    start = time.perf_counter()
    last, chunks, usage_tokens = None, 0, None
    result = RequestResult(ok=False)
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
            "ignore_eos": True}  # llama.cpp's and vLLM's extension: every request gives max_tokens
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread()).decode()}"[:300]
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    result.error = f"error event: {chunk['error']}"[:300]
                    return result
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
                if any(choice["delta"].get("content") for choice in chunk.get("choices", ())):
                    now = time.perf_counter()
                    if last is None:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last, chunks = now, chunks + 1
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as e:  # the connection, a timeout, a broken event
        result.error = f"{type(e).__name__}: {e}"[:300]
        return result
    result.e2e = time.perf_counter() - start
    result.tokens = usage_tokens if usage_tokens is not None else chunks
    result.ok = chunks > 0
    result.error = None if result.ok else "no text in the answer"
    return result


async def run_load(url: str, model: str, clients: int, requests: int, max_tokens: int,
                   time_limit: float) -> LoadReport:
    """`clients` clients, each streaming one request after another, until `clients * requests` requests have been
    sent or `time_limit` seconds have passed (requests already sent finish)."""
    budget = iter(range(clients * requests))
    results: list[RequestResult] = []
    start = time.perf_counter()
    # A connection per request: llama-server closes kept-alive connections that a client may be reusing just then
    # ("Server disconnected without sending a response"), a failure of neither server's serving.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT, limits=limits,
                                 headers={"Authorization": "Bearer unused"}) as client:

        async def client_loop() -> None:
            for i in budget:  # one shared iterator: the clients take the next request in turn
                if time.perf_counter() - start > time_limit:
                    return
                results.append(await stream_one(client, model, PROMPTS[i % len(PROMPTS)], max_tokens))

        await asyncio.gather(*(client_loop() for _ in range(clients)))
    return summarize(clients, results, time.perf_counter() - start)


# -- the servers ------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited ({process.returncode}); its log:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet, or 503 while the model loads
        time.sleep(0.5)
    raise RuntimeError(f"the server was not ready after {STARTUP_TIMEOUT:.0f} s; its log:\n{log.read_text()[-3000:]}")


@contextmanager
def server(command: list[str], url: str) -> Iterator[str]:
    """Run a server process until the block ends; its URL once /health answers 200. SIGTERM, then SIGKILL."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        log = Path(tmp) / "server.log"
        with log.open("w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_healthy(url, process, log)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def gpts_command(model: str, port: int, max_batch: int | None) -> list[str]:
    gpts = Path(sys.executable).parent / "gpts"
    command = [str(gpts), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
    return command + (["--max-batch", str(max_batch)] if max_batch else [])


def llama_command(binary: Path, gguf: Path, port: int) -> list[str]:
    # --poll 0: llama.cpp's threads sleep rather than spin between steps. Spinning, they fight the clients in this
    # process (and anything else running) for the cores: on 2 cores one client then saw 3-second stalls.
    return [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(LLAMA_SLOTS),
            "-c", str(LLAMA_SLOTS * LLAMA_SLOT_CONTEXT), "-t", str(os.cpu_count() or 1), "--poll", "0"]


def find_llama_server(given: str | None) -> Path | None:
    """--llama-server, else $LLAMA_SERVER, else llama-server on PATH, else one built next to this checkout."""
    candidates = [given, os.environ.get("LLAMA_SERVER"), shutil.which("llama-server"),
                  Path(__file__).resolve().parents[2] / "llamacpp-build" / "build" / "bin" / "llama-server"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    if given:
        raise SystemExit(f"--llama-server {given}: no executable there")
    return None


def first_model(url: str) -> str:
    """The id of the first model the server lists: gpts lists the models it was started with first."""
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        return json.load(response)["data"][0]["id"]


def bench_server(command: list[str], url: str, levels: list[int], args: argparse.Namespace,
                 name: str) -> list[LoadReport]:
    reports = []
    with server(command, url):
        model = first_model(url)
        asyncio.run(run_load(url, model, 1, 1, 4, args.time_limit))  # warm-up: first-request costs are not load
        for clients in levels:
            report = asyncio.run(run_load(url, model, clients, args.requests, args.max_tokens, args.time_limit))
            print(f"  {name:<10} {row(report)}", flush=True)
            reports.append(report)
    return reports


# -- the report -------------------------------------------------------------------------------------------------

HEADER = (f"{'clients':>7} {'done':>5} {'failed':>6} {'tokens':>7} {'tok/s':>8} {'TTFT p50/p99 ms':>17} "
          f"{'ITL p50/p99 ms':>16} {'E2E p50/p99 s':>15}")


def pair(figures: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{figures['p50'] * scale:.{digits}f}/{figures['p99'] * scale:.{digits}f}"


def row(r: LoadReport) -> str:
    return (f"{r.clients:>7} {r.completed:>5} {r.failed:>6} {r.generated_tokens:>7} {r.tokens_per_s:>8.1f} "
            f"{pair(r.ttft_ms):>17} {pair(r.itl_ms):>16} {pair(r.e2e_ms, 1e-3, 2):>15}")


def print_report(results: dict[str, list[LoadReport]]) -> float | None:
    """Both servers side by side with the ratio of their tokens/s, then the goal line; returns the 8-over-1 ratio."""
    print()
    print(f"{'server':<10} {HEADER}")
    gpts = {r.clients: r for r in results["gpts"]}
    peer = {r.clients: r for r in results.get("llama.cpp", [])}
    for clients, ours in gpts.items():
        print(f"{'gpts':<10} {row(ours)}")
        if clients in peer:
            theirs = peer[clients]
            ratio = ours.tokens_per_s / theirs.tokens_per_s if theirs.tokens_per_s else float("nan")
            print(f"{'llama.cpp':<10} {row(theirs)}   gpts/llama.cpp tokens/s {ratio:.2f}x")
    failed = sum(r.failed for reports in results.values() for r in reports)
    print(f"failed requests: {failed}" + (" (must be 0)" if failed else ""))
    for error in sorted({e for reports in results.values() for r in reports for e in r.errors}):
        print(f"  {error}")
    if 1 in gpts and 8 in gpts and gpts[1].tokens_per_s:
        scaling = gpts[8].tokens_per_s / gpts[1].tokens_per_s
        print(f"goal: gpts aggregate tokens/s at 8 clients / 1 client = {scaling:.2f}x (target >= {GOAL:.0f}x: "
              f"{'met' if scaling >= GOAL else 'NOT met'})")
        return scaling
    return None


def main(argv: list[str] | None = None) -> dict[str, list[LoadReport]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="the model to serve (a GGUF to compare with llama.cpp)")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--requests", type=int, default=3, help="requests per client at each level")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds after which a level sends no more")
    parser.add_argument("--max-batch", type=int, default=None, help="gpts serve --max-batch (default: its own)")
    parser.add_argument("--llama-server", default=None, help="the llama-server executable (default: found)")
    parser.add_argument("--no-llama-server", action="store_true", help="bench gpts alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    if min(levels) < 1 or args.requests < 1 or args.max_tokens < 1:
        parser.error("--clients, --requests and --max-tokens must be positive")

    from gpts.registry import resolve

    ref = resolve(args.model)
    binary = None if args.no_llama_server else find_llama_server(args.llama_server)
    if binary is not None and ref.kind not in ("bundled", "gguf"):
        parser.error("--model must be a GGUF file (or the bundled model) for llama-server; or --no-llama-server")
    print(f"model {args.model}, clients {levels}, {args.requests} requests each, {args.max_tokens} tokens, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; llama-server: "
          f"{binary or ('off' if args.no_llama_server else 'not found, skipped')}")

    port = free_port()
    results = {"gpts": bench_server(gpts_command(args.model, port, args.max_batch), f"http://127.0.0.1:{port}",
                                    levels, args, "gpts")}
    if binary is not None:
        port = free_port()
        results["llama.cpp"] = bench_server(llama_command(binary, ref.path, port), f"http://127.0.0.1:{port}",
                                            levels, args, "llama.cpp")
    scaling = print_report(results)
    if args.json is not None:
        report = {name: [asdict(r) for r in reports] for name, reports in results.items()}
        args.json.write_text(json.dumps({**report, "scaling_8_over_1": scaling}, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
