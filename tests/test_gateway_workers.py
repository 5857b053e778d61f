"""`costline serve --workers N`: the supervisor, the shared rate limits, and the workers end to end.

Unit layer: check_workers / worker_env tables, SharedRateLimiter with an injected clock (and across
real processes), WorkerSupervisor over real child processes. End to end: `costline serve --workers 2`
as a user starts it — the rate limit holds across the workers; with a real broker, a question
answered by one worker is a hit on the other's first ask, and a worker killed with SIGKILL is
restarted and comes back warm.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from costline.serving.errors import GatewayError
from costline.serving.gateway.shared_limits import SharedRateLimiter
from costline.serving.gateway.workers import (WorkerSupervisor, check_workers, tenant_cap_per_worker, watch_parent,
                                              worker_env)

# -- check_workers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("workers", "cache", "topic", "refused"), [
    (1, True, None, None),
    (4, True, "costline_cache", None),
    (4, False, None, None),
    (2, True, None, "replication_topic"),
    (2, True, "", "replication_topic"),
    (0, False, None, "1 or more"),
])
def test_check_workers(workers: int, cache: bool, topic: str | None, refused: str | None) -> None:
    if refused is None:
        check_workers(workers, cache=cache, replication_topic=topic)
    else:
        with pytest.raises(GatewayError, match=refused):
            check_workers(workers, cache=cache, replication_topic=topic)


def test_a_worker_setting_below_one_is_refused_on_load() -> None:
    from costline.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"\[serving.gateway\] workers: must be 1 or more"):
        load_config(None, env={"COSTLINE_SERVING_GATEWAY_WORKERS": "0"})


# -- worker_env ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("base", "index", "cache_path", "prom", "expect"), [
    ({}, 0, None, None, {"COSTLINE_SERVING_CACHE_REPLICA_ID": "gw-w0",
                         "OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=gw-w0"}),
    ({}, 2, "/var/lib/cache", 9464, {"COSTLINE_SERVING_CACHE_REPLICA_ID": "gw-w2",
                                     "COSTLINE_SERVING_CACHE_PATH": "/var/lib/cache/worker-2",
                                     "COSTLINE_COLLECTOR_METRICS_PROMETHEUS_PORT": "9466"}),
    ({"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.instance.id=box"}, 1, None, None,
     {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,service.instance.id=gw-w1"}),
    ({"KEEP": "me"}, 0, None, None, {"KEEP": "me"}),
])
def test_worker_env(base: dict, index: int, cache_path: str | None, prom: int | None, expect: dict) -> None:
    env = worker_env(base, index, replica_base="gw", cache_path=cache_path, prometheus_port=prom)
    for key, value in expect.items():
        assert env[key] == value
    if prom is None:
        assert "COSTLINE_COLLECTOR_METRICS_PROMETHEUS_PORT" not in env
    assert base.get("COSTLINE_SERVING_CACHE_REPLICA_ID") is None  # the caller's mapping is left alone


@pytest.mark.parametrize(("cap", "workers", "each"), [
    (0, 4, 0),  # the derived default: each worker's own
    (8, 1, 8),
    (8, 2, 4),
    (7, 2, 3),  # 6 in all: never more than the cap
    (2, 2, 1),
    (1, 2, 1),  # under the workers: one each
    (3, 4, 1),
])
def test_a_workers_fallback_share_is_the_cap_split_over_the_workers(cap: int, workers: int, each: int) -> None:
    """The workers count a tenant's requests in one table (tests/test_gateway_tenant_counts.py) and each applies
    the whole cap; a request the table cannot count is held to this share. No worker is given a cap of its own."""
    assert tenant_cap_per_worker(cap, workers) == each
    env = worker_env({}, 0, replica_base="gw", cache_path=None, prometheus_port=None)
    assert "COSTLINE_SERVING_GATEWAY_MAX_IN_FLIGHT_PER_TENANT" not in env


# -- SharedRateLimiter --------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_bucket_allows_its_burst_then_says_how_long_to_wait(tmp_path: Path) -> None:
    clock = Clock()
    table = SharedRateLimiter.create(tmp_path / "t")
    limiter = SharedRateLimiter(table, rate_per_minute=60, burst=3, now=clock)
    assert [limiter.take("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("k") == pytest.approx(1.0)  # one token a second
    clock.t += 0.5
    assert limiter.take("k") == pytest.approx(0.5)
    clock.t += 0.5
    assert limiter.take("k") == 0.0
    assert limiter.take("other") == 0.0  # another name, its own bucket
    limiter.close()


def test_two_openings_of_one_table_share_the_buckets(tmp_path: Path) -> None:
    clock = Clock()
    table = SharedRateLimiter.create(tmp_path / "t")
    a = SharedRateLimiter(table, 60, 2, now=clock)
    b = SharedRateLimiter(table, 60, 2, now=clock)
    assert a.take("key:1") == 0.0
    assert b.take("key:1") == 0.0
    assert a.take("key:1") > 0 and b.take("key:1") > 0


def test_a_rate_of_zero_is_unlimited(tmp_path: Path) -> None:
    limiter = SharedRateLimiter(SharedRateLimiter.create(tmp_path / "t"), 0, 1)
    assert all(limiter.take("k") == 0.0 for _ in range(100))


def test_a_full_table_gives_the_least_recently_used_slot_to_a_new_name(tmp_path: Path) -> None:
    clock = Clock()
    limiter = SharedRateLimiter(SharedRateLimiter.create(tmp_path / "t", slots=2), 1, 1, now=clock)
    assert limiter.take("a") == 0.0
    clock.t += 1
    assert limiter.take("b") == 0.0
    clock.t += 1
    assert limiter.take("b") > 0  # b's bucket is kept
    clock.t += 1
    assert limiter.take("c") == 0.0  # takes a's slot (used longest ago), with a full bucket
    clock.t += 1
    assert limiter.take("a") == 0.0  # a comes back with a full bucket: bounded memory, never an error


@pytest.mark.parametrize(("content", "match"), [
    (b"", "not a costline rate-limit table"),
    (b"NOTATABLE" + bytes(100), "not a costline rate-limit table"),
])
def test_a_file_that_is_not_a_table_is_refused(tmp_path: Path, content: bytes, match: str) -> None:
    path = tmp_path / "t"
    path.write_bytes(content)
    with pytest.raises(GatewayError, match=match):
        SharedRateLimiter(path, 60, 1)


def test_a_missing_table_says_who_makes_it(tmp_path: Path) -> None:
    with pytest.raises(GatewayError, match="--workers"):
        SharedRateLimiter(tmp_path / "absent", 60, 1)


def test_processes_taking_at_once_get_exactly_the_burst_between_them(tmp_path: Path) -> None:
    table = SharedRateLimiter.create(tmp_path / "t")
    script = textwrap.dedent(f"""
        from costline.serving.gateway.shared_limits import SharedRateLimiter
        limiter = SharedRateLimiter({str(table)!r}, rate_per_minute=0.001, burst=25)
        print(sum(limiter.take("tenant:acme") == 0.0 for _ in range(20)))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    allowed = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(allowed) == 25, allowed  # 80 takes, 25 tokens: a bucket per process would have allowed 80


# -- WorkerSupervisor ----------------------------------------------------------------------------

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def stubborn(flag: Path) -> list[str]:
    """A worker that ignores SIGTERM and creates ``flag`` once its handler is set."""
    return [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"open({str(flag)!r}, 'w').close(); time.sleep(120)"]


def supervisor(command: list[str], workers: int = 2, **kwargs) -> tuple[WorkerSupervisor, Clock, list[str]]:
    clock, lines = Clock(), []
    sup = WorkerSupervisor(workers, lambda i: command, lambda i: dict(os.environ), host="127.0.0.1", port=0,
                           now=clock, echo=lines.append, **kwargs)
    return sup, clock, lines


def wait_dead(pid: int) -> None:
    """Until ``pid`` has exited: gone, or a zombie its parent (a supervisor, not this process) has not reaped yet."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return
        except FileNotFoundError:
            return
        time.sleep(0.02)
    pytest.fail(f"pid {pid} still alive")


def test_a_worker_that_dies_is_restarted_after_a_growing_delay() -> None:
    sup, clock, lines = supervisor(SLEEPER, first_delay_s=1, max_delay_s=3, stable_s=60)
    try:
        sup.start()
        first = sup.pids()
        assert all(first)
        delays = []
        for _ in range(3):
            pid = sup.pids()[0]
            os.kill(pid, signal.SIGKILL)
            sup.workers[0].proc.wait(30)  # type: ignore[union-attr]
            sup.poll()
            assert sup.pids()[0] is None  # waiting for its restart
            delays.append(sup.workers[0].restart_at - clock.t)  # type: ignore[operator]
            clock.t += delays[-1]
            sup.poll()
            assert sup.pids()[0] not in (None, pid)
        assert delays == [1, 2, 3]  # doubles, capped at max_delay_s
        assert sup.pids()[1] == first[1]  # the other worker was left alone
        clock.t += 61  # lived past stable_s: the next delay starts over
        os.kill(sup.pids()[0], signal.SIGKILL)  # type: ignore[arg-type]
        sup.workers[0].proc.wait(30)  # type: ignore[union-attr]
        sup.poll()
        assert sup.workers[0].restart_at - clock.t == 1  # type: ignore[operator]
        assert any("exited (status -9)" in line for line in lines)
    finally:
        sup.shutdown(10)


def test_shutdown_terminates_every_worker_and_kills_one_that_does_not_drain(tmp_path: Path) -> None:
    flag = tmp_path / "handler-set"
    sup, _, _ = supervisor(SLEEPER, workers=1)
    stubborn_sup, _, _ = supervisor(stubborn(flag), workers=1)
    sup.start()
    stubborn_sup.start()
    deadline = time.monotonic() + 60
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert flag.exists(), "the stubborn worker never set its SIGTERM handler"
    pid, stubborn_pid = sup.pids()[0], stubborn_sup.pids()[0]
    assert sup.shutdown(10) == [-signal.SIGTERM]
    started = time.monotonic()
    assert stubborn_sup.shutdown(1) == [-signal.SIGKILL]  # ignored SIGTERM: killed after the timeout
    assert time.monotonic() - started < 10
    wait_dead(pid)  # type: ignore[arg-type]
    wait_dead(stubborn_pid)  # type: ignore[arg-type]
    assert sup.shutdown(1) == [-signal.SIGTERM]  # idempotent


def test_the_reserved_port_takes_no_connections_but_lets_workers_listen_on_it() -> None:
    sup, _, _ = supervisor(SLEEPER, workers=1)
    port = sup.reserve_port()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        listener.settimeout(10)
        for _ in range(5):  # every connection reaches the listening socket, none the reservation
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            conn, _ = listener.accept()
            conn.close()
            client.close()
    finally:
        listener.close()
        sup.shutdown(1)


@pytest.mark.parametrize(("listens", "reuse_port", "match"), [
    (True, False, "already listens"),  # a plain server
    (True, True, "already listens"),  # another group of workers: SO_REUSEPORT would have let us join it
    (False, False, "cannot reserve"),  # bound, not listening: the bind fails
])
def test_a_taken_port_is_refused_with_what_to_do(listens: bool, reuse_port: bool, match: str) -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse_port:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    taken.bind(("127.0.0.1", 0))
    if listens:
        taken.listen(8)
    try:
        sup = WorkerSupervisor(1, lambda i: SLEEPER, lambda i: {}, host="127.0.0.1", port=taken.getsockname()[1])
        with pytest.raises(GatewayError, match=match) as refused:
            sup.reserve_port()
        assert "another --port" in str(refused.value)
    finally:
        taken.close()


def test_threads_of_one_process_share_a_bucket_exactly(tmp_path: Path) -> None:
    import threading

    limiter = SharedRateLimiter(SharedRateLimiter.create(tmp_path / "t"), rate_per_minute=0.001, burst=25)
    allowed: list[int] = []

    def take() -> None:
        allowed.append(sum(limiter.take("key:1") == 0.0 for _ in range(20)))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(allowed) == 25, allowed


def test_a_worker_whose_supervisor_dies_is_told_to_go(tmp_path: Path) -> None:
    flag = tmp_path / "orphaned"
    worker = textwrap.dedent(f"""
        import sys, time
        from costline.serving.gateway.workers import watch_parent
        watch_parent(int(sys.argv[1]), interval_s=0.05, on_orphaned=lambda: open({str(flag)!r}, "w").close())
        time.sleep(30)
    """)
    # the supervisor's pid is passed, not read at start: the parent may be gone before the worker looks
    parent = (f"import os, subprocess, sys; subprocess.Popen([sys.executable, '-c', {worker!r}, str(os.getpid())]);"
              " sys.exit(0)")
    subprocess.run([sys.executable, "-c", parent], check=True, timeout=60)
    deadline = time.monotonic() + 30
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the orphaned worker never noticed its supervisor was gone"


def test_watch_parent_does_nothing_while_the_parent_lives() -> None:
    called = []
    watch_parent(os.getppid(), interval_s=0.01, on_orphaned=lambda: called.append(1))
    time.sleep(0.2)
    assert called == []


# -- end to end: `costline serve --workers 2` ------------------------------------------------------


def start_workers(tmp: Path, config_text: str, *extra: str,
                  standin: bool = True) -> tuple[subprocess.Popen, str, list[int]]:
    """`costline serve --workers 2` as a user starts it (``standin``: with --standin, else the tiers are the
    config's); returns it, its URL and the workers' pids."""
    config = tmp / "costline.toml"
    config.write_text(config_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    proc = subprocess.Popen([sys.executable, "-m", "costline", "--config", str(config), "serve",
                             *(["--standin"] if standin else []),
                             "--port", "0", "--no-telemetry", "--workers", "2", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("costline gateway on "):
            url = line.split()[3]
            pids = [int(p) for p in line.split("pids ")[1].split(";")[0].split(", ")]
            break
    else:
        proc.kill()
        pytest.fail("the workers did not start")
    try:
        wait_ready(url, "0", "1")
    except BaseException:
        stop(proc)
        raise
    return proc, url, pids


def wait_ready(url: str, *workers: str, timeout: float = 240) -> None:
    """Until each of ``workers`` has answered /readyz with 200 (it has caught up with the cache topic)."""
    ready: set[str] = set()
    deadline = time.monotonic() + timeout
    while not ready >= set(workers) and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as resp:
                ready.add(resp.headers["x-costline-worker"])
        except (urllib.error.HTTPError, urllib.error.URLError, ConnectionError):
            pass  # not listening yet, or 503 (still starting or catching up): ask again
        time.sleep(0.1)
    if not ready >= set(workers):
        pytest.fail(f"of workers {sorted(workers)} only {sorted(ready)} became ready")


def stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(90)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def post(url: str, question: str, tenant: str = "acme", doc: str = "") -> tuple[int, dict[str, str]]:
    """One request on a connection of its own (so the kernel may hand it to either worker)."""
    import json

    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 128,
                       "messages": [{"role": "user", "content": question}]}).encode()
    req = urllib.request.Request(f"{url}/v1/messages", data=body, method="POST",
                                 headers={"content-type": "application/json", "x-costline-tenant": tenant,
                                          "connection": "close", **({"x-costline-doc-hashes": doc} if doc else {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_serve_refuses_workers_that_would_not_share_the_cache(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
    (tmp_path / "costline.toml").write_text("")
    done = subprocess.run([sys.executable, "-m", "costline", "--config", str(tmp_path / "costline.toml"), "serve",
                           "--port", "0", "--workers", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "replication_topic" in done.stderr and "--no-cache" in done.stderr
    assert "costline gateway on" not in done.stdout  # refused before anything started


def first_answer_from(url: str, question: str, worker: str, doc: str = "") -> tuple[int, dict[str, str]]:
    """Ask on fresh connections until worker ``worker`` answers; its answer (the others' are discarded)."""
    for _ in range(60):
        status, headers = post(url, question, doc=doc)
        if headers["x-costline-worker"] == worker:
            return status, headers
    pytest.fail(f"no request reached worker {worker}")


def test_the_rate_limit_holds_across_the_workers(tmp_path: Path) -> None:
    proc, url, _ = start_workers(tmp_path, "[serving.gateway]\nrate_limit_per_minute = 1\nrate_limit_burst = 3\n",
                              "--no-cache")
    try:
        statuses, workers = [], set()
        while len(statuses) < 40 and (len(statuses) < 8 or len(workers) < 2):
            status, headers = post(url, f"question {len(statuses)}")
            statuses.append(status)
            workers.add(headers["x-costline-worker"])
        assert workers == {"0", "1"}
        assert statuses.count(200) == 3, statuses  # one burst between them, not one each
        assert set(statuses) == {200, 429}
    finally:
        assert stop(proc) == 0


class Upstream:
    """The stand-in's ``sleep``: each model call counts as arrived, then waits until :meth:`open` (so a request
    holds its tenant's slot for as long as the test wants, and the test knows it was admitted)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.arrived = 0
        self.opened = False

    def __call__(self, seconds: float) -> None:
        with self.cond:
            self.arrived += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.opened, timeout=60)

    def open(self) -> None:
        with self.cond:
            self.opened = True
            self.cond.notify_all()


def test_a_tenants_in_flight_cap_holds_across_the_workers(tmp_path: Path) -> None:
    """max_in_flight_per_tenant = 2 with --workers 2: the tenant has exactly 2 requests in flight whichever workers
    its connections reached — both on one worker (the split share, 1 each, refused the second), or one on each —
    and the third is a 429 on either worker. Each connection is pinned to a worker (keep-alive) by its /healthz."""
    import http.client
    import json

    from costline.serving.settings import StandInConfig
    from costline.sim.standin import StandInServer

    upstream = Upstream()
    standin = StandInServer(StandInConfig(), port=0, sleep=upstream)
    standin.start()
    proc, url, _ = start_workers(tmp_path, f"""
[serving.gateway]
max_in_flight_per_tenant = 2
rate_limit_per_minute = 0
idle_timeout_s = 120
[serving.backends]
anthropic_base_url = "{standin.url}"
student_base_url = "{standin.openai_url}"
embeddings_base_url = "{standin.openai_url}"
""", "--no-cache", standin=False)
    port = int(url.rsplit(":", 1)[1])
    pinned: dict[str, list[http.client.HTTPConnection]] = {"0": [], "1": []}
    body = json.dumps({"model": "claude-haiku-4-5", "max_tokens": 32,
                       "messages": [{"role": "user", "content": "Where is my order?"}]})

    def ask(worker: str, answers: list[tuple[int, str]]) -> threading.Thread:
        """A request on a connection that reaches ``worker``, answered in a thread (into ``answers``)."""
        conn = pinned[worker].pop()

        def run() -> None:
            conn.request("POST", "/v1/messages", body, {"content-type": "application/json",
                                                        "x-costline-tenant": "acme"})
            r = conn.getresponse()
            r.read()
            answers.append((r.status, r.headers["x-costline-worker"]))
            with upstream.cond:
                upstream.cond.notify_all()

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    def admitted(n: int, answers: list) -> None:
        """Until ``n`` requests wait upstream (fails at once if one was answered instead)."""
        with upstream.cond:
            upstream.cond.wait_for(lambda: upstream.arrived >= n or answers, timeout=30)
        assert (upstream.arrived, answers) == (n, []), "the request was refused, not admitted"

    try:
        for _ in range(80):
            if min(len(c) for c in pinned.values()) >= 5:
                break
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            pinned[r.headers["x-costline-worker"]].append(conn)
        assert min(len(c) for c in pinned.values()) >= 5, "connections did not reach both workers"
        for held_on, third_on in ((("0", "0"), ("1", "0")), (("0", "1"), ("0", "1"))):
            upstream.arrived, upstream.opened = 0, False
            answers: list[tuple[int, str]] = []
            threads = []
            for i, worker in enumerate(held_on):
                threads.append(ask(worker, answers))
                admitted(i + 1, answers)
            refused: list[tuple[int, str]] = []
            for worker in third_on:  # the cap is taken: refused on either worker
                ask(worker, refused).join(30)
            assert sorted(refused) == [(429, "0"), (429, "1")], (held_on, refused)
            upstream.open()
            for t in threads:
                t.join(30)
            assert sorted(answers) == sorted((200, w) for w in held_on), (held_on, answers)
    finally:
        for conn in (c for conns in pinned.values() for c in conns):
            conn.close()
        upstream.open()
        try:
            assert stop(proc) == 0
        finally:
            standin.shutdown()


def respond(url: str, body: dict | None, method: str = "POST", path: str = "") -> tuple[int, dict, dict[str, str]]:
    """One Responses API request on a connection of its own: (status, JSON body, headers)."""
    import json

    req = urllib.request.Request(f"{url}/v1/responses{path}", data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers={"content-type": "application/json",
                                                         "x-costline-tenant": "acme", "connection": "close"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_a_response_stored_by_one_worker_is_continued_by_another(tmp_path: Path) -> None:
    """The workers share the Responses API's stored responses (a file in the supervisor's private folder): a
    conversation continues with previous_response_id whichever worker its next request lands on, and a response
    deleted on one worker is gone on the other."""
    proc, url, _ = start_workers(tmp_path, "[serving.gateway]\nbatches_poll_s = 0.2\n", "--no-cache")
    try:
        for _ in range(60):
            status, first, headers = respond(url, {"model": "m", "input": "How do I export my invoices?"})
            if headers["x-costline-worker"] == "0":
                break
        assert status == 200 and headers["x-costline-worker"] == "0"
        for _ in range(60):
            status, second, headers = respond(url, {"model": "m", "input": "And as PDF?",
                                                    "previous_response_id": first["id"]})
            if headers["x-costline-worker"] == "1":
                break
        assert (status, headers["x-costline-worker"]) == (200, "1"), second
        assert second["previous_response_id"] == first["id"] and second["output"][0]["content"][0]["text"]
        # deleted on the worker that answers; then no worker reads it back
        status, deleted, headers = respond(url, None, "DELETE", f"/{second['id']}")
        assert (status, deleted) == (200, {"id": second["id"], "object": "response", "deleted": True})
        other = {"0": "1", "1": "0"}[headers["x-costline-worker"]]
        for _ in range(60):
            status, _, headers = respond(url, None, "GET", f"/{second['id']}")
            if headers["x-costline-worker"] == other:
                break
        assert (status, headers["x-costline-worker"]) == (404, other)
        # a Message Batch made on one worker is answered (by one runner at a time, in the shared file) and read back
        import anthropic

        app = anthropic.Anthropic(base_url=url, api_key="unused", max_retries=0)
        made = app.messages.batches.create(requests=[
            {"custom_id": f"q{i}", "params": {"model": "m", "max_tokens": 64,
                                              "messages": [{"role": "user", "content": f"Where is order {i}?"}]}}
            for i in range(5)])
        deadline = time.monotonic() + 60
        while app.messages.batches.retrieve(made.id).processing_status != "ended" and time.monotonic() < deadline:
            time.sleep(0.1)
        got = list(app.messages.batches.results(made.id))
        assert sorted(r.custom_id for r in got) == [f"q{i}" for i in range(5)]
        assert {r.result.type for r in got} == {"succeeded"}
    finally:
        assert stop(proc) == 0


@pytest.mark.kafka
def test_two_workers_share_one_cache_and_a_killed_one_comes_back_warm(kafka, tmp_path: Path) -> None:
    topic = f"cache-workers-{uuid.uuid4().hex[:8]}"
    proc, url, pids = start_workers(tmp_path, f"""
[serving.cache]
path = "{tmp_path / 'cache'}"
replication_topic = "{topic}"
replication_bootstrap_servers = "{kafka.bootstrap}"
replica_id = "gw"
""")
    question = "How can I change the billing address on my account?"
    try:
        status, headers = post(url, question, doc="billing-policy")
        assert status == 200 and headers["x-costline-cache-hit"] == "false"
        stored_by = headers["x-costline-worker"]
        other = {"0": "1", "1": "0"}[stored_by]
        time.sleep(2.0)  # the store reaches the other worker through the topic (p95 ~0.1-0.3 s, docs/cache.md)
        status, headers = first_answer_from(url, question, other, doc="billing-policy")
        assert status == 200 and headers["x-costline-cache-hit"] == "true", \
            "a worker must answer from what another worker stored (the cache is shared over Kafka)"
        # kill the worker that stored; the supervisor restarts it and it comes back warm from the topic
        os.kill(pids[int(stored_by)], signal.SIGKILL)
        wait_dead(pids[int(stored_by)])  # its socket closed: the next ready answer of stored_by is its restart's
        wait_ready(url, stored_by)
        status, headers = first_answer_from(url, question, stored_by, doc="billing-policy")  # the restarted one's first
        assert status == 200 and headers["x-costline-cache-hit"] == "true", "a restarted worker must come back warm"
        # the document changes: the operator's command publishes the invalidation (the workers' snapshots are in
        # cache/worker-K, so the configured path holds none) and the workers stop serving the answer
        env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}
        done = subprocess.run([sys.executable, "-m", "costline", "--config", str(tmp_path / "costline.toml"), "cache",
                               "invalidate", "--doc", "billing-policy"], capture_output=True, text=True, env=env,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        assert "publishing the invalidations only" in done.stdout and f"published to {topic}" in done.stdout
        time.sleep(2.0)  # through the topic, as the store was
        status, headers = post(url, question, doc="billing-policy")
        assert status == 200 and headers["x-costline-cache-hit"] == "false", \
            "an invalidated answer must not be served by any worker"
    finally:
        assert stop(proc) == 0



def test_a_worker_that_cannot_start_ends_the_supervision_with_the_reason() -> None:
    failing = [sys.executable, "-c", "import sys; sys.exit(3)"]
    sup, clock, lines = supervisor(failing, workers=1, first_delay_s=1, max_delay_s=2, stable_s=60, give_up_after=3)
    try:
        sup.start()
        for _ in range(3):
            sup.workers[0].proc.wait(30)  # type: ignore[union-attr]
            sup.poll()  # noted; on the third quick exit the supervision ends
            if sup.failed:
                break
            clock.t += sup.workers[0].delay_s
            sup.poll()  # restarted
        assert sup.failed is not None and "exited 3 times in a row" in sup.failed and "status 3" in sup.failed
        assert sup.workers[0].restarts == 2 and sup.workers[0].restart_at is None
        sup.run(interval_s=0.01)  # returns at once: stopped
    finally:
        sup.shutdown(5)


def test_serve_with_workers_refuses_a_setup_no_worker_could_start_before_starting_any(tmp_path: Path) -> None:
    """No Anthropic API key, tiers at the SDK's default URL: the supervisor builds what each worker would and
    exits 2 with the reason, once, before any worker starts (the give-up after quick exits is the test above)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_") and k != "ANTHROPIC_API_KEY"}
    (tmp_path / "costline.toml").write_text("")
    done = subprocess.run([sys.executable, "-m", "costline", "--config", str(tmp_path / "costline.toml"), "serve",
                           "--port", "0", "--workers", "2", "--no-cache", "--no-telemetry"], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("$ANTHROPIC_API_KEY: not set") == 1
    assert "costline gateway on" not in done.stdout and "gateway worker" not in done.stdout + done.stderr
