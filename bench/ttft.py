"""Benchmark: time to first token through `costline serve`, live streaming beside buffered.

    .venv/bin/python bench/ttft.py [--pairs 150] [--latency-scale 1.0] [--json FILE]

One stand-in (the tiers' simulated latencies, ``[serving.standin] latency_ms`` × scale: a
streamed answer's first delta comes after a quarter of it) and two gateways in front of it,
identical but for the gate:

* **live**: no validator, no confidence gate: ``x-costline-stream-mode: live``, tokens relayed
  as the model writes them;
* **buffered**: a validator that accepts everything: the same tier answers the same text, but a
  gate exists, so the gateway settles the answer before the first event. The top tier (frontier)
  has nowhere to escalate and would stream live behind a gate too, so this pipeline's
  ``streams_live`` is pinned to False: every tier is measured in both modes.

Each pair sends the same question to both (order alternating, so both see the same machine
noise), through the real ``anthropic`` SDK's ``messages.stream``; the task type cycles so the
router spreads the pairs over budget, mid, upper and frontier. Time to first token = from the
call to the first text delta; total = to the end of the stream. Prints p50/p90 per mode, per
tier, and the live/buffered ratios; checks both modes got the same text; exit 1 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import anthropic  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

from costline.collectors import Recorder  # noqa: E402
from costline.config import Config  # noqa: E402
from costline.serving.gateway.app import STREAM_MODE_HEADER, Gateway  # noqa: E402
from costline.serving.pipeline import Pipeline  # noqa: E402
from costline.serving.settings import BackendsConfig, StandInConfig  # noqa: E402
from costline.sim.standin import StandInServer  # noqa: E402

#: task type → the tier the rules route a long question to.
TASKS = {"classification": "budget", "coding": "mid", "complex_reasoning": "upper", "chat": "frontier"}
TOPICS = ["the invoice for March", "a refund for a double charge", "the SSO login loop", "our data export",
          "the API rate limit", "renewal terms in the contract", "a webhook that stopped firing",
          "seat counts after a merger"]


def question(i: int) -> str:
    topic = TOPICS[i % len(TOPICS)]
    # over the rules' 200-character "short query" cut, so the task type decides the tier
    return (f"Question {i}: a customer writes about {topic}. They have tried the usual steps from the help "
            f"centre, nothing changed, and they need a clear answer today with the reasons behind it. "
            f"Please answer in a few sentences.")


def gateway(standin: StandInServer, *, live: bool) -> tuple[Gateway, Pipeline]:
    cfg = Config()
    serving = dataclasses.replace(cfg.serving, backends=BackendsConfig(
        anthropic_base_url=standin.url, student_base_url=standin.openai_url, max_retries=0))
    pipeline = Pipeline.from_config(
        cfg.replace(serving=serving), recorder=Recorder(TracerProvider()), cache=None, env={},
        validator=None if live else (lambda query, text: True), confidence=None)
    if not live:
        pipeline.streams_live = lambda tier: False  # type: ignore[method-assign]
    gw = Gateway(pipeline, port=0)
    gw.start()
    return gw, pipeline


def one(client: anthropic.Anthropic, query: str, task: str) -> tuple[float, float, str, str, str]:
    """(ttft s, total s, text, mode, tier) of one streamed request."""
    start = time.perf_counter()
    first = None
    parts = []
    with client.messages.stream(model="any", max_tokens=400, messages=[{"role": "user", "content": query}],
                                extra_headers={"x-costline-task-type": task}) as stream:
        for text in stream.text_stream:
            if first is None:
                first = time.perf_counter() - start
            parts.append(text)
        headers = stream.response.headers
    total = time.perf_counter() - start
    return first if first is not None else total, total, "".join(parts), headers[STREAM_MODE_HEADER], \
        headers["x-costline-tier"]


def ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return 1000.0 * ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=150, help="questions, each sent in both modes (default 150)")
    ap.add_argument("--latency-scale", type=float, default=1.0, help="x the stand-in's per-tier latencies")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)

    standin = StandInServer(StandInConfig(latency_scale=args.latency_scale), port=0)
    standin.start()
    gws = {mode: gateway(standin, live=(mode == "live")) for mode in ("live", "buffered")}
    clients = {mode: anthropic.Anthropic(base_url=gw.url, api_key="unused", max_retries=0)
               for mode, (gw, _) in gws.items()}
    rows: dict[str, list[tuple[float, float, str]]] = {"live": [], "buffered": []}
    mismatches = wrong_mode = 0
    began = time.perf_counter()
    try:
        tasks = list(TASKS)
        for mode in clients:  # warm-up: connections, SDK imports, first-call costs
            one(clients[mode], question(-1), "classification")
        for i in range(args.pairs):
            task = tasks[i % len(tasks)]
            order = ("live", "buffered") if i % 2 == 0 else ("buffered", "live")
            texts = {}
            for mode in order:
                ttft, total, text, got_mode, tier = one(clients[mode], question(i), task)
                wrong_mode += got_mode != mode
                rows[mode].append((ttft, total, tier))
                texts[mode] = text
            mismatches += texts["live"] != texts["buffered"]
    finally:
        for gw, pipeline in gws.values():
            gw.shutdown()
            pipeline.close()
        standin.shutdown()
    wall = time.perf_counter() - began

    figures: dict[str, object] = {"pairs": args.pairs, "latency_scale": args.latency_scale, "wall_s": round(wall, 1)}
    print(f"{2 * args.pairs} streamed requests ({args.pairs} pairs) in {wall:.1f} s; stand-in latency x "
          f"{args.latency_scale}: " + ", ".join(f"{t} {v:g} ms" for t, v in StandInConfig().latency_ms.items()
                                                 if t != "student"))
    print(f"{'':10} {'ttft p50':>9} {'ttft p90':>9} {'total p50':>10}   (ms)")
    for mode, r in rows.items():
        ttft, total = [x[0] for x in r], [x[1] for x in r]
        figures[mode] = {"ttft_p50_ms": ms(ttft, 0.5), "ttft_p90_ms": ms(ttft, 0.9), "total_p50_ms": ms(total, 0.5),
                         "ttft_mean_ms": 1000 * statistics.fmean(ttft)}
        print(f"{mode:10} {ms(ttft, 0.5):9.1f} {ms(ttft, 0.9):9.1f} {ms(total, 0.5):10.1f}")
    print(f"{'tier':10} {'live ttft':>9} {'buffered':>9} {'ratio':>7}   (p50 ms)")
    per_tier = {}
    for tier in TASKS.values():
        lv = [x[0] for x in rows["live"] if x[2] == tier]
        bf = [x[0] for x in rows["buffered"] if x[2] == tier]
        if lv and bf:
            per_tier[tier] = {"live_ms": ms(lv, 0.5), "buffered_ms": ms(bf, 0.5), "ratio": ms(lv, 0.5) / ms(bf, 0.5)}
            print(f"{tier:10} {ms(lv, 0.5):9.1f} {ms(bf, 0.5):9.1f} {ms(lv, 0.5) / ms(bf, 0.5):7.2f}")
    figures["per_tier"] = per_tier
    live, buffered = figures["live"], figures["buffered"]
    assert isinstance(live, dict) and isinstance(buffered, dict)
    ttft_ratio = live["ttft_p50_ms"] / buffered["ttft_p50_ms"]
    total_ratio = live["total_p50_ms"] / buffered["total_p50_ms"]
    figures.update(ttft_ratio=ttft_ratio, total_ratio=total_ratio, text_mismatches=mismatches, wrong_mode=wrong_mode)
    print(f"RESULT ttft p50 live {live['ttft_p50_ms']:.1f} ms | buffered {buffered['ttft_p50_ms']:.1f} ms | "
          f"ratio live/buffered {ttft_ratio:.2f} (total time ratio {total_ratio:.2f}); "
          f"{mismatches} text mismatches, {wrong_mode} wrong modes")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if mismatches or wrong_mode else 0


if __name__ == "__main__":
    sys.exit(main())
