"""The gateway's authentication holds under a lost keys file, keyless floods and concurrent key changes.

* A keys file deleted, emptied or broken while an authenticated gateway runs refuses every request (401, in each
  API's error format) and the gateway logs once what to do; it no longer opens the gateway to whoever names a tenant.
* A caller without a key is refused on the request's head: it holds no admission slot while it (never) sends its
  body, so callers with a key go on being answered; the rate limit is checked there too, and charged once.
* Idle connections cannot take every open file: the soft limit is raised to the hard one and at most
  ``max_connections`` connections stay open (the one idle longest makes room for a new one).
* ``costline keys add`` / ``revoke`` in several processes at once lose no key and undo no revocation.

Real sockets against a real Gateway (in process), and real ``costline serve`` / ``costline keys`` processes.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gateways import gateway_starter

from costline.errors import ConfigError
from costline.serving.gateway.auth import KeyStore, KeyStoreError
from costline.serving.settings import GatewayConfig

QUESTION = "How do I reset my password?"
MESSAGE = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": QUESTION}]}
CHAT = {"model": "m", "messages": [{"role": "user", "content": QUESTION}]}
#: (path, body, how the API's error format is recognised)
APIS = [
    ("/v1/messages", MESSAGE, lambda doc: doc.get("type") == "error" and doc["error"]["type"] == "authentication_error"),
    ("/v1/chat/completions", CHAT, lambda doc: "type" not in doc and set(doc["error"]) == {"message", "type", "param",
                                                                                          "code"}
     and doc["error"]["type"] == "authentication_error"),
    ("/model/anthropic.claude-3-haiku/invoke", {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 20,
                                                "messages": MESSAGE["messages"]},
     lambda doc: set(doc) == {"message"}),
]
ENV = {k: v for k, v in os.environ.items() if not k.startswith("COSTLINE_")}


@pytest.fixture
def serve(pipeline, tmp_path):
    with gateway_starter(pipeline, tmp_path / "keys.json") as start:
        yield start


def post(port: int, path: str, body: dict, headers: dict[str, str] | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", path, json.dumps(body).encode(), {"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    out = resp.status, dict(resp.getheaders()), resp.read()
    conn.close()
    return out


# -- 1. a lost keys file closes the gateway ------------------------------------------------------------
LOSSES = {
    "deleted": lambda f: f.unlink(),
    "emptied of keys": lambda f: f.write_text('{"version": 1, "keys": []}'),
    "zero bytes": lambda f: f.write_text(""),
    "not JSON": lambda f: f.write_text("{ this is not json"),
}


@pytest.mark.parametrize("loss", list(LOSSES))
def test_a_keys_file_lost_while_serving_refuses_everyone_in_each_apis_format(serve, tmp_path, caplog, loss) -> None:
    """Deleting the keys file of a running gateway (or leaving it with no keys) made it open: with no key, the
    tenant header decided the tenant. Now every request is a 401, a formerly valid key's too, and the log says once
    what to do (never "delete it")."""
    keys = KeyStore(tmp_path / "keys.json")
    _, secret = keys.add("tenB")
    gw = serve()
    status, _, body = post(gw.port, "/v1/messages", MESSAGE, {"x-api-key": secret})
    assert status == 200, body
    LOSSES[loss](tmp_path / "keys.json")
    caplog.set_level(logging.ERROR, logger="costline.serving.gateway.auth")
    for path, body, in_format in APIS:
        for headers in ({"x-costline-tenant": "tenB"}, {"x-api-key": secret}, {}):
            status, answer_headers, answer = post(gw.port, path, body, headers)
            assert status == 401, (path, headers, answer)
            doc = json.loads(answer)
            assert in_format(doc), (path, doc)
            said = json.dumps(doc)
            assert "no API keys to check against" in said and "costline keys add" in said, said
            assert answer_headers.get("www-authenticate") == 'Bearer realm="costline"'
    logged = [r.getMessage() for r in caplog.records if r.name == "costline.serving.gateway.auth"]
    assert len(logged) == 1, logged  # once, not once a request
    assert str(tmp_path / "keys.json") in logged[0] and "costline keys add" in logged[0]
    assert "stop the gateway" in logged[0] and "delete" not in logged[0]


def test_a_restored_keys_file_lets_its_keys_in_again(serve, tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    _, secret = KeyStore(keys_file).add("tenB")
    saved = keys_file.read_bytes()
    gw = serve()
    keys_file.unlink()
    assert post(gw.port, "/v1/messages", MESSAGE, {"x-costline-tenant": "tenB"})[0] == 401
    keys_file.write_bytes(saved)
    status, _, body = post(gw.port, "/v1/messages", MESSAGE, {"x-api-key": secret})
    assert status == 200, body
    assert post(gw.port, "/v1/messages", MESSAGE, {"x-costline-tenant": "tenB"})[0] == 401


def test_a_gateway_that_had_keys_added_while_open_stays_closed_when_they_go(serve, tmp_path) -> None:
    """On loopback with no keys the gateway is open (development); once a key was added it requires keys, and losing
    the file again must not reopen it."""
    gw = serve()
    assert post(gw.port, "/v1/messages", MESSAGE, {"x-costline-tenant": "dev"})[0] == 200  # open, as before
    KeyStore(tmp_path / "keys.json").add("tenB")
    assert post(gw.port, "/v1/messages", MESSAGE, {"x-costline-tenant": "dev"})[0] == 401
    (tmp_path / "keys.json").unlink()
    status, _, body = post(gw.port, "/v1/messages", MESSAGE, {"x-costline-tenant": "dev"})
    assert status == 401, body


def test_an_unreadable_keys_file_says_to_restore_it_or_stop_the_gateway_never_to_delete_it(tmp_path) -> None:
    """The message of `costline keys` on a broken file advised "delete it and add keys again", which, done while a
    gateway served, opened it."""
    (tmp_path / "keys.json").write_text("{ broken")
    with pytest.raises(KeyStoreError) as caught:
        KeyStore(tmp_path / "keys.json").keys()
    message = str(caught.value)
    assert "delete" not in message
    assert "restore it from a backup" in message and "stop the gateway" in message and "costline keys add" in message


# -- 2. a keyless caller is refused on the head, before its body ------------------------------------------
SLOW_HEAD = (b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
             b"content-length: 100\r\n\r\n")


def _answer(sock: socket.socket, limit_s: float = 10.0) -> bytes:
    """What the server sent until it closed ``sock`` (or ``limit_s`` passed: b"" then means no answer)."""
    sock.settimeout(limit_s)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (TimeoutError, socket.timeout, ConnectionResetError):
        pass
    return got


def test_keyless_requests_that_never_send_their_body_hold_no_slot(serve, tmp_path) -> None:
    """A caller without a key opened connections, each a request head announcing a body it never sent: each took an
    admission slot while the gateway waited read_timeout_s for the body, and every caller with a key got 529. Now a
    keyless head is answered 401 at once (the connection closed: its body is never read)."""
    _, secret = KeyStore(tmp_path / "keys.json").add("tenA")
    gw = serve(max_workers=1, max_pending=1, read_timeout_s=60)
    strangers = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(10)]
    try:
        for sock in strangers:
            sock.sendall(SLOW_HEAD)
        answers = [_answer(sock) for sock in strangers]
        for _ in range(3):
            status, _, body = post(gw.port, "/v1/messages", MESSAGE, {"x-api-key": secret})
            assert status == 200, body
    finally:
        for sock in strangers:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 401"), answer
        assert b"connection: close" in answer.lower() and b'"authentication_error"' in answer, answer


def test_the_rate_limit_is_checked_on_the_head_and_charged_once(serve, tmp_path) -> None:
    """Three requests of a burst of 3 are answered (a limit charged twice a request would refuse the second) — one a
    Bedrock InvokeModel without a content type, which its handler adds before checking; the fourth, a head whose body
    never comes, is refused 429 at once instead of holding a slot for its body."""
    _, secret = KeyStore(tmp_path / "keys.json").add("tenA")
    gw = serve(rate_limit_per_minute=1, rate_limit_burst=3, read_timeout_s=60)
    for path, body, _ in APIS:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        conn.request("POST", path, json.dumps(body).encode(), {"x-api-key": secret} if path.startswith("/model/")
                     else {"x-api-key": secret, "content-type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
        conn.close()
        assert resp.status == 200, (path, answer)
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(SLOW_HEAD.replace(b"\r\n\r\n", f"\r\nx-api-key: {secret}\r\n\r\n".encode()))
        answer = _answer(sock)
    assert answer.startswith(b"HTTP/1.1 429") and b"retry-after:" in answer.lower(), answer


def test_a_cors_preflight_still_needs_no_key(serve, tmp_path) -> None:
    KeyStore(tmp_path / "keys.json").add("tenA")
    gw = serve(allowed_origins=("https://app.example.com",))
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    conn.request("OPTIONS", "/v1/messages", headers={"origin": "https://app.example.com",
                                                      "access-control-request-method": "POST"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    # and a keyless POST with a body sent is refused with the key's 401, its connection closed
    status, headers, _ = post(gw.port, "/v1/messages", MESSAGE)
    assert (resp.status, status, headers.get("connection")) == (204, 401, "close")


# -- 3. open files and connections ------------------------------------------------------------------
@pytest.mark.parametrize(("configured", "open_files", "expected"), [
    (0, 1024, 768),         # three quarters of systemd's default soft limit
    (0, 524_288, 16_384),   # its hard limit: at most 16,384
    (0, 256, 128),          # three quarters would leave fewer than 128 open files to the rest
    (500, 1024, 500),
    (1000, 1024, 896),      # lowered, with a warning: 1024 - 128
])
def test_connection_cap(configured, open_files, expected) -> None:
    from costline.serving.gateway.asgi import connection_cap

    assert connection_cap(configured, open_files) == expected


@pytest.mark.parametrize("value", [-1, 1_048_577, 1.5, True])
def test_max_connections_is_validated_on_load(value) -> None:
    with pytest.raises(ConfigError) as caught:
        GatewayConfig(max_connections=value)
    assert "serving.gateway.max_connections" in str(caught.value) or "max_connections" in str(caught.value)


def _serve_process(tmp: Path, nofile: tuple[int, int], extra_toml: str = "") -> tuple[subprocess.Popen, int]:
    config = tmp / "costline.toml"
    config.write_text(f'[serving.gateway]\nkeys_file = "{tmp / "keys.json"}"\n{extra_toml}')
    err = open(tmp / "stderr", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "costline", "--config", str(config), "serve", "--standin", "--no-cache",
         "--no-telemetry", "--port", "0"], stdout=subprocess.PIPE, stderr=err, text=True, env=ENV,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, nofile))
    for line in proc.stdout:
        if line.startswith("costline gateway on "):
            return proc, int(line.split()[3].rsplit(":", 1)[1])
    proc.kill()
    proc.wait()
    pytest.fail((tmp / "stderr").read_text())


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_serve_raises_the_soft_open_file_limit_to_the_hard_one(tmp_path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit on open files here is {hard}")
    target = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    proc, _ = _serve_process(tmp_path, (256, target))
    try:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        _stop(proc)
    row = next(line for line in limits.splitlines() if line.startswith("Max open files")).split()
    assert (int(row[3]), int(row[4])) == (target, target), row


def test_idle_connections_beyond_the_cap_never_shut_out_a_caller_with_a_key(tmp_path) -> None:
    """Under 256 open files (soft and hard), a caller without a key opened 400 connections and sent nothing: the
    gateway ran out of file descriptors and accepted nobody until they timed out (idle_timeout_s, 60 s here). Now at
    most max_connections stay open (by default three quarters of the limit, less here: 128 are left to the rest) and
    the one idle longest makes room for a new one."""
    _, secret = KeyStore(tmp_path / "keys.json").add("tenA")
    proc, port = _serve_process(tmp_path, (256, 256), "idle_timeout_s = 60\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2048)), hard))
    idle: list[socket.socket] = []
    try:
        for _ in range(400):
            try:
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            except OSError:  # refused: the gateway is full of connections with requests running (none here)
                pass
        for _ in range(3):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.request("GET", "/v1/models", headers={"x-api-key": secret})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            assert resp.status == 200
        fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
    finally:
        for sock in idle:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        _stop(proc)
    assert fds < 256, fds
    assert "Too many open files" not in (tmp_path / "stderr").read_text()


# -- 4. concurrent `costline keys` ---------------------------------------------------------------------
_SLOW_WRITER = """
import sys, time
from pathlib import Path
from costline.serving.gateway.auth import KeyStore
keys_file, go, ready, what, arg = sys.argv[1:6]
store = KeyStore(keys_file)
write = store._write
def slow_write(keys):  # widen the read-modify-write window: what a loaded host does by chance
    Path(ready).touch()
    deadline = time.monotonic() + 5
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    write(keys)
store._write = slow_write
print(store.add(arg)[1] if what == "add" else store.revoke(arg).id)
"""


def _writer(tmp: Path, keys_file: Path, name: str, what: str, arg: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(keys_file), str(tmp / "go"),
                             str(tmp / f"ready-{name}"), what, arg], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def test_eight_concurrent_adds_keep_eight_keys(tmp_path) -> None:
    keys_file = tmp_path / "keys.json"
    (tmp_path / "go").touch()
    procs = [_writer(tmp_path, keys_file, str(i), "add", f"t{i}") for i in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    doc = json.loads(keys_file.read_text())
    assert sorted(k["tenant"] for k in doc["keys"]) == [f"t{i}" for i in range(8)]
    for (secret, _), _p in zip(outs, procs):  # every key printed works
        assert KeyStore(keys_file).verify(secret.strip()) is not None


def test_a_revocation_during_a_concurrent_add_is_not_undone(tmp_path) -> None:
    """`costline keys add` read the file, a `costline keys revoke V` then finished, and the add wrote what it had
    read plus its key: V was active again. The revoke now waits for the add, then reads what it wrote."""
    keys_file = tmp_path / "keys.json"
    victim, victim_secret = KeyStore(keys_file).add("victim")
    adder = _writer(tmp_path, keys_file, "adder", "add", "newtenant")
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready-adder").exists() and adder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    revoker = subprocess.Popen([sys.executable, "-m", "costline", "keys", "revoke", victim.id, "--file",
                                str(keys_file)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        revoker.wait(timeout=3)  # before the fix it finished here, inside the add's read-modify-write
    except subprocess.TimeoutExpired:
        pass  # waiting for the add's lock
    (tmp_path / "go").touch()
    added, _ = adder.communicate(timeout=60)
    revoked = revoker.communicate(timeout=60)
    assert adder.returncode == 0 and revoker.returncode == 0, revoked
    store = KeyStore(keys_file)
    assert store.verify(victim_secret) is None  # still revoked
    assert store.verify(added.strip()) is not None  # and the new key is there
    assert {k.tenant for k in store.keys()} == {"victim", "newtenant"}
