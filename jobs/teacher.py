"""Regenerating answers (teacher, next tier up, judge, student) — resumable, never paid twice.

:class:`Regenerator` answers a list of :class:`AnswerRequest` through the real
``anthropic`` SDK (``client.messages.create`` with bounded concurrency, or the
Message Batches API at the batch price) or, for the student, the ``openai`` SDK
against vLLM's OpenAI-compatible server. Every answer is written to a per-run
:class:`Checkpoint` (SQLite, one transaction per answer) the moment it arrives.

**Resumability guarantee.** Each request has a deterministic key
(:func:`request_key`: a hash of request id, model, prompt and max_tokens) sent as
the ``Idempotency-Key`` header (synchronous) or as the batch ``custom_id``. A run
that stops — an exception, Ctrl-C, a failed poll — first waits for the requests
already in flight and records their answers; the next run with the same run id
sends only the keys that have no answer. A batch id is persisted *before* the
first poll, so a restarted run re-attaches to the batch instead of submitting it
again. Only a hard kill (SIGKILL, power loss) between a request's response and
its checkpoint write can lose an answer already paid for (at most ``concurrency``
of them); the retry then carries the same key, so an API that honours idempotency
keys does not charge it twice. A batch create is preceded by a recorded intent: a
create whose outcome is unknown (killed before its id was written, a lost response)
is found again in the batch list instead of being paid a second time.

**Unusable answers.** Each answer keeps the API's ``stop_reason``. :func:`unusable_reason` says
which answers are paid for but are no reference to score against (drift, shadow) nor anything to
train on (distill): not a Messages API answer at all (a proxy that only streams answers a
non-streaming call with ``text/event-stream``), a refusal, one cut at ``max_tokens`` or at the context
window, or no text. The kinds that a later attempt may cure (:data:`RETRYABLE`: not a message, empty)
can be asked again by the next run (``Regenerator(redo=...)``): the new answer replaces the stored
one, whose cost stays counted (:meth:`Checkpoint.cost_usd`), and it goes out under a new
``Idempotency-Key`` (an API that honours keys would otherwise hand the same answer back).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costline import sdk
from costline.jobs.errors import TeacherError
from costline.pricing import PricingTable

__all__ = [
    "AnswerRequest",
    "Answer",
    "UNUSABLE",
    "RETRYABLE",
    "NOT_A_MESSAGE",
    "unusable_reason",
    "retryable",
    "describe_unusable",
    "Checkpoint",
    "Regenerator",
    "RegenerationResult",
    "request_key",
    "anthropic_client",
    "student_client",
]

log = logging.getLogger(__name__)

#: The Message Batches API's limits (platform docs, "Batch limitations"): a batch holds at most 100,000
#: requests or 256 MB, whichever comes first. Requests are capped lower (smaller batches end sooner);
#: bytes are counted as the JSON body, 256 MB read as 256 * 10^6 (the stricter reading).
BATCH_MAX_REQUESTS = 10_000
BATCH_MAX_BYTES = 256 * 1000 * 1000
#: How far before its recorded intent a batch's ``created_at`` may lie (clock skew) and still be ours.
_CREATE_SKEW_S = 120.0


def request_key(request_id: str, model: str, messages: Sequence[Mapping[str, Any]], *, system: str | None = None,
                max_tokens: int = 1024, purpose: str = "answer") -> str:
    """Deterministic idempotency key / batch ``custom_id`` (``[A-Za-z0-9_-]``, 35 characters)."""
    doc = json.dumps([purpose, request_id, model, system, list(messages), max_tokens], sort_keys=True,
                     ensure_ascii=False, default=str)
    # surrogatepass: a lone surrogate (half an emoji, escaped in the stored JSON) hashes instead of raising;
    # the bytes of valid text, and so its key, are unchanged
    return "cl-" + hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


@dataclass(frozen=True)
class AnswerRequest:
    """One prompt to answer. ``key`` is filled from the rest when not given."""

    request_id: str
    model: str
    messages: tuple[Mapping[str, Any], ...]
    system: str | None = None
    max_tokens: int = 1024
    purpose: str = "answer"
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", request_key(self.request_id, self.model, self.messages,
                                                        system=self.system, max_tokens=self.max_tokens,
                                                        purpose=self.purpose))

    @classmethod
    def of(cls, request_id: str, model: str, query: str, **kw: Any) -> "AnswerRequest":
        return cls(request_id, model, ({"role": "user", "content": query},), **kw)

    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens, "messages": list(self.messages)}
        if self.system:
            p["system"] = self.system
        return p


@dataclass(frozen=True)
class Answer:
    key: str
    text: str
    model: str
    input_tokens: int = 0  # GenAI total: includes cache reads and writes
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    batch: bool = False
    cost_usd: float = 0.0
    #: The API's ``stop_reason`` (``end_turn``, ``max_tokens``, ``refusal``, ...; OpenAI's ``finish_reason``
    #: for the student), :data:`NOT_A_MESSAGE` when the response was no message at all; None: not known.
    stop_reason: str | None = None


#: ``Answer.stop_reason`` of a response that was not a Messages API answer (the SDK handed back text: a
#: proxy answering a non-streaming call with ``text/event-stream``, an HTML error page with status 200).
NOT_A_MESSAGE = "costline:not_a_message"

#: Why an answer paid for is no reference (drift, shadow) and teaches nothing (distill), in the order
#: :func:`unusable_reason` checks them.
UNUSABLE: tuple[str, ...] = ("not a message", "refusal", "cut at max_tokens", "cut at the context window", "empty")
#: The kinds a later attempt may cure (a misconfigured or overloaded proxy): asked again by the next run.
RETRYABLE: frozenset[str] = frozenset({"not a message", "empty"})

#: What each kind means and what to do, for warnings and errors (``{max_tokens}``: the setting to raise).
_HINTS = {
    "not a message": "the API answered a non-streaming call with something other than a JSON message (e.g. "
                     "text/event-stream from a proxy that only streams): point {base_url} at an endpoint that "
                     "answers JSON",
    "refusal": "the model declined to answer (stop_reason refusal)",
    "cut at max_tokens": "raise {max_tokens}",
    "cut at the context window": "the prompt and answer fill the model's context window "
                                 "(stop_reason model_context_window_exceeded)",
    "empty": "no text in the answer (an overloaded proxy, or only non-text blocks)",
}


def unusable_reason(answer: Answer, max_tokens: float, text: str | None = None) -> str | None:
    """Which of :data:`UNUSABLE` ``answer`` is, or None when it can serve as a reference.

    ``text`` is the part that counts (distill: the final answer after the marker; default the whole text).
    A cut is known by the stop reason, and by the output tokens reaching ``max_tokens`` (an answer from
    a gateway that drops the stop reason).
    """
    stop = answer.stop_reason
    if stop == NOT_A_MESSAGE:
        return "not a message"
    if stop == "refusal":
        return "refusal"
    if stop == "max_tokens" or (answer.output_tokens or 0) >= max_tokens:
        return "cut at max_tokens"
    if stop == "model_context_window_exceeded":
        return "cut at the context window"
    if not (answer.text if text is None else text).strip():
        return "empty"
    return None


def retryable(answer: Answer) -> bool:
    """True for an answer another attempt may cure (:data:`RETRYABLE`): for ``Regenerator(redo=...)``."""
    return unusable_reason(answer, float("inf")) in RETRYABLE


def describe_unusable(unusable: Mapping[str, int], *, max_tokens: str = "[jobs.teacher] max_tokens",
                      base_url: str = "[jobs.teacher] base_url") -> str:
    """``"2 empty: no text in the answer ...; 1 refusal: ..."``: each kind counted, with what it means."""
    return "; ".join(f"{n} {why}: {_HINTS.get(why, '?').format(max_tokens=max_tokens, base_url=base_url)}"
                     for why, n in unusable.items() if n)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  key TEXT PRIMARY KEY, text TEXT NOT NULL, model TEXT, input_tokens INTEGER, output_tokens INTEGER,
  cache_read_tokens INTEGER, cache_creation_tokens INTEGER, batch INTEGER, cost_usd REAL, at REAL,
  stop_reason TEXT);
CREATE TABLE IF NOT EXISTS superseded (key TEXT, text TEXT, stop_reason TEXT, cost_usd REAL, at REAL);
CREATE TABLE IF NOT EXISTS errors (key TEXT, error TEXT, at REAL);
CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, state TEXT, keys TEXT, at REAL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS batch_intents (token TEXT PRIMARY KEY, keys TEXT, at REAL);
"""


class Checkpoint:
    """A run's answers so far (SQLite, WAL, one transaction per write). Use from one thread."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        cols = {r[1] for r in self._db.execute("PRAGMA table_info(answers)")}
        if "stop_reason" not in cols:  # a checkpoint from before stop reasons were kept
            self._db.execute("ALTER TABLE answers ADD COLUMN stop_reason TEXT")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    _COLUMNS = ("key, text, model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, batch, "
                "cost_usd, stop_reason")

    @staticmethod
    def _answer(r: Sequence[Any]) -> Answer:
        return Answer(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9])

    def get(self, key: str) -> Answer | None:
        row = self._db.execute(f"SELECT {self._COLUMNS} FROM answers WHERE key = ?", (key,)).fetchone()
        return None if row is None else self._answer(row)

    def answers(self) -> dict[str, Answer]:
        rows = self._db.execute(f"SELECT {self._COLUMNS} FROM answers").fetchall()
        return {r[0]: self._answer(r) for r in rows}

    def done_keys(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT key FROM answers")}

    def put(self, answer: Answer, *, supersede: bool = False) -> None:
        """Store ``answer`` (a key already answered keeps its answer), or with ``supersede`` replace the
        stored one, whose text, stop reason and cost move to ``superseded`` (one transaction)."""
        values = (answer.key, answer.text, answer.model, answer.input_tokens, answer.output_tokens,
                  answer.cache_read_tokens, answer.cache_creation_tokens, int(answer.batch), answer.cost_usd,
                  answer.stop_reason, time.time())
        insert = f"INTO answers ({self._COLUMNS}, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        if not supersede:
            self._db.execute(f"INSERT OR IGNORE {insert}", values)
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT INTO superseded SELECT key, text, stop_reason, cost_usd, at FROM answers "
                             "WHERE key = ?", (answer.key,))
            self._db.execute("DELETE FROM answers WHERE key = ?", (answer.key,))
            self._db.execute(f"INSERT {insert}", values)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def superseded(self) -> dict[str, int]:
        """How many answers each key had replaced (asked again)."""
        return {r[0]: int(r[1]) for r in self._db.execute("SELECT key, count(*) FROM superseded GROUP BY key")}

    def cost_usd(self) -> float:
        """Everything this run paid for: its answers and the ones they replaced."""
        row = self._db.execute("SELECT coalesce((SELECT sum(cost_usd) FROM answers), 0) + "
                               "coalesce((SELECT sum(cost_usd) FROM superseded), 0)").fetchone()
        return float(row[0] or 0.0)

    def error(self, key: str, error: str) -> None:
        self._db.execute("INSERT INTO errors VALUES (?, ?, ?)", (key, error, time.time()))

    def errors(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._db.execute("SELECT key, error FROM errors ORDER BY at")]

    def add_batch(self, batch_id: str, keys: Iterable[str], *, intent: str | None = None) -> None:
        """Record a submitted batch (and, in the same transaction, drop the create ``intent`` it fulfils)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, 'submitted', ?, ?)",
                             (batch_id, json.dumps(sorted(keys)), time.time()))
            if intent is not None:
                self._db.execute("DELETE FROM batch_intents WHERE token = ?", (intent,))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def batch_keys(self, batch_id: str) -> list[str]:
        row = self._db.execute("SELECT keys FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()
        return json.loads(row[0]) if row else []

    def add_intent(self, token: str, keys: Iterable[str], at: float) -> None:
        """Written before a batch create: until the batch id replaces it, the create's outcome is unknown."""
        self._db.execute("INSERT OR REPLACE INTO batch_intents VALUES (?, ?, ?)", (token, json.dumps(sorted(keys)), at))

    def intents(self) -> list[tuple[str, list[str], float]]:
        rows = self._db.execute("SELECT token, keys, at FROM batch_intents ORDER BY at").fetchall()
        return [(r[0], json.loads(r[1]), float(r[2])) for r in rows]

    def drop_intent(self, token: str) -> None:
        self._db.execute("DELETE FROM batch_intents WHERE token = ?", (token,))

    def open_batches(self) -> list[tuple[str, list[str]]]:
        rows = self._db.execute("SELECT batch_id, keys FROM batches WHERE state = 'submitted' ORDER BY at")
        return [(r[0], json.loads(r[1])) for r in rows]

    def close_batch(self, batch_id: str, state: str = "collected") -> None:
        self._db.execute("UPDATE batches SET state = ? WHERE batch_id = ?", (state, batch_id))

    def batch_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT batch_id FROM batches ORDER BY at")]

    def get_meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_meta(self, name: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))


@dataclass
class RegenerationResult:
    answers: dict[str, Answer]
    #: Requests sent (paid) by this call, not counting answers found in the checkpoint.
    sent: int = 0
    resumed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    batch_ids: list[str] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return sum(a.cost_usd for a in self.answers.values())


def _text_of_message(message: Any) -> str:
    parts = []
    for block in getattr(message, "content", None) or []:
        if getattr(block, "type", None) == "text":
            parts.append(block.text)
    return "".join(parts)


def _sse_usage(body: str) -> tuple[int, int, int, int]:
    """The usage a streamed (``text/event-stream``) Messages answer reports: ``message_start``'s usage,
    then each ``message_delta``'s (cumulative) counts. Zeros when it holds none (best effort: the answer
    is unusable anyway, but what it cost is counted)."""
    usage: dict[str, int] = {}
    for line in body.splitlines():
        if not line.startswith("data:"):
            continue
        try:
            event = json.loads(line[5:].strip())
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        u = None
        if event.get("type") == "message_start" and isinstance(event.get("message"), dict):
            u = event["message"].get("usage")
        elif event.get("type") == "message_delta":
            u = event.get("usage")
        for k, v in (u.items() if isinstance(u, dict) else ()):
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                usage[k] = v
    read = usage.get("cache_read_input_tokens", 0)
    write = usage.get("cache_creation_input_tokens", 0)
    return usage.get("input_tokens", 0) + read + write, usage.get("output_tokens", 0), read, write


def _usage(message: Any) -> tuple[int, int, int, int]:
    u = getattr(message, "usage", None)
    if u is None:
        return 0, 0, 0, 0
    read = int(getattr(u, "cache_read_input_tokens", 0) or 0)
    write = int(getattr(u, "cache_creation_input_tokens", 0) or 0)
    return int(u.input_tokens or 0) + read + write, int(u.output_tokens or 0), read, write


class Regenerator:
    """Answers requests once each, through a checkpoint.

    ``client`` is an ``anthropic.Anthropic`` (or, with ``api="openai"``, an ``openai.OpenAI``
    for the student). ``batch=True`` uses the Message Batches API (Anthropic only).
    ``sleep``/``now`` drive batch polling (inject them in tests); ``progress(n)`` is called per answer.
    ``redo(answer)``: an answer already in the checkpoint for which it is true is asked again (once per
    :meth:`run`; e.g. :func:`retryable`), the new answer replacing it (:meth:`Checkpoint.put`).
    """

    def __init__(
        self,
        client: Any,
        checkpoint: Checkpoint,
        *,
        pricing: PricingTable | None = None,
        api: str = "anthropic",
        concurrency: int = 8,
        batch: bool = False,
        poll_interval_s: float = 30.0,
        batch_timeout_s: float = 26 * 3600.0,
        max_error_rate: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        now: Callable[[], float] = time.monotonic,
        progress: Callable[[int], None] | None = None,
        on_answer: Callable[[Answer], None] | None = None,
        wall: Callable[[], float] = time.time,
        redo: Callable[[Answer], bool] | None = None,
    ) -> None:
        if api not in ("anthropic", "openai"):
            raise ValueError(f"api must be 'anthropic' or 'openai', got {api!r}")
        if batch and api != "anthropic":
            raise ValueError("batch mode needs the Anthropic Message Batches API")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.client = client
        self.checkpoint = checkpoint
        self.pricing = pricing or PricingTable()
        self.api = api
        self.concurrency = concurrency
        self.batch = batch
        self.poll_interval_s = poll_interval_s
        self.batch_timeout_s = batch_timeout_s
        self.max_error_rate = max_error_rate
        self.sleep = sleep
        self.now = now
        self.progress = progress
        self.on_answer = on_answer
        self.wall = wall
        self.redo = redo
        #: Keys answered by this Regenerator (never asked again by the same run), and the number of
        #: earlier answers of each key asked again (its Idempotency-Key's suffix).
        self._answered: set[str] = set()
        self._attempt: dict[str, int] = {}
        self._warned_not_message = False

    def _done_keys(self) -> set[str]:
        """The keys with an answer that stands (``redo`` says no, or answered by this run)."""
        if self.redo is None:
            return self.checkpoint.done_keys()
        return {k for k, a in self.checkpoint.answers().items() if k in self._answered or not self.redo(a)}

    # -- public ---------------------------------------------------------------------------
    def run(self, requests: Sequence[AnswerRequest]) -> RegenerationResult:
        """Answer every request not answered yet; raises :class:`TeacherError` when too many fail."""
        unique: dict[str, AnswerRequest] = {}
        for r in requests:
            unique.setdefault(r.key, r)
        done = self._done_keys()
        result = RegenerationResult(answers={}, resumed=len(done & unique.keys()))
        if self.redo is not None:
            redone = self.checkpoint.done_keys() - done
            if redone & unique.keys():
                log.info("asking %d answers again (the stored ones are unusable)", len(redone & unique.keys()))
            self._attempt = self.checkpoint.superseded()
            for k in redone:
                self._attempt[k] = self._attempt.get(k, 0) + 1
        if self.batch:
            self._run_batches(unique, result)
        else:
            pending = [r for k, r in unique.items() if k not in done]
            self._run_sync(pending, result)
        stored = self.checkpoint.answers()
        result.answers = {k: stored[k] for k in unique if k in stored}
        missing = [k for k in unique if k not in stored]
        if missing:
            errors = dict(self.checkpoint.errors())
            for k in missing:
                result.failed[k] = errors.get(k, "no answer")
            if len(missing) > self.max_error_rate * len(unique):
                first = result.failed[missing[0]]
                invalid = [k for k in missing if "invalid_request_error" in result.failed[k]]
                hint = "run the job again to resume"
                if invalid:
                    hint += (f" ({len(invalid)} of them were refused as invalid requests, invalid_request_error: "
                             "running the job again will not help them until the request is fixed, e.g. a prompt "
                             "too long for the model or a wrong model id)")
                raise TeacherError(
                    f"{len(missing)} of {len(unique)} requests got no answer (first: {first}); "
                    f"{len(stored)} answers are kept in {self.checkpoint.path}: {hint}")
        return result

    # -- answers ---------------------------------------------------------------------------
    def _price(self, model: str, tokens: tuple[int, int, int, int], batch: bool) -> float:
        if self.api == "openai":
            return 0.0  # the student: hosting, not tokens
        inp, out, read, write = tokens
        price = self.pricing.price_call(model=model, provider="anthropic", input_tokens=inp, output_tokens=out,
                                        cache_read_tokens=read, cache_creation_tokens=write, batch=batch)
        return float(price.cost_usd or 0.0)

    def _record(self, answer: Answer, result: RegenerationResult) -> None:
        old = self.checkpoint.get(answer.key) if self.redo is not None and answer.key not in self._answered else None
        self.checkpoint.put(answer, supersede=old is not None and self.redo is not None and self.redo(old))
        self._answered.add(answer.key)
        result.sent += 1
        if self.progress is not None:
            self.progress(1)
        if self.on_answer is not None:
            self.on_answer(answer)

    # -- synchronous ---------------------------------------------------------------------------
    def _call(self, req: AnswerRequest) -> Answer:
        attempt = self._attempt.get(req.key, 0)  # an answer asked again is a new request: a new key
        headers = {"Idempotency-Key": req.key if not attempt else f"{req.key}-{attempt}"}
        if self.api == "openai":
            msgs = ([{"role": "system", "content": req.system}] if req.system else []) + list(req.messages)
            resp = self.client.chat.completions.create(model=req.model, messages=msgs, max_tokens=req.max_tokens,
                                                       extra_headers=headers)
            text = resp.choices[0].message.content or ""
            stop = resp.choices[0].finish_reason
            u = resp.usage
            tokens = (int(u.prompt_tokens or 0), int(u.completion_tokens or 0), 0, 0) if u else (0, 0, 0, 0)
        else:
            message = self.client.messages.create(**req.params(), extra_headers=headers)
            if isinstance(message, (str, bytes)):  # the SDK hands back the body of a non-JSON response
                body = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
                if not self._warned_not_message:  # once a run: a misconfigured proxy answers every request so
                    self._warned_not_message = True
                    log.warning("request %s: the API answered with no JSON message (%r...): a proxy that only "
                                "streams?", req.request_id, body[:60])
                text, stop, tokens = "", NOT_A_MESSAGE, _sse_usage(body)
            else:
                text = _text_of_message(message)
                stop = getattr(message, "stop_reason", None)
                tokens = _usage(message)
        return Answer(req.key, text, req.model, *tokens, batch=False, cost_usd=self._price(req.model, tokens, False),
                      stop_reason=stop)

    def _run_sync(self, pending: Sequence[AnswerRequest], result: RegenerationResult) -> None:
        if not pending:
            return
        todo = iter(pending)
        inflight: dict[Future[Answer], AnswerRequest] = {}
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="costline-teacher")
        try:
            for req in todo:  # fill the window
                inflight[pool.submit(self._call, req)] = req
                if len(inflight) >= self.concurrency:
                    break
            while inflight:
                finished, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                for fut in finished:
                    req = inflight.pop(fut)
                    self._collect(fut, req, result)
                    nxt = next(todo, None)
                    if nxt is not None:
                        inflight[pool.submit(self._call, nxt)] = nxt
        finally:
            # Stopping early (an exception, Ctrl-C): record what is already in flight, send nothing new.
            if inflight:
                wait(list(inflight))
                for fut, req in inflight.items():
                    try:
                        self._collect(fut, req, result)
                    except BaseException:  # noqa: BLE001 - already unwinding; keep what we can
                        log.debug("could not record %s while stopping", req.key, exc_info=True)
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, fut: Future[Answer], req: AnswerRequest, result: RegenerationResult) -> None:
        exc = fut.exception()
        if exc is not None:
            self.checkpoint.error(req.key, f"{type(exc).__name__}: {exc}")
            log.warning("request %s failed: %s", req.request_id, exc)
            return
        self._record(fut.result(), result)

    # -- Message Batches ------------------------------------------------------------------------
    def _run_batches(self, unique: Mapping[str, AnswerRequest], result: RegenerationResult) -> None:
        # 0. a create whose outcome is unknown (killed before its id was written, or its response lost):
        #    find the batch it made instead of paying for the same items again
        for token, keys, at in self.checkpoint.intents():
            found = self._find_created(keys, at)
            if found is not None:
                log.warning("found message batch %s, created for %d requests but never recorded: re-attaching",
                            found, len(keys))
                self.checkpoint.add_batch(found, keys, intent=token)
            else:
                self.checkpoint.drop_intent(token)  # it was never created: submit below
        # 1. re-attach to batches a previous (killed) run submitted
        for batch_id, _keys in self.checkpoint.open_batches():
            log.info("re-attaching to message batch %s", batch_id)
            self._finish_batch(batch_id, unique, result)
        # 2. submit what is still unanswered (errored results of earlier batches included), once: every
        #    part first (each id recorded), then wait on them
        done = self._done_keys()
        pending = [r for k, r in unique.items() if k not in done]
        submitted = [self._create(chunk) for chunk in self._chunks(pending)]
        for batch_id in submitted:
            self._finish_batch(batch_id, unique, result)

    def _chunks(self, pending: Sequence[AnswerRequest]) -> list[list[AnswerRequest]]:
        """``pending`` in parts within the API's per-batch limits (requests and bytes)."""
        envelope = len('{"requests": []}')
        chunks: list[list[AnswerRequest]] = []
        chunk: list[AnswerRequest] = []
        size = envelope
        for r in pending:
            n = len(json.dumps({"custom_id": r.key, "params": r.params()}, default=str).encode()) + 2
            if envelope + n > BATCH_MAX_BYTES:
                self.checkpoint.error(r.key, f"request too large for one message batch ({n} bytes of JSON, the "
                                             f"API takes {BATCH_MAX_BYTES}): shorten it or answer it synchronously")
                log.warning("request %s is too large for a message batch (%d bytes): not sent", r.request_id, n)
                continue
            if chunk and (len(chunk) >= BATCH_MAX_REQUESTS or size + n > BATCH_MAX_BYTES):
                chunks.append(chunk)
                chunk, size = [], envelope
            chunk.append(r)
            size += n
        if chunk:
            chunks.append(chunk)
        return chunks

    def _create(self, chunk: Sequence[AnswerRequest]) -> str:
        """Create one batch and record its id; never two batches for the same items.

        The API does not deduplicate ``custom_id`` across batches and the SDK sends no idempotency key, so
        the SDK's own retries are off for the create: a lost response (timeout, connection reset) or a 5xx
        may hide a created batch, which is then looked up in the batch list instead of being re-POSTed.
        """
        import anthropic

        keys = [r.key for r in chunk]
        token = hashlib.blake2b(json.dumps([keys, self.wall()]).encode(), digest_size=8).hexdigest()
        at = self.wall()
        self.checkpoint.add_intent(token, keys, at)  # before the create: a kill after it is found again
        client = self.client.with_options(max_retries=0)
        attempts = max(int(getattr(self.client, "max_retries", 2) or 0), 0) + 1
        last: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                retry_after = None
                resp = getattr(last, "response", None)
                if resp is not None:
                    try:
                        retry_after = float(resp.headers.get("retry-after", ""))
                    except ValueError:
                        retry_after = None
                self.sleep(min(retry_after if retry_after is not None else 2.0 ** attempt, 60.0))
            try:
                batch = client.messages.batches.create(
                    requests=[{"custom_id": r.key, "params": r.params()} for r in chunk])
            except anthropic.APIStatusError as exc:
                last = exc
                if exc.status_code in (408, 409, 429, 529):
                    continue  # refused before anything was created
                if exc.status_code < 500:
                    self.checkpoint.drop_intent(token)
                    raise
            except anthropic.APIConnectionError as exc:  # timeouts included: the create may have gone through
                last = exc
            else:
                self.checkpoint.add_batch(batch.id, keys, intent=token)  # before the first poll
                return batch.id
            found = self._find_created(keys, at)
            if found is not None:
                log.warning("the create of message batch %s looked failed (%s) but it exists: using it", found, last)
                self.checkpoint.add_batch(found, keys, intent=token)
                return found
        status = getattr(last, "status_code", None)
        if status in (408, 409, 429, 529):
            self.checkpoint.drop_intent(token)  # refused each time: nothing was created
            raise TeacherError(
                f"the Message Batches API refused to create a batch of {len(chunk)} requests {attempts} times "
                f"(last: {status} {type(last).__name__}): nothing was submitted or paid; run the job again later "
                "(or raise [jobs.teacher] max_retries)") from last
        raise TeacherError(
            f"could not tell whether a message batch of {len(chunk)} requests was created ({last}): the next run "
            "looks for it in the batch list before submitting again, so run the job again; nothing is paid "
            "twice") from last

    def _find_created(self, keys: Sequence[str], at: float) -> str | None:
        """The batch created for ``keys`` at or after wall time ``at`` whose id was never recorded, if any.

        Batches carry no client metadata: one is taken as ours when it was created after our intent (less
        a clock skew), holds as many requests and is not one this checkpoint already knows. Its results are
        then only taken for ``keys`` (:meth:`_finish_batch`), so a wrong match costs a resubmission, not a
        misattributed answer.
        """
        import anthropic

        known = set(self.checkpoint.batch_ids())
        found: list[str] = []
        try:
            for b in self.client.messages.batches.list(limit=100):  # most recent first
                if b.created_at.timestamp() < at - _CREATE_SKEW_S:
                    break
                c = b.request_counts
                total = c.processing + c.succeeded + c.errored + c.canceled + c.expired
                if b.id not in known and total == len(keys):
                    found.append(b.id)
        except anthropic.APIError as exc:
            raise TeacherError(f"could not list message batches to find one created for {len(keys)} requests "
                               f"whose id was not recorded ({exc}): run the job again later; nothing was "
                               "submitted again") from exc
        if len(found) > 1:
            log.warning("message batches %s may all hold the same %d requests: using the oldest, %s; cancel the "
                        "others if they are this job's", ", ".join(found), len(keys), found[-1])
        return found[-1] if found else None

    def _results(self, batch_id: str) -> Iterable[tuple[int, Any]]:
        """(line number, parsed result or the exception) per line of the batch's results JSONL."""
        from anthropic.types.messages import MessageBatchIndividualResponse

        with self.client.messages.batches.with_streaming_response.results(batch_id) as resp:
            for n, line in enumerate(resp.iter_lines(), 1):
                if not line.strip():
                    continue
                try:
                    yield n, MessageBatchIndividualResponse.model_validate(json.loads(line))
                except Exception as exc:  # noqa: BLE001 - one unreadable line must not lose the rest
                    yield n, exc

    def _finish_batch(self, batch_id: str, unique: Mapping[str, AnswerRequest], result: RegenerationResult) -> None:
        result.batch_ids.append(batch_id)
        deadline = self.now() + self.batch_timeout_s
        while True:
            batch = self.client.messages.batches.retrieve(batch_id)
            if batch.processing_status == "ended":
                break
            if self.now() >= deadline:
                raise TeacherError(f"message batch {batch_id} has not ended after {self.batch_timeout_s:.0f}s: "
                                   "run the job again later; it re-attaches to the batch")
            self.sleep(self.poll_interval_s)
        sent = set(self.checkpoint.batch_keys(batch_id))
        done = self._done_keys()
        seen: set[str] = set()
        for n, item in self._results(batch_id):
            if isinstance(item, Exception):
                log.warning("message batch %s: result line %d is unreadable (%s): skipped", batch_id, n, item)
                continue
            key = item.custom_id
            if sent and key not in sent:  # never charge this run an answer it did not ask for
                log.warning("message batch %s: result for custom_id %r, which the batch never sent: ignored",
                            batch_id, key)
                continue
            if key in done or key in seen:
                continue
            seen.add(key)
            kind = item.result.type
            if kind == "succeeded":
                message = item.result.message
                tokens = _usage(message)
                model = getattr(message, "model", None) or (unique[key].model if key in unique else "")
                self._record(Answer(key, _text_of_message(message), model, *tokens, batch=True,
                                    cost_usd=self._price(model, tokens, True),
                                    stop_reason=getattr(message, "stop_reason", None)), result)
                done.add(key)
            else:
                detail = getattr(getattr(item.result, "error", None), "error", None)
                self.checkpoint.error(key, f"batch result {kind}" + (
                    f": {detail.type}: {detail.message}" if detail else ""))
        for key in sorted(sent - done - seen):  # its line was unreadable, or missing
            self.checkpoint.error(key, f"no readable result in message batch {batch_id}")
        self.checkpoint.close_batch(batch_id)


def anthropic_client(config: Any, **kwargs: Any) -> Any:
    """An ``anthropic.Anthropic`` for the jobs: ``[jobs.teacher]``, else ``[serving.backends]``.

    The key policy is :mod:`costline.sdk`'s: without one, only a loopback ``base_url`` (the local
    stand-in) gets a placeholder; otherwise :class:`~costline.sdk.MissingApiKeyError` names the variable.
    """
    t = config.jobs.teacher
    b = config.serving.backends
    kw: dict[str, Any] = {"max_retries": t.max_retries, "timeout": t.timeout_s, **kwargs}
    return sdk.anthropic_client(base_url=t.base_url or b.anthropic_base_url, key_env=t.api_key_env or b.anthropic_api_key_env,
                                service="the jobs' teacher ([jobs.teacher])", **kw)


def student_client(config: Any, **kwargs: Any) -> Any:
    """An ``openai.OpenAI`` for the student's vLLM server (``[serving.backends] student_base_url``)."""
    b = config.serving.backends
    kw: dict[str, Any] = {"max_retries": config.jobs.teacher.max_retries, "timeout": config.jobs.teacher.timeout_s,
                          **kwargs}
    return sdk.openai_client(base_url=b.student_base_url, key_env=b.student_api_key_env,
                             service="the student ([serving.backends] student_base_url)", **kw)
