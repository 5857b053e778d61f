"""Benchmark: `costline serve` under load, in front of the local stand-in (issue 16's table).

    .venv/bin/python bench/gateway.py [--seconds 10] [--embedder auto|onnx|torch|openvino] [--no-peer] [--json FILE] [--profile FILE]
    .venv/bin/python bench/gateway.py --workers 2   # N worker processes beside one, same config, one run

Three processes: the stand-in (``costline standin --latency-scale 0``: the model APIs answer at once),
the gateway (``costline serve``, semantic cache on, telemetry off, rate limit off) and this load
generator (asyncio, raw HTTP/1.1 keep-alive connections: a few µs of CPU a request, so the
gateway's cost is what is measured). Phases, each on fresh connections:

* **stand-in alone**: the backend's own ceiling at 16 connections (for scale);
* **unique questions** at 16 and 64 connections: every question new (cache misses: routing,
  embedding, FAISS search, the model call, the store); req/s, p50/p99 latency, errors (non-200);
  *gateway CPU per request*: the gateway process's user+system CPU over the 16-connection phase
  divided by its requests (the stand-in runs in its own process, so the backend is excluded);
* **paraphrase hits**: the pair set's paraphrases (serving/cache/data/cache_pair_set.jsonl, then our held-out
  dev sets' when ``--pairs`` asks for more than its 186): the first of each pair is asked once (stored), then
  each second one once, at 16 connections — every lookup embeds a text it has never seen; the hit share is
  printed beside the rate;
* **exact repeats**: one stored question over and over at 16 connections.

Every phase also prints the model calls per request (the gateway's ``x-costline-attempts``: the
stand-in's budget answers carry a low confidence marker about half the time, and those escalate
once, as the product does) and the CPU per model call.

The LiteLLM proxy is the peer when it is installed (``pip install 'litellm[proxy]'``; not a costline
dependency): after costline's phases the gateway stops and ``litellm --num_workers 1`` starts in front
of the same stand-in (its Anthropic route, no cache, no routing), and the same phases run against
it; the table prints both side by side with the req/s ratio. When it is missing its columns say so. Targets (issue 16): unique@16 ≥ 2 ×
LiteLLM (≥ ~170 req/s on 2 cores) with p99 ≤ 300 ms; unique@64 0 errors, p99 ≤ 1 s; paraphrase
hits ≥ 300 req/s; gateway CPU per miss ≤ 6 ms. The machine the figures come from is printed
(cores, load average): on a shared box they are a floor, not the gateway's ceiling.

``--workers N`` (N > 1) runs ``costline serve --workers N`` (docs/serving.md, "Workers"): the workers
share the cache over Kafka (a local broker is started unless ``KAFKA_BOOTSTRAP_SERVERS`` names one),
and the peer is then the same gateway with one worker and the same config (replication on too), so
the ratio column is what the extra processes buy on this machine; CPU per request counts every worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "serving" / "cache" / "data" / "cache_pair_set.jsonl"
WORDS = ("invoice refund login export webhook contract renewal seat plan region billing upgrade "
         "downgrade password token sandbox quota audit backup restore latency timeout invite admin "
         "report dashboard alert mobile desktop browser printer calendar payroll shipping warehouse").split()


@dataclass
class Phase:
    name: str
    connections: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cache_hits: int = 0
    cpu_ms_per_request: float | None = None
    #: Model calls the answers took (costline's ``x-costline-attempts``; None when the server does not say).
    model_calls: int | None = None
    #: Requests each worker answered (``x-costline-worker``, costline serve --workers); empty when not said.
    by_worker: dict[str, int] = field(default_factory=dict)

    @property
    def calls_per_request(self) -> float | None:
        return self.model_calls / self.requests if self.model_calls is not None and self.requests else None

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_question(rng: random.Random, i: int) -> str:
    words = " ".join(rng.choice(WORDS) for _ in range(6))
    return f"Ticket {i} {rng.getrandbits(40):x}: what should I do about {words}?"


def body(question: str, stream: bool = False) -> bytes:
    return json.dumps({"model": "claude-haiku-4-5", "max_tokens": 128, "stream": stream,
                       "messages": [{"role": "user", "content": question}]}).encode()


async def _one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, payload: bytes,
               key: bytes = b"bench") -> tuple[int, bool, int | None, str | None]:
    writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"anthropic-version: 2023-06-01\r\nx-api-key: " + key + b"\r\nContent-Length: "
                 + str(len(payload)).encode() + b"\r\n\r\n" + payload)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    hit = False
    attempts = None
    worker = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"x-costline-cache-hit":
            hit = value.strip() == b"true"
        elif name == b"x-costline-attempts":
            attempts = int(value)
        elif name == b"x-costline-worker":
            worker = value.strip().decode()
    await reader.readexactly(length)
    return status, hit, attempts, worker


async def run_phase(name: str, port: int, connections: int, *, seconds: float | None = None,
                    questions: list[str] | None = None, make=None, path: str = "/v1/messages",
                    cpu_pid: int | None = None, key: bytes = b"bench") -> Phase:
    """Requests over ``connections`` keep-alive connections, for ``seconds`` (questions from ``make(i)``)
    or until ``questions`` are all asked once."""
    latencies: list[float] = []
    errors = hits = 0
    calls: int | None = None
    by_worker: dict[str, int] = {}
    counter = iter(range(10**9))
    queue = list(reversed(questions)) if questions is not None else None
    deadline = time.perf_counter() + seconds if seconds is not None else None

    def next_question() -> str | None:
        if queue is not None:
            return queue.pop() if queue else None
        if deadline is not None and time.perf_counter() >= deadline:
            return None
        return make(next(counter))

    async def worker() -> None:
        nonlocal errors, hits, calls
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (q := next_question()) is not None:
                t0 = time.perf_counter()
                try:
                    status, hit, attempts, answered_by = await _one(reader, writer, path, body(q), key)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors += 1
                hits += hit
                if attempts is not None:
                    calls = (calls or 0) + attempts
                if answered_by is not None:
                    by_worker[answered_by] = by_worker.get(answered_by, 0) + 1
        finally:
            writer.close()

    cpu0 = _cpu_s(cpu_pid) if cpu_pid else None
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    cpu = (_cpu_s(cpu_pid) - cpu0) if cpu_pid and cpu0 is not None else None
    done = len(latencies)
    lat = sorted(latencies) or [0.0]
    return Phase(name, connections, done, errors, elapsed, 1000 * statistics.median(lat),
                 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], hits,
                 (1000 * cpu / done) if cpu is not None and done else None, calls, by_worker)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its child processes (a proxy's workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def spawn(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``cmd`` with its stderr in the file ``log`` (a pipe nobody reads while the phases run would block a
    process that logs more than the pipe holds); :func:`said` reads it."""
    with open(log, "w") as err:  # the child keeps its own descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def said(proc: subprocess.Popen) -> str:
    """What a process started by :func:`spawn` wrote on stderr so far."""
    log = getattr(proc, "log", None)
    return log.read_text(errors="replace") if log is not None and log.exists() else ""


def _wait_for(port: int, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited: {said(proc)[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start on {port}")


#: --profile: where a sampled stack's time goes, by the first of these substrings found in it.
BUCKETS = (
    ("embedding model (ONNX Runtime / torch)", ("Session.run", "SentenceTransformer.encode")),
    ("model API call (SDK + HTTP client)", ("AnthropicBackend.", "OpenAIChatBackend.")),
    ("cache lookup and store (FAISS, verifier)", ("SemanticCache.",)),
    ("routing", ("Router.route", "policy_")),
    ("server and pipeline glue (uvicorn, starlette, gateway)", ("uvicorn/", "starlette/", "serving/gateway/asgi.py",
                                                        "serving/gateway/app.py", "serving/pipeline.py")),
)


#: Leaf frames of threads that wait for work (py-spy samples them unless --idle is off and they sleep in C).
IDLE_LEAVES = ("select (selectors.py", "Condition.wait (threading.py", "_worker (concurrent/futures/thread.py",
               "Queue.get (queue.py")


def profile_summary(folded: Path) -> list[tuple[str, float]]:
    """Shares of py-spy's samples (``--format raw``: one ``frame;frame;... count`` per line) by bucket."""
    counts: dict[str, int] = {}
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        total += int(n)
        leaf = stack.rsplit(";", 1)[-1]
        idle = any(k in leaf for k in IDLE_LEAVES)
        bucket = "idle (event loop waiting, free workers, batcher waiting)" if idle else next((name for name, keys in BUCKETS if any(k in stack for k in keys)), "other")
        counts[bucket] = counts.get(bucket, 0) + int(n)
    return sorted(((b, c / total) for b, c in counts.items()), key=lambda x: -x[1]) if total else []


def pair_files() -> list[Path]:
    """The pair set, then our held-out dev sets in their numbered order (``cache_pair_heldout2`` before ``10``)."""
    def number(path: Path) -> int:
        digits = path.stem.removeprefix("cache_pair_heldout")
        return int(digits) if digits.isdigit() else 1
    return [PAIRS, *sorted(PAIRS.parent.glob("cache_pair_heldout*.jsonl"), key=number)]


def paraphrases(limit: int) -> list[tuple[str, str]]:
    """The first ``limit`` paraphrase pairs of :func:`pair_files` (3,350 in all), no question asked twice: a first
    that is another pair's first or second would make that pair's lookup an exact repeat, not a paraphrase."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for path in pair_files():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if not (row.get("same_answer") and row.get("category") == "paraphrase"):
                continue
            first, second = row["q1"], row["q2"]
            if first == second or first in seen or second in seen:
                continue
            seen.update((first, second))
            out.append((first, second))
            if len(out) >= limit:
                return out
    return out


LITELLM_KEY = "sk-costline-bench-0123456789"


def start_litellm(s_port: int, tmp: Path, env: dict[str, str], exe: Path | None = None,
                  ) -> tuple[subprocess.Popen, int] | None:
    """The LiteLLM proxy (``litellm[proxy]``, when installed: ``exe``, else beside this Python) in front of the
    same stand-in, one worker, its Anthropic route forwarding claude-haiku-4-5; None when it is not installed."""
    exe = exe or Path(sys.executable).with_name("litellm")
    if not exe.is_file():
        return None
    port = free_port()
    (tmp / "litellm.yaml").write_text(f"""model_list:
  - model_name: claude-haiku-4-5
    litellm_params:
      model: anthropic/claude-haiku-4-5
      api_base: http://127.0.0.1:{s_port}
      api_key: bench
litellm_settings:
  telemetry: false
""")
    proc = spawn([str(exe), "--config", str(tmp / "litellm.yaml"), "--port", str(port), "--host", "127.0.0.1",
                  "--num_workers", "1"], tmp / "litellm.log",
                 {**env, "LITELLM_MASTER_KEY": LITELLM_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                  "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"})
    return proc, port


async def timed_phases(port: int, args, rng: random.Random, pairs: list[tuple[str, str]], pid: int,
                       key: bytes = b"bench") -> list[Phase]:
    """unique@16, unique@64, paraphrase hits (after seeding the firsts), exact repeats: one target."""
    out = [await run_phase("unique questions", port, 16, seconds=args.seconds, key=key, cpu_pid=pid,
                           make=lambda i: unique_question(rng, 10**6 + i))]
    out.append(await run_phase("unique questions", port, 64, seconds=args.seconds, key=key, cpu_pid=pid,
                               make=lambda i: unique_question(rng, 2 * 10**6 + i)))
    await run_phase("seed paraphrases", port, 16, questions=[a for a, _ in pairs], key=key)
    if args.workers > 1:
        await asyncio.sleep(2.0)  # the stores reach every worker through the cache topic
    out.append(await run_phase("paraphrase hits", port, 16, questions=[b for _, b in pairs], cpu_pid=pid, key=key))
    out.append(await run_phase("exact repeats", port, 16, seconds=args.seconds / 2, cpu_pid=pid, key=key,
                               make=lambda i: pairs[0][0]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each timed phase")
    ap.add_argument("--embedder", choices=("auto", "onnx", "torch", "openvino"), default="auto")
    ap.add_argument("--pairs", type=int, default=120, help="paraphrase pairs to seed and ask (the pair set's 186, then our held-out dev sets': 3,350 in all)")
    ap.add_argument("--embed-threads", type=int, default=1,
                    help="[serving.cache] embed_threads (ONNX Runtime intra-op threads; 0 = its default, which "
                         "spins a thread per core: on a loaded 2-core box 1 costs less CPU per query)")
    ap.add_argument("--embed-max-batch", type=int, default=32,
                    help="[serving.cache] embed_max_batch (queries the micro-batcher runs through the model at once)")
    ap.add_argument("--embed-batch-wait-ms", type=float, default=2.0,
                    help="[serving.cache] embed_batch_wait_ms (how long the micro-batcher waits for more queries)")
    ap.add_argument("--litellm", type=Path, default=None,
                    help="the litellm executable (e.g. of a venv of its own; default: beside this Python)")
    ap.add_argument("--no-peer", action="store_true", help="skip the peer (LiteLLM, or one worker with --workers)")
    ap.add_argument("--workers", type=int, default=1,
                    help="costline serve --workers N; N > 1 shares the cache over Kafka and compares with 1 worker")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--profile", type=Path, default=None,
                    help="py-spy (pip install py-spy) the gateway during unique@16 into this file (collapsed "
                         "stacks of its busy threads) and print where the time goes")
    ap.add_argument("--profile-gil", action="store_true",
                    help="with --profile: sample only the thread holding the GIL (py-spy --gil), i.e. where the "
                         "Python CPU goes, leaving out threads that wait for the GIL or run native code without it")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="costline-bench-gw-"))
    s_port, g_port = free_port(), free_port()
    py = [sys.executable, "-m", "costline"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    standin = spawn([*py, "standin", "--port", str(s_port), "--latency-scale", "0"], tmp / "standin.log", env)
    (tmp / "costline.toml").write_text(f"""
[serving.backends]
anthropic_base_url = "http://127.0.0.1:{s_port}"
student_base_url = "http://127.0.0.1:{s_port}/v1"
max_retries = 0

[serving.gateway]
keys_file = "{tmp / 'keys.json'}"
rate_limit_per_minute = 0
max_workers = 32
max_pending = 256

[serving.cache]
path = "{tmp / 'cache'}"
embedder = "{args.embedder}"
embed_threads = {args.embed_threads}
embed_max_batch = {args.embed_max_batch}
embed_batch_wait_ms = {args.embed_batch_wait_ms}
""")
    broker = None
    if args.workers > 1:  # the workers share the cache over Kafka
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from costline.config import KafkaConfig
            from costline.localkafka import LocalKafka

            kafka = KafkaConfig(port=free_port(), controller_port=free_port(), data_dir=tmp / "kafka", heap="512m")
            broker = LocalKafka(kafka)
            broker.up()
            bootstrap = kafka.bootstrap
        base = (tmp / "costline.toml").read_text()
        for workers in (args.workers, 1):  # each run its own topic and snapshots: the peer starts cold too
            (tmp / f"costline-{workers}.toml").write_text(
                base.replace(f'path = "{tmp / "cache"}"', f'path = "{tmp / f"cache-{workers}"}"')
                + f'replication_topic = "bench-cache-{os.getpid()}-{workers}"\n'
                + f'replication_bootstrap_servers = "{bootstrap}"\n')

    def start_gateway(workers: int) -> subprocess.Popen:
        config = tmp / (f"costline-{workers}.toml" if args.workers > 1 else "costline.toml")
        return spawn([*py, "--config", str(config), "serve", "--port", str(g_port), "--no-telemetry", "--workers",
                      str(workers)], tmp / f"gateway-{workers}.log", env)

    gateway = start_gateway(args.workers)
    phases: list[Phase] = []
    peer_phases: list[Phase] = []
    batches: list[str] = []  # the gateway's "embedder: …" lines (one per worker), said when it stops
    peer = "skipped (--no-peer)" if args.no_peer else "not installed (pip install 'litellm[proxy]'; not a costline dependency)"
    litellm: subprocess.Popen | None = None  # the peer's process: the LiteLLM proxy, or one worker
    try:
        _wait_for(s_port, standin, "the stand-in")
        _wait_for(g_port, gateway, "the gateway")
        rng = random.Random(16)
        pairs = paraphrases(args.pairs)

        async def costline_phases() -> None:
            # warm-up: loads the embedder and the FAISS index, opens the SDK's connection pool
            await run_phase("warm-up", g_port, 4, questions=[unique_question(rng, -i) for i in range(1, 41)])
            phases.append(await run_phase("stand-in alone", s_port, 16, seconds=args.seconds / 2,
                                          make=lambda i: unique_question(rng, i)))
            spy = None
            if args.profile is not None:
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                                        str(gateway.pid), "-d", str(max(1, int(args.seconds))), "-r", "200",
                                        "--format", "raw", "-o", str(args.profile), "--nonblocking",
                                        *(["--gil"] if args.profile_gil else [])],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            phases.extend(await timed_phases(g_port, args, rng, pairs, gateway.pid))
            if spy is not None:
                spy.wait(60)

        asyncio.run(costline_phases())
        gateway.terminate()  # the peer runs alone beside the stand-in, as the gateway did
        gateway.wait(90)
        batches = [line for line in said(gateway).splitlines() if line.startswith("embedder:")]
        if args.workers > 1 and not args.no_peer:  # the peer: one worker, the same config
            litellm = start_gateway(1)
            _wait_for(g_port, litellm, "the one-worker gateway")

            async def one_worker_phases() -> None:
                await run_phase("warm-up", g_port, 4, questions=[unique_question(rng, -i) for i in range(1, 41)])
                peer_phases.extend(await timed_phases(g_port, args, rng, pairs, litellm.pid))  # type: ignore[union-attr]

            asyncio.run(one_worker_phases())
            peer = "costline serve, 1 worker (same config, cache replication on)"
        started = None if args.no_peer or args.workers > 1 else start_litellm(s_port, tmp, env, args.litellm)
        if started is not None:
            litellm, l_port = started
            _wait_for(l_port, litellm, "the LiteLLM proxy")
            key = LITELLM_KEY.encode()

            async def litellm_phases() -> None:
                await run_phase("warm-up", l_port, 4, key=key, questions=[unique_question(rng, -i) for i in range(1, 41)])
                peer_phases.extend(await timed_phases(l_port, args, rng, pairs, litellm.pid, key=key))

            asyncio.run(litellm_phases())
            exe = args.litellm or Path(sys.executable).with_name("litellm")
            version = subprocess.run([str(exe.with_name("python")), "-c",
                                      "import importlib.metadata as m; print(m.version('litellm'))"],
                                     capture_output=True, text=True).stdout.strip() or "?"
            peer = f"LiteLLM proxy {version}, 1 worker, no cache, no routing"
    finally:
        for proc in (litellm, gateway, standin):
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker is not None:
            broker.down()

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} (shared: figures are a "
          f"floor); {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; costline embedder {args.embedder}, "
          f"{args.embed_threads or 'default'} thread(s), batches of <= {args.embed_max_batch} within "
          f"{args.embed_batch_wait_ms:g} ms, {args.workers} worker(s); peer: {peer}")
    for line in batches:
        print(f"costline {line} (every phase together)")
    base = phases[0]
    print(f"stand-in alone, 16 connections: {base.rps:.0f} req/s, p50 {base.p50_ms:.1f} ms, p99 {base.p99_ms:.1f} ms")
    head = f"{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'errs':>6}{'hits':>6}{'CPU ms':>8}{'calls':>7}{'CPU/call':>9}"
    names = (f"costline serve, {args.workers} workers", "costline serve, 1 worker") if args.workers > 1 \
        else ("costline serve", "LiteLLM proxy")
    print(f"{'':<18}{'':>6} | {names[0]:^60} | {names[1]:^60} |")
    print(f"{'phase':<18}{'conns':>6} | {head} | {head} | {'req/s ratio':>11}")

    def cells(p: Phase | None) -> str:
        if p is None:
            return f"{'-':>8}{'-':>8}{'-':>8}{'-':>6}{'-':>6}{'-':>8}{'-':>7}{'-':>9}"
        cpu = f"{p.cpu_ms_per_request:.1f}" if p.cpu_ms_per_request is not None else "-"
        per = p.calls_per_request
        calls = f"{per:.2f}" if per is not None else "-"
        per_call = (f"{p.cpu_ms_per_request / per:.1f}" if per and not p.cache_hits and p.cpu_ms_per_request is not None
                    else "-")  # a phase with cache hits mixes requests that make no call
        return (f"{p.rps:>8.1f}{p.p50_ms:>8.1f}{p.p99_ms:>8.1f}{p.errors:>6}{p.cache_hits:>6}{cpu:>8}{calls:>7}"
                f"{per_call:>9}")

    for i, p in enumerate(phases[1:]):
        q = peer_phases[i] if i < len(peer_phases) else None
        ratio = f"{p.rps / q.rps:.2f}x" if q is not None and q.rps else "-"
        print(f"{p.name:<18}{p.connections:>6} | {cells(p)} | {cells(q)} | {ratio:>11}")
    if args.workers > 1:  # how the kernel spread the connections: each phase opens its own
        print("requests per worker: " + "; ".join(
            f"{p.name}@{p.connections} " + " / ".join(f"{w}: {n}" for w, n in sorted(p.by_worker.items()))
            for p in phases[1:]))
    print("CPU ms = the server process's (and its children's) CPU per request over the phase; the stand-in "
          "runs in its own process and is excluded. calls = model calls per request (costline's "
          "x-costline-attempts: a low-confidence budget answer escalates once; a cache hit makes none; the proxy "
          "makes one a request and does not say); CPU/call = CPU ms / calls (phases without cache hits).")
    by = {(p.name, p.connections): p for p in phases}
    u16, u64 = by[("unique questions", 16)], by[("unique questions", 64)]
    para = by[("paraphrase hits", 16)]
    para_rate = para.rps * (para.cache_hits / para.requests if para.requests else 0)
    peer16 = peer_phases[0].rps if peer_phases and args.workers == 1 else None  # LiteLLM's
    want16 = 2 * peer16 if peer16 else 170.0
    checks = [
        (f"unique@16 >= {want16:.0f} req/s (2 x LiteLLM's {'%.0f here' % peer16 if peer16 else '~86 on the issue box'})",
         u16.rps >= want16, f"{u16.rps:.0f}"),
        ("unique@16 p99 <= 300 ms", u16.p99_ms <= 300, f"{u16.p99_ms:.0f} ms"),
        ("unique@64 0 errors, p99 <= 1 s", u64.errors == 0 and u64.p99_ms <= 1000,
         f"{u64.errors} errors, {u64.p99_ms:.0f} ms"),
        ("paraphrase hits >= 300 req/s", para.rps >= 300,
         f"{para.rps:.0f} req/s, {para.cache_hits}/{para.requests} hits ({para_rate:.0f} hits/s)"),
        ("gateway CPU per miss <= 6 ms", (u16.cpu_ms_per_request or 1e9) <= 6, f"{u16.cpu_ms_per_request:.1f} ms"),
    ]
    for what, ok, got in checks:
        print(f"  [{'met' if ok else 'NOT met'}] {what}: {got}")
    if args.profile is not None and args.profile.is_file():
        print(f"where the gateway's sampled time went during unique@16 ({args.profile}; waits on sockets "
              "and queues count as the frame that waits):")
        for bucket, share in profile_summary(args.profile):
            print(f"  {100 * share:5.1f} %  {bucket}")
    if args.json:
        args.json.write_text(json.dumps({"phases": [{**asdict(p), "rps": p.rps, "calls_per_request": p.calls_per_request} for p in phases],
                                         "peer": peer, "peer_phases": [{**asdict(p), "rps": p.rps} for p in peer_phases],
                                         "load_average": load, "embedder": args.embedder}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
