"""Load figures of the inference service ``gearsh-serve`` (issue 5), against 127.0.0.1 only.

The script starts ``python -m service.main`` itself on free local ports (settings through
``GEARS_H_*`` variables, gRPC off) and drives it with an asyncio + httpx load generator. Every
phase is bounded in time and in requests:

1. ``overhead``: one ~100-atom structure (an h-BN validation snapshot, 50 atoms, repeated
   2x1 in-plane), sequential requests; median latency over the median of
   ``Predictor(load_bundle(...)).predict([structure])`` timed in-process after warm-up (the
   bundle's own bucket ladder in both). Target: overhead <= 10 %.
2. ``throughput``: butanol molecules (15 atoms) at concurrency 32, closed loop, on a server
   with dynamic batching and on one with ``GEARS_H_BATCHING=false``. Target: ratio >= 3x.
3. ``saturation``: open-loop arrivals at twice the batching server's measured throughput on a
   server with a small ``GEARS_H_MAX_QUEUE``: accepted p50/p99 latency, share of 503s and how
   fast they come back, server RSS (``VmRSS``) sampled from start to end. The issue asks for
   10 minutes; the default here is a short run (``--saturation-seconds``).
4. ``start``: process start -> ``/v2/health/ready`` 200 with ``GEARS_H_COMPILATION_CACHE_DIR``
   an empty temporary folder (cold), then again with the same folder (warm). Target: >= 5x.

    uv run python bench/service_load.py                 # print only
    uv run python bench/service_load.py --quick --write # smaller bounds, update RESULTS.md
    uv run python bench/service_load.py --throughput-only \
        --server-env GEARS_H_PREPROCESS_THREADS=8 --section 'Service load (GPU)' --write
        # phase 2 and the start figures only: a short GPU lease (RESULTS "Service load (GPU)")

``--model default`` (the default) is the committed bundle; when it is missing the script waits
up to ``--wait-model`` seconds for it. ``--model random`` builds a small random-parameter bundle
(species H, B, C, N, O; timings only) in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgpack
import numpy as np
from results_file import command_line, write_section

from service.testing import ServeProcess, random_serving_bundle

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEARS_H_SHARED_DATA", ROOT.parent / "shared" / "data"))
SECTION = "Service load"
CONTENT_TYPE = "application/vnd.msgpack"


# -- model ---------------------------------------------------------------------------------------


RANDOM_LADDER = {
    "min_atoms": 16,
    "max_atoms": 128,
    "ratio": 2.9,
    "edges_per_atom": 32,
    "pairs_per_atom": 48,
    "max_graphs": 16,
}


def resolve_model(spec: str, wait_s: float, tmp: Path) -> tuple[Path, str]:
    """The bundle directory and a one-line description of it."""
    from gears_h_core.io.model_source import DEFAULT_MODEL, default_bundle_path, resolve_bundle_path

    if spec == "random":
        path = random_serving_bundle(tmp / "random_bundle", RANDOM_LADDER, name="bench-random")
        return path, "random-parameter bundle (tiny architecture, timings only)"
    if spec == DEFAULT_MODEL:
        end = time.monotonic() + wait_s
        while not (default_bundle_path() / "manifest.json").is_file():
            if time.monotonic() > end:
                sys.exit(f"the default bundle {default_bundle_path()} did not appear in {wait_s} s")
            print("waiting for the default bundle ...", flush=True)
            time.sleep(15)
    path = resolve_bundle_path(spec)
    return path, f"`{spec}` ({path.relative_to(ROOT) if path.is_relative_to(ROOT) else path})"


# -- structures ----------------------------------------------------------------------------------


def hbn_100() -> str:
    """An h-BN validation snapshot (50 atoms) repeated 2x1 in-plane, as extxyz text."""
    import io

    from ase.io import read, write

    src = sorted((DATA / "hbn_pbe_dzp" / "valid").glob("*/atoms.extxyz"))[0]
    atoms = read(src).repeat((2, 1, 1))
    buf = io.StringIO()
    write(buf, atoms, format="extxyz")
    return buf.getvalue()


def butanols() -> list[str]:
    files = sorted((DATA / "butanol_pbe_def2svp" / "valid").glob("*/atoms.extxyz"))
    return [f.read_text() for f in files]


def body(text: str) -> bytes:
    from gears_h_core.io.wire import encode_request

    return encode_request([("extxyz", text)], ["H", "S"])


# -- server process ------------------------------------------------------------------------------


# -- measurements --------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def direct_latency(
    bundle: Path, text: str, n: int, ladder_max_atoms: int | None
) -> tuple[float, int]:
    """Median seconds of ``Predictor.predict([structure])`` after warm-up; atoms.

    The bundle's ladder, capped like the server's ``GEARS_H_LADDER_MAX_ATOMS`` when given.
    """
    from gears_h_core.graph.padding import BucketLadder
    from gears_h_core.io.bundle import load_bundle
    from gears_h_core.io.structures import parse_structures
    from gears_h_core.predict import Predictor

    loaded = load_bundle(bundle)
    params = {k: v for k, v in loaded.ladder.items() if k != "buckets"}
    if ladder_max_atoms is not None:
        params["max_atoms"] = ladder_max_atoms
        params["min_atoms"] = min(int(params["min_atoms"]), ladder_max_atoms)
    predictor = Predictor(loaded, ladder=BucketLadder.from_dict(params))
    (structure,) = parse_structures("extxyz", text)
    for _ in range(3):
        predictor.predict([structure])
    times = []
    for _ in range(n):
        t = time.perf_counter()
        predictor.predict([structure])
        times.append(time.perf_counter() - t)
    n_atoms = structure.n_atoms
    del predictor
    gc.collect()
    return statistics.median(times), n_atoms


async def sequential(url: str, payload: bytes, n: int) -> Sequential:
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(3):
            r = await client.post(url + "/infer", content=payload, headers=_headers())
            r.raise_for_status()
        times = []
        parts: dict[str, list[float]] = {"queue_ms": [], "compute_ms": [], "serialize_ms": []}
        size = 0
        for _ in range(n):
            t = time.perf_counter()
            r = await client.post(url + "/infer", content=payload, headers=_headers())
            times.append(time.perf_counter() - t)
            r.raise_for_status()
            timing = msgpack.unpackb(r.content, raw=False)["results"][0]["timing"]
            for k, v in parts.items():
                v.append(float(timing[k]))
            size = len(r.content)
    return Sequential(times, {k: statistics.median(v) for k, v in parts.items()}, size)


@dataclass
class Sequential:
    times: list[float]
    timing_ms: dict[str, float]  # medians of the response's own timing (server side)
    bytes: int

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def batch_totals(url: str) -> tuple[float, float]:
    """``gearsh_batch_structures`` sum and count so far (structures, device calls)."""
    vals: dict[str, float] = {}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        for key in ("gearsh_batch_structures_sum", "gearsh_batch_structures_count"):
            if line.startswith(key + " ") or line.startswith(key + "{"):
                vals[key] = vals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return vals.get("gearsh_batch_structures_sum", 0.0), vals.get(
        "gearsh_batch_structures_count", 0.0
    )


def batch_mean(before: tuple[float, float], after: tuple[float, float]) -> float:
    calls = after[1] - before[1]
    return (after[0] - before[0]) / calls if calls else float("nan")


def throughput(
    url: str, payloads: list[bytes], concurrency: int, seconds: float, max_requests: int
) -> dict[str, float]:
    """`closed_loop` plus the mean structures per device call over it."""
    before = batch_totals(url)
    tp = asyncio.run(closed_loop(url, payloads, concurrency, seconds, max_requests))
    tp["batch"] = batch_mean(before, batch_totals(url))
    return tp


def _headers() -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE}


async def closed_loop(
    url: str, payloads: list[bytes], concurrency: int, seconds: float, max_requests: int
) -> dict[str, float]:
    """``concurrency`` workers posting back to back; completed requests per second."""
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        # warm-up: one round of every worker
        await asyncio.gather(
            *(
                client.post(url + "/infer", content=payloads[i % len(payloads)], headers=_headers())
                for i in range(concurrency)
            )
        )
        ok = errors = started = 0
        lat: list[float] = []
        t0 = time.perf_counter()
        end = t0 + seconds

        async def worker(k: int) -> None:
            nonlocal ok, errors, started
            while time.perf_counter() < end and started < max_requests:
                started += 1
                t = time.perf_counter()
                r = await client.post(
                    url + "/infer",
                    content=payloads[(k + started) % len(payloads)],
                    headers=_headers(),
                )
                lat.append(time.perf_counter() - t)
                if r.status_code == 200:
                    ok += 1
                else:
                    errors += 1

        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {
        "ok": ok,
        "errors": errors,
        "elapsed": elapsed,
        "rps": ok / elapsed,
        "p50": pct(lat, 50),
        "p99": pct(lat, 99),
    }


async def open_loop(
    server: ServeProcess, payloads: list[bytes], rate: float, seconds: float, max_in_flight: int
) -> dict[str, object]:
    """Arrivals at ``rate``/s (fixed spacing) for ``seconds``; statuses, latencies, RSS."""
    url = server.url
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    results: list[tuple[int, float]] = []
    rss: list[tuple[float, float]] = []
    dropped = 0
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        sem = asyncio.Semaphore(max_in_flight)

        async def one(i: int) -> None:
            t = time.perf_counter()
            try:
                r = await client.post(
                    url + "/infer", content=payloads[i % len(payloads)], headers=_headers()
                )
                status = r.status_code
            except httpx.HTTPError:
                status = -1
            results.append((status, time.perf_counter() - t))
            sem.release()

        tasks = []
        t0 = time.perf_counter()
        rss.append((0.0, server.rss_mib()))
        next_rss = t0 + 5
        i = 0
        while True:
            now = time.perf_counter()
            if now - t0 >= seconds:
                break
            due = t0 + i / rate
            if due > now:
                await asyncio.sleep(due - now)
            if sem.locked():  # the client's own cap: count as not sent
                dropped += 1
            else:
                await sem.acquire()
                tasks.append(asyncio.create_task(one(i)))
            i += 1
            if time.perf_counter() >= next_rss:
                rss.append((time.perf_counter() - t0, server.rss_mib()))
                next_rss += 5
        sent_s = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        rss.append((time.perf_counter() - t0, server.rss_mib()))
    ok = [lat for s, lat in results if s == 200]
    busy = [lat for s, lat in results if s == 503]
    other = [s for s, _ in results if s not in (200, 503)]
    return {
        "offered": i / sent_s,
        "sent": len(results),
        "dropped": dropped,
        "seconds": sent_s,
        "ok": len(ok),
        "ok_rps": len(ok) / sent_s,
        "ok_p50": pct(ok, 50),
        "ok_p99": pct(ok, 99),
        "busy": len(busy),
        "busy_p50": pct(busy, 50),
        "busy_p99": pct(busy, 99),
        "other": len(other),
        "rss": rss,
    }


def throughput_and_start(
    base: dict[str, str],
    tmp: Path,
    mols: list[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int,
) -> tuple[float, float, int, dict[str, float], dict[str, float]]:
    """The throughput phase alone, with the start figures it costs nothing to read: the
    batching server starts cold (empty cache), the one with ``GEARS_H_BATCHING=false`` warm
    from the same cache. Returns cold s, warm s, cache files, and the two closed loops."""
    cache = Path(base["GEARS_H_COMPILATION_CACHE_DIR"])
    servers: list[ServeProcess] = []

    def phase(env: dict[str, str], name: str) -> tuple[float, dict[str, float]]:
        server = ServeProcess(env, tmp / f"{name}.log", grpc=False)
        servers.append(server)
        start_s = server.wait_ready(timeout=1200)
        tp = throughput(server.url, mols, concurrency, seconds, max_requests)
        print(f"{name}: ready after {start_s:.1f} s, {tp['rps']:.1f} req/s", flush=True)
        server.stop()
        return start_s, tp

    try:
        cold_s, tp_on = phase(dict(base), "batching-on")
        cache_files = sum(1 for f in cache.rglob("*") if f.is_file())
        warm_s, tp_off = phase({**base, "GEARS_H_BATCHING": "false"}, "batching-off")
    finally:
        for s in servers:
            s.stop()
    return cold_s, warm_s, cache_files, tp_on, tp_off


def settings_note(env: dict[str, str]) -> str:
    """The servers' non-default settings, for the section text."""
    shown = {
        k: v
        for k, v in env.items()
        if k not in ("GEARS_H_MODEL", "GEARS_H_COMPILATION_CACHE_DIR", "GEARS_H_LOG_LEVEL")
    }
    return ", ".join(f"`{k}={v}`" for k, v in sorted(shown.items())) or "defaults"


def throughput_table(
    concurrency: int,
    seconds: float,
    max_requests: int,
    tp_on: dict[str, float],
    tp_off: dict[str, float],
) -> list[str]:
    lines = [
        f"### Throughput, butanol (15 atoms), concurrency {concurrency}, closed loop "
        f"(bounded {seconds:.0f} s / {max_requests} requests)",
        "",
        "| server | requests ok | errors | seconds | req/s | p50 (ms) | p99 (ms) "
        "| structures per device call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, tp in (("batching on", tp_on), ("GEARS_H_BATCHING=false", tp_off)):
        lines.append(
            f"| {name} | {tp['ok']} | {tp['errors']} | {tp['elapsed']:.1f} | {tp['rps']:.1f} "
            f"| {ms(tp['p50'])} | {ms(tp['p99'])} | {tp['batch']:.2f} |"
        )
    ratio = tp_on["rps"] / tp_off["rps"] if tp_off["rps"] else float("nan")
    lines.append(
        f"\nRatio batching on / off: **{ratio:.2f}x** (target >= 3x). Requests in flight at the "
        "bound run to completion (hence seconds above the bound); a first round of "
        f"{concurrency} warm-up requests is not counted. On a CPU one batched device "
        "call costs about as much per atom as separate calls (XLA already spreads one "
        "structure over the cores), so merging requests cannot gain much there; on a GPU a "
        "device call of one small molecule leaves the device mostly idle, and merging fills it."
    )
    return lines


def start_table(cold_s: float, warm_s: float, cache_files: int) -> list[str]:
    return [
        "### Cold vs warm start (process start -> /v2/health/ready 200)",
        "",
        "| start | seconds |",
        "|---|---:|",
        f"| cold (empty GEARS_H_COMPILATION_CACHE_DIR) | {cold_s:.1f} |",
        f"| warm (same cache dir) | {warm_s:.1f} |",
        f"\nRatio cold / warm: **{cold_s / warm_s:.2f}x** (target >= 5x). The cold start left "
        f"{cache_files} file(s) in the cache folder (JAX stores only compilations longer than "
        "`jax_persistent_cache_min_compile_time_secs`, 1 s by default).",
    ]


# -- main ----------------------------------------------------------------------------------------


def rss_growth_note(rss: list[tuple[float, float]], seconds: float) -> str:
    """Memory growth under load: peak RSS of the first minute against the last minute (the
    RSS falls back between bursts, so peaks are compared, not single samples)."""
    if seconds < 120:
        return (
            f"\nThe issue asks for a 10-minute run at 2x saturation; this is a bounded "
            f"{seconds:.0f}-s run (`--saturation-seconds`): the RSS trace covers seconds "
            "only and says nothing about growth over 10 minutes."
        )
    under_load = [(t, m) for t, m in rss if 0 < t <= seconds]
    first = max(m for t, m in under_load if t <= 60)
    last = max(m for t, m in under_load if t > seconds - 60)
    return (
        f"\nMemory over the {seconds:.0f}-s run: peak RSS {first:.0f} MiB in the first minute, "
        f"{last:.0f} MiB in the last ({last - first:+.0f} MiB, {100 * (last / first - 1):+.1f} %)."
    )


def ms(s: float) -> str:
    return f"{s * 1e3:.1f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="default", help="bundle directory, 'default' or 'random'")
    ap.add_argument("--wait-model", type=float, default=600, help="seconds to wait for default")
    ap.add_argument("--quick", action="store_true", help="smaller bounds everywhere")
    ap.add_argument("--requests", type=int, default=None, help="sequential requests (overhead)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--throughput-seconds", type=float, default=None)
    ap.add_argument("--throughput-requests", type=int, default=None)
    ap.add_argument("--saturation-seconds", type=float, default=None)
    ap.add_argument("--queue", type=int, default=8, help="GEARS_H_MAX_QUEUE of saturation run")
    ap.add_argument(
        "--ladder-max-atoms",
        type=int,
        default=None,
        help="cap the bucket ladder (GEARS_H_LADDER_MAX_ATOMS, and the in-process predictor)",
    )
    ap.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a GEARS_H_* setting for every server the script starts (repeatable)",
    )
    ap.add_argument(
        "--throughput-only",
        action="store_true",
        help="only the batching on/off throughput and the cold/warm start (for a short "
        "accelerator lease: no overhead or saturation phase, no in-process predictor)",
    )
    ap.add_argument("--section", default=SECTION, help="RESULTS.md section to replace")
    ap.add_argument("--write", action="store_true", help="replace the RESULTS.md section")
    args = ap.parse_args(argv)
    extra_env = dict(kv.split("=", 1) for kv in args.server_env)
    if bad := [k for k in extra_env if not k.startswith("GEARS_H_")]:
        ap.error(f"--server-env takes GEARS_H_* settings only, not {bad[0]}")
    n_seq = args.requests or (20 if args.quick else 50)
    tp_s = args.throughput_seconds or (8.0 if args.quick else 15.0)
    tp_n = args.throughput_requests or (200 if args.quick else 300)
    sat_s = args.saturation_seconds or (20.0 if args.quick else 45.0)
    load0 = os.getloadavg()[0]

    tmp = Path(tempfile.mkdtemp(prefix="gearsh_load_"))
    bundle, model_desc = resolve_model(args.model, args.wait_model, tmp)
    cache = tmp / "jax_cache"  # empty: the first server start is cold
    base = {
        "GEARS_H_MODEL": str(bundle),
        "GEARS_H_COMPILATION_CACHE_DIR": str(cache),
        "GEARS_H_LOG_LEVEL": "warning",
    }
    if args.ladder_max_atoms is not None:
        base["GEARS_H_LADDER_MAX_ATOMS"] = str(args.ladder_max_atoms)
    base.update(extra_env)
    if args.throughput_only:
        cold_s, warm_s, cache_files, tp_on, tp_off = throughput_and_start(
            base, tmp, [body(t) for t in butanols()], args.concurrency, tp_s, tp_n
        )
        lines = [
            f"Model: {model_desc}; servers started by the script on 127.0.0.1 (HTTP, gRPC off), "
            f"settings: {settings_note(base)}. Load average {load0:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end; the load generator runs on the same host.",
            "",
            *throughput_table(args.concurrency, tp_s, tp_n, tp_on, tp_off),
            "",
            *start_table(cold_s, warm_s, cache_files),
        ]
        print("\n".join(lines), flush=True)
        if args.write:
            cmd = command_line("service_load.py", sys.argv[1:] if argv is None else argv)
            write_section(args.section, "\n".join(lines), cmd)
            print(f"wrote section {args.section!r} of bench/RESULTS.md")
        return
    hbn = hbn_100()
    hbn_body = body(hbn)
    mols = [body(t) for t in butanols()]
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    servers: list[ServeProcess] = []
    try:
        # 4 (first half) + 1: cold start of the batching server; direct predictor meanwhile
        # would compete for the cores, so it runs before.
        direct_s, n_atoms = direct_latency(bundle, hbn, n_seq, args.ladder_max_atoms)
        print(f"direct predictor: {ms(direct_s)} ms for {n_atoms} atoms", flush=True)

        cold = ServeProcess(dict(base), tmp / "cold.log", grpc=False)
        servers.append(cold)
        cold_s = cold.wait_ready(timeout=1200)
        cold.stop()
        cache_files = sum(1 for f in cache.rglob("*") if f.is_file())
        warm = ServeProcess(dict(base), tmp / "warm.log", grpc=False)
        servers.append(warm)
        warm_s = warm.wait_ready(timeout=1200)
        print(f"start: cold {cold_s:.1f} s, warm {warm_s:.1f} s", flush=True)
        batched = warm  # default settings, batching on
        seq_on = asyncio.run(sequential(batched.url, hbn_body, n_seq))
        tp_on = throughput(batched.url, mols, args.concurrency, tp_s, tp_n)
        print(f"batching on: {tp_on['rps']:.1f} req/s", flush=True)
        batched.stop()

        single = ServeProcess({**base, "GEARS_H_BATCHING": "false"}, tmp / "single.log", grpc=False)
        servers.append(single)
        single.wait_ready(timeout=1200)
        seq_off = asyncio.run(sequential(single.url, hbn_body, n_seq))
        # the in-process baseline again, with the server idle: the shared cores' load changes
        # over minutes, so the overhead is taken against the faster of the two medians
        direct_again_s, _ = direct_latency(bundle, hbn, n_seq, args.ladder_max_atoms)
        print(f"direct predictor again: {ms(direct_again_s)} ms", flush=True)
        tp_off = throughput(single.url, mols, args.concurrency, tp_s, tp_n)
        print(f"batching off: {tp_off['rps']:.1f} req/s", flush=True)
        single.stop()

        sat_server = ServeProcess(
            {**base, "GEARS_H_MAX_QUEUE": str(args.queue)}, tmp / "sat.log", grpc=False
        )
        servers.append(sat_server)
        sat_server.wait_ready(timeout=1200)
        rate = 2 * tp_on["rps"]
        sat = asyncio.run(open_loop(sat_server, mols, rate, sat_s, max_in_flight=512))
        sat_server.stop()
    finally:
        for s in servers:
            s.stop()
    load1 = os.getloadavg()[0]

    # -- tables --
    cap = (
        f"bucket ladder capped with GEARS_H_LADDER_MAX_ATOMS={args.ladder_max_atoms} (the same "
        "cap for the in-process predictor), "
        if args.ladder_max_atoms is not None
        else "the bundle's own bucket ladder, "
    )
    out(f"Model: {model_desc}, {cap}servers started by the script on 127.0.0.1 (HTTP, gRPC off), ")
    out(
        f"default settings unless named (batch wait {os.environ.get('GEARS_H_BATCH_WAIT_MS', '5')}"
        f" ms). Load average {load0:.1f} at the start, {load1:.1f} at the end; the load "
        "generator runs on the same cores as the server, so every figure includes its cost."
    )
    out()
    out(f"### Per-request overhead ({n_atoms}-atom h-BN, {n_seq} sequential requests, median)")
    out()
    out(
        "| path | median (ms) | p90 (ms) | overhead vs direct | server queue / compute / "
        "serialise (ms, medians) | outside compute, same requests | response |"
    )
    out("|---|---:|---:|---:|---:|---:|---:|")
    out(f"| `Predictor.predict([s])` in-process, before the servers | {ms(direct_s)} | | | | | |")
    out(
        f"| `Predictor.predict([s])` in-process, between the HTTP runs | {ms(direct_again_s)} "
        "| | | | | |"
    )
    direct_s = min(direct_s, direct_again_s)
    for name, seq in (("HTTP, batching on", seq_on), ("HTTP, batching off", seq_off)):
        med = seq.median
        t = seq.timing_ms
        out(
            f"| {name} | {ms(med)} | {ms(pct(seq.times, 90))} | "
            f"{100 * (med / direct_s - 1):+.1f} % | {t['queue_ms']:.1f} / {t['compute_ms']:.1f}"
            f" / {t['serialize_ms']:.1f} | {100 * (med * 1e3 / t['compute_ms'] - 1):+.1f} % "
            f"| {seq.bytes / 1024:.0f} KiB |"
        )
    out(
        "\nServer compute covers pad + device call + decode to blocks (the in-process figure "
        "also builds the neighbour graph); the rest of the HTTP latency is request parsing, "
        "graph building, msgpack encoding and the HTTP round trip. 'Outside compute' is the "
        "median latency over the server's own median compute time in the same requests: the "
        "service's cost measured without the drift of the shared cores between runs."
    )
    out()
    for line in throughput_table(args.concurrency, tp_s, tp_n, tp_on, tp_off):
        out(line)
    out()
    out(
        f"### 2x saturation: open loop at {sat['offered']:.1f} req/s offered (2 x "
        f"{tp_on['rps']:.1f}), GEARS_H_MAX_QUEUE={args.queue}, {sat['seconds']:.0f} s"
    )
    out()
    sent = max(int(sat["sent"]), 1)
    out("| | value |")
    out("|---|---:|")
    out(f"| requests sent | {sat['sent']} (+{sat['dropped']} not sent: client cap 512 in flight) |")
    out(f"| accepted (200) | {sat['ok']} ({sat['ok_rps']:.1f}/s) |")
    out(f"| accepted latency p50 / p99 (ms) | {ms(sat['ok_p50'])} / {ms(sat['ok_p99'])} |")
    out(f"| 503 share | {100 * int(sat['busy']) / sent:.1f} % ({sat['busy']}) |")
    out(f"| 503 latency p50 / p99 (ms) | {ms(sat['busy_p50'])} / {ms(sat['busy_p99'])} |")
    out(f"| other statuses / transport errors | {sat['other']} |")
    rss = sat["rss"]
    assert isinstance(rss, list)
    trace = ", ".join(f"{t:.0f} s: {m:.0f}" for t, m in rss)
    out(f"| server RSS start -> end (MiB) | {rss[0][1]:.0f} -> {rss[-1][1]:.0f} |")
    out(f"\nRSS trace (MiB): {trace}.")
    out(rss_growth_note(rss, float(sat["seconds"])))
    out()
    for line in start_table(cold_s, warm_s, cache_files):
        out(line)

    if args.write:
        cmd = command_line("service_load.py", sys.argv[1:] if argv is None else argv)
        write_section(args.section, "\n".join(lines), cmd)
        print(f"wrote section {args.section!r} of bench/RESULTS.md")


if __name__ == "__main__":
    main()
