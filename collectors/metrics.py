"""costline's metrics in the ecosystem's format, through the OTel SDK's metrics pipeline.

::

    telemetry = setup_metrics("costline-gateway", config=config)      # MeterProvider + readers
    recorder = Recorder(provider, metrics=telemetry.metrics)          # calls, lookups, requests
    ...
    telemetry.shutdown()                                              # last export, stop the server

What :class:`CostlineMetrics` records (the hook is :class:`~costline.collectors.Recorder`: a
call, lookup or request is counted when it ends, whatever the trace sampler decided):

* ``gen_ai.client.token.usage`` (histogram, ``{token}``) per model call and ``gen_ai.token.type``
  (``input`` — the semconv total, cached tokens included — or ``output``), and
  ``gen_ai.client.operation.duration`` (histogram, ``s``), both with the GenAI client-metric
  attributes ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model`` (when known) and ``error.type`` (failed calls), and the semconv's
  advisory bucket boundaries. ``gen_ai.system`` (the deprecated name) is not written: costline
  writes ``gen_ai.provider.name`` everywhere (see :mod:`costline.contract`).
* ``costline.cache.lookups`` / ``costline.cache.hits`` (counters, by ``costline.cache.namespace``),
  ``costline.escalations`` (counter, by the ``costline.tier`` that served the request),
  ``costline.rejected_attempts`` (counter, by the ``costline.tier`` whose answer was turned down and the
  ``costline.problem``: ``validator``, ``low_confidence``, ``output_format``, an SDK error class…) and
  ``costline.cost`` (counter, ``USD``, by provider, request model and tier): the call's explicit
  cost, else its price from the pricing table given to :class:`CostlineMetrics`, by the processor's
  rules (:func:`costline.processors.records.flatten_span`), so that it adds up to the lake's ``cost_usd``;
  a call the lake leaves unpriced adds nothing to it and 1 to ``costline.calls.unpriced`` (counter,
  ``{call}``, the same attributes and ``costline.reason``, the lake's ``pricing_status``:
  ``incomplete_usage`` — no input count, or one that is no count (null, negative, NaN, not whole, above
  :data:`~costline.contract.MAX_TOKENS`), never priced as a free prompt — ``unknown_model``,
  ``no_fast_price``, ``no_priority_price``). Token counts that are no counts are not recorded in
  ``gen_ai.client.token.usage`` either.
* with :meth:`CostlineMetrics.observe_cache` (``costline serve`` does it), what the semantic cache holds and
  loses, read from its counts at each collection: ``costline.cache.entries`` (gauge),
  ``costline.cache.removals`` (counter, by ``costline.cache.removal_reason``: ``evicted``, ``expired``,
  ``invalidated``) and ``costline.cache.stores_refused`` (counter, by ``costline.cache.refused_reason``:
  ``invalidated_doc``, an answer built from a document version invalidated while it was being computed).

:func:`setup_metrics` builds the pipeline from ``[collector]``: a ``PeriodicExportingMetricReader``
over the OTLP/HTTP metric exporter (``metrics_otlp``) and/or a Prometheus scrape endpoint on
loopback (``metrics_prometheus``; needs ``pip install 'costline[prometheus]'``). Recording never
raises into the app: a failure is logged and the value dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource

from costline import contract
from costline.config import CollectorConfig, Config
from costline.pricing import PRICED, UNKNOWN_MODEL, PricingTable

from costline.collectors.errors import CollectorError

__all__ = [
    "CallObservation",
    "CostlineMetrics",
    "MetricsSetup",
    "setup_metrics",
    "TOKEN_USAGE",
    "OPERATION_DURATION",
    "CACHE_LOOKUPS",
    "CACHE_HITS",
    "CACHE_ENTRIES",
    "CACHE_REMOVALS",
    "CACHE_STORES_REFUSED",
    "REPLICATION_PUBLISHED",
    "REPLICATION_DROPPED",
    "REPLICATION_SEND_ERRORS",
    "REPLICATION_APPLIED",
    "REPLICATION_SKIPPED",
    "REPLICATION_REFUSED",
    "REPLICATION_RETRY_PENDING",
    "REPLICATION_INVALIDATIONS_LOST",
    "REPLICATION_LAG",
    "ESCALATIONS",
    "REJECTED_ATTEMPTS",
    "PROBLEM",
    "COST",
    "CALLS_UNPRICED",
    "REASON",
    "INCOMPLETE_USAGE",
    "GEN_AI_TOKEN_TYPE",
]

log = logging.getLogger(__name__)

TOKEN_USAGE = "gen_ai.client.token.usage"
OPERATION_DURATION = "gen_ai.client.operation.duration"
CACHE_LOOKUPS = "costline.cache.lookups"
CACHE_HITS = "costline.cache.hits"
CACHE_ENTRIES = "costline.cache.entries"
CACHE_REMOVALS = "costline.cache.removals"
CACHE_STORES_REFUSED = "costline.cache.stores_refused"
REMOVAL_REASON = "costline.cache.removal_reason"
REFUSED_REASON = "costline.cache.refused_reason"
REPLICATION_PUBLISHED = "costline.cache.replication.published"
REPLICATION_DROPPED = "costline.cache.replication.dropped"
REPLICATION_SEND_ERRORS = "costline.cache.replication.send_errors"
REPLICATION_APPLIED = "costline.cache.replication.applied"
REPLICATION_SKIPPED = "costline.cache.replication.skipped"
REPLICATION_REFUSED = "costline.cache.replication.refused"
REPLICATION_RETRY_PENDING = "costline.cache.replication.retry_pending"
REPLICATION_INVALIDATIONS_LOST = "costline.cache.replication.invalidations_lost"
REPLICATION_LAG = "costline.cache.replication.lag"
#: The attribute of ``costline.cache.replication.skipped`` naming why a record was not applied.
SKIP_REASON = "costline.cache.skip_reason"
ESCALATIONS = "costline.escalations"
REJECTED_ATTEMPTS = "costline.rejected_attempts"
#: The attribute of ``costline.rejected_attempts`` naming why an answer was turned down.
PROBLEM = "costline.problem"
COST = "costline.cost"
#: Calls ``costline.cost`` left out because the lake leaves them unpriced (``cost_usd`` NULL, its ``unpriced_calls``).
CALLS_UNPRICED = "costline.calls.unpriced"
#: The attribute of ``costline.calls.unpriced`` naming why: the ``pricing_status`` the lake gives the call.
REASON = "costline.reason"
#: The processor's ``pricing_status`` of a call without a usable input count
#: (:data:`costline.processors.records.INCOMPLETE_USAGE`; not imported: that package pulls in the consumer).
INCOMPLETE_USAGE = "incomplete_usage"
#: Largest explicit price the processor keeps (:data:`costline.processors.attributes.MAX_CALL_USD`); above it, or
#: negative or not finite, the lake prices the call from the pricing table instead.
_MAX_CALL_USD = 100_000.0
_EMBEDDINGS = "embeddings"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"

#: The GenAI semconv's advisory bucket boundaries.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
_SCOPE = "costline.collectors"


class CallObservation:
    """One model call being measured; :class:`~costline.collectors.CallHandle` feeds it."""

    __slots__ = ("_metrics", "_attrs", "_tier", "_batch", "_started", "_input", "_output", "_cache_read",
                 "_cache_creation", "_cache_creation_1h", "_web_searches", "_fast", "_service_tier", "_geo",
                 "_endpoint", "_response_model", "_cost", "_ended", "_usage_incomplete")

    def __init__(self, metrics: CostlineMetrics, attrs: dict[str, str], tier: str | None,
                 cost_usd: float | None, batch: bool | None, endpoint: str | None = None) -> None:
        self._metrics = metrics
        self._attrs = attrs
        self._tier = tier
        self._batch = bool(batch)
        self._cost = cost_usd
        self._started = metrics._now()
        # the counts the call's span carries: the last valid one given (the Recorder drops one that is no count
        # and keeps the attribute it had), None when none was
        self._input: int | None = None
        self._output: int | None = None
        self._cache_read: int | None = None
        self._cache_creation: int | None = None
        self._cache_creation_1h = 0
        self._web_searches = 0
        # the span's costline.usage.incomplete, as the Recorder sets it: an input or output count None (the
        # provider sent null) or above MAX_TOKENS (a broken counter, left out)
        self._usage_incomplete = False
        self._fast = False
        self._service_tier: str | None = None
        self._geo: str | None = None
        self._endpoint = endpoint  # a cloud's kind of endpoint (global / regional): Claude's price there
        self._response_model: str | None = None
        self._ended = False

    def usage(self, input_tokens: Any, output_tokens: Any, cache_read_tokens: Any = 0,
              cache_creation_tokens: Any = 0, cache_creation_1h_tokens: Any = 0, web_search_requests: Any = 0) -> None:
        counts = (input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, cache_creation_1h_tokens,
                  web_search_requests)
        if input_tokens is None or output_tokens is None or any(_absurd(n) for n in counts):
            self._usage_incomplete = True
        self._input = _count_or_none(input_tokens, self._input)
        self._output = _count_or_none(output_tokens, self._output)
        self._cache_read = _count_or_none(cache_read_tokens, self._cache_read)
        self._cache_creation = _count_or_none(cache_creation_tokens, self._cache_creation)
        if cache_creation_1h_tokens:
            self._cache_creation_1h = _count_or_none(cache_creation_1h_tokens, self._cache_creation_1h) or 0
        if web_search_requests:
            self._web_searches = _count_or_none(web_search_requests, self._web_searches) or 0

    def usage_incomplete(self) -> None:
        """The call's span is flagged ``costline.usage.incomplete`` (a stream cut short or closed early, a response
        read without its usage): what it counted is a lower bound, and without an input count it is unpriced."""
        self._usage_incomplete = True

    def speed(self, speed: Any) -> None:
        self._fast = speed == "fast"

    def service_tier(self, tier: str) -> None:
        self._service_tier = tier

    def inference_geo(self, geo: str) -> None:
        self._geo = geo

    def response(self, model: Any) -> None:
        if isinstance(model, str) and model:
            self._response_model = model

    def cost(self, usd: Any) -> None:
        # what the Recorder writes as costline.cost_usd (any number but NaN); the processor's bounds apply at the end
        if _number_or_none(usd) is not None:
            self._cost = float(usd)

    def end(self, error_type: str | None) -> None:
        """Record the call's duration, tokens and cost (once). Never raises."""
        if self._ended:
            return
        self._ended = True
        try:
            self._metrics._call_ended(self, error_type)
        except Exception:
            log.exception("costline: could not record call metrics")


@dataclass
class CostlineMetrics:
    """The instruments (see the module docstring) on ``meter_provider`` (default: the global one).

    ``pricing`` prices calls that carry no explicit cost (None: only explicit costs are counted);
    ``now`` is the monotonic clock, in seconds, that call durations are measured with.
    """

    meter_provider: ApiMeterProvider | None = None
    pricing: PricingTable | None = None
    now: Callable[[], float] = time.perf_counter
    _instruments: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        meter = otel_metrics.get_meter(_SCOPE, meter_provider=self.meter_provider)
        self._instruments = {
            TOKEN_USAGE: meter.create_histogram(
                TOKEN_USAGE, unit="{token}", description="Number of input and output tokens used.",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS),
            OPERATION_DURATION: meter.create_histogram(
                OPERATION_DURATION, unit="s", description="GenAI operation duration.",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS),
            CACHE_LOOKUPS: meter.create_counter(CACHE_LOOKUPS, unit="{lookup}",
                                                description="Semantic cache lookups."),
            CACHE_HITS: meter.create_counter(CACHE_HITS, unit="{hit}", description="Semantic cache hits."),
            ESCALATIONS: meter.create_counter(ESCALATIONS, unit="{escalation}",
                                              description="Retries of a request on another tier."),
            REJECTED_ATTEMPTS: meter.create_counter(
                REJECTED_ATTEMPTS, unit="{attempt}",
                description="Model answers not used (a quality gate or the tier's API turned them down)."),
            COST: meter.create_counter(COST, unit="USD", description="Cost of model calls in US dollars."),
            CALLS_UNPRICED: meter.create_counter(
                CALLS_UNPRICED, unit="{call}",
                description="Model calls left out of costline.cost: no usable token count or no price known."),
        }

    def _now(self) -> float:
        return self.now()

    # -- hooks (called by the Recorder) -----------------------------------------------------
    def start_call(self, *, operation: str, provider: str, model: str, tier: str | None = None,
                   cost_usd: float | None = None, batch: bool | None = None,
                   endpoint: str | None = None) -> CallObservation | None:
        """Start measuring a model call; None (nothing measured) if even that fails."""
        try:
            attrs = {contract.GEN_AI_OPERATION_NAME: operation}
            if isinstance(provider, str) and provider:
                attrs[contract.GEN_AI_PROVIDER_NAME] = provider
            if isinstance(model, str) and model:
                attrs[contract.GEN_AI_REQUEST_MODEL] = model
            cost = _number_or_none(cost_usd)
            return CallObservation(self, attrs, tier if isinstance(tier, str) and tier else None, cost, batch,
                                   endpoint if isinstance(endpoint, str) else None)
        except Exception:
            log.exception("costline: could not start call metrics")
            return None

    def lookup(self, *, hit: bool, namespace: str | None = None) -> None:
        """Count one cache lookup (and a hit). Never raises."""
        try:
            attrs = {contract.COSTLINE_CACHE_NAMESPACE: namespace} if isinstance(namespace, str) and namespace else {}
            self._instruments[CACHE_LOOKUPS].add(1, attrs)
            if hit is True:
                self._instruments[CACHE_HITS].add(1, attrs)
        except Exception:
            log.exception("costline: could not record cache lookup metrics")

    def request_ended(self, *, tier: str | None, escalations: int, rejected: Sequence[str] = ()) -> None:
        """Count a finished request's escalations (nothing when it had none) and its rejected attempts
        (``tier:problem`` each). Never raises."""
        try:
            if isinstance(escalations, int) and escalations > 0:
                attrs = {contract.COSTLINE_TIER: tier} if isinstance(tier, str) and tier else {}
                self._instruments[ESCALATIONS].add(escalations, attrs)
            for item in rejected:
                failed, _, problem = str(item).partition(":")
                self._instruments[REJECTED_ATTEMPTS].add(1, {contract.COSTLINE_TIER: failed, PROBLEM: problem})
        except Exception:
            log.exception("costline: could not record request metrics")

    def observe_cache(self, stats: Callable[[], Any]) -> None:
        """Report what a cache holds and loses at each collection: ``stats()`` returns its counts (a
        :class:`~costline.serving.cache.semantic.CacheStats`: ``entries``, ``evicted``, ``expired``,
        ``invalidated``, ``stores_refused_invalidated``). A ``stats`` that fails reports nothing that time."""
        def read(fields: tuple[tuple[str, dict[str, str]], ...]) -> Callable[[Any], list[Any]]:
            return _observer(stats, lambda now: [(int(getattr(now, name)), attrs) for name, attrs in fields],
                             "the cache's counts")

        meter = otel_metrics.get_meter(_SCOPE, meter_provider=self.meter_provider)
        meter.create_observable_gauge(CACHE_ENTRIES, [read((("entries", {}),))], unit="{entry}",
                                      description="Entries the semantic cache holds.")
        meter.create_observable_counter(
            CACHE_REMOVALS, [read(tuple((r, {REMOVAL_REASON: r}) for r in ("evicted", "expired", "invalidated")))],
            unit="{entry}", description="Entries the semantic cache removed, by reason.")
        meter.create_observable_counter(
            CACHE_STORES_REFUSED, [read((("stores_refused_invalidated", {REFUSED_REASON: "invalidated_doc"}),))],
            unit="{store}", description="Answers the semantic cache refused to store, by reason.")

    def observe_replication(self, stats: Callable[[], Any]) -> None:
        """Report a replicated cache's traffic at each collection: ``stats()`` returns its counts (a
        :class:`~costline.serving.cache.replication.ReplicationStats`).

        ``costline.cache.replication.published`` / ``dropped`` (queue full) / ``send_errors`` (failed tries) /
        ``applied`` (other replicas' records) / ``invalidations_lost`` (counters, ``{record}``),
        ``costline.cache.replication.skipped`` (counter, by ``costline.cache.skip_reason``: ``bad_value``,
        ``bad_signature``, ``expired``...), ``costline.cache.replication.refused`` (counter, by
        ``costline.cache.refused_reason``: ``invalidated_tenant``, a store made before its tenant's latest
        invalidation), ``costline.cache.replication.retry_pending`` (gauge: invalidations waiting to be published
        again) and ``costline.cache.replication.lag`` (gauge: records on the topic not applied yet; nothing while
        unknown). A ``stats`` that fails reports nothing that time; this never raises."""
        try:
            def read(points: Callable[[Any], list[tuple[int, dict[str, str]]]]) -> Callable[[Any], list[Any]]:
                return _observer(stats, points, "the cache replication's counts")

            def field_of(name: str) -> Callable[[Any], list[tuple[int, dict[str, str]]]]:
                return lambda now: [(int(getattr(now, name)), {})]

            def skipped(now: Any) -> list[tuple[int, dict[str, str]]]:
                return [(int(n), {SKIP_REASON: str(reason)}) for reason, n in sorted(now.skipped_by_reason.items())]

            def lag(now: Any) -> list[tuple[int, dict[str, str]]]:
                return [] if now.lag is None else [(int(now.lag), {})]

            meter = otel_metrics.get_meter(_SCOPE, meter_provider=self.meter_provider)
            for name, attr, description in (
                    (REPLICATION_PUBLISHED, "published", "Cache changes handed to Kafka and not failed."),
                    (REPLICATION_DROPPED, "dropped", "Cache changes dropped: the replication queue was full."),
                    (REPLICATION_SEND_ERRORS, "send_errors", "Failed tries to publish a cache change."),
                    (REPLICATION_APPLIED, "applied", "Other replicas' cache records applied."),
                    (REPLICATION_INVALIDATIONS_LOST, "invalidations_lost",
                     "Cache invalidations never published (the retry list was full, or shutdown came first).")):
                meter.create_observable_counter(name, [read(field_of(attr))], unit="{record}", description=description)
            meter.create_observable_counter(REPLICATION_SKIPPED, [read(skipped)], unit="{record}",
                                            description="Cache replication records not applied, by reason.")
            meter.create_observable_counter(
                REPLICATION_REFUSED,
                [read(lambda now: [(int(now.refused_tenant), {REFUSED_REASON: "invalidated_tenant"})])],
                unit="{record}", description="Replicated cache stores refused, by reason.")
            meter.create_observable_gauge(REPLICATION_RETRY_PENDING, [read(field_of("retry_pending"))],
                                          unit="{record}",
                                          description="Cache invalidations waiting to be published again.")
            meter.create_observable_gauge(REPLICATION_LAG, [read(lag)], unit="{record}",
                                          description="Cache replication records on the topic not applied yet.")
        except Exception:
            log.exception("costline: could not set up the cache replication metrics")

    # -- internals ---------------------------------------------------------------------------
    def _call_ended(self, obs: CallObservation, error_type: str | None) -> None:
        attrs = dict(obs._attrs)
        if obs._response_model:
            attrs[contract.GEN_AI_RESPONSE_MODEL] = obs._response_model
        if error_type:
            attrs[contract.ERROR_TYPE] = error_type
        self._instruments[OPERATION_DURATION].record(max(self._now() - obs._started, 0.0), attrs)
        input_tokens, output_tokens = obs._input, obs._output
        read, write = obs._cache_read, obs._cache_creation
        if input_tokens is not None and (read or 0) + (write or 0) > input_tokens:
            # as the processor reads it: an input smaller than its own cache reads and writes is the API's own
            # input_tokens (the fresh part), not the total
            input_tokens += (read or 0) + (write or 0)
        token_hist = self._instruments[TOKEN_USAGE]
        if input_tokens is not None:
            token_hist.record(input_tokens, {**attrs, GEN_AI_TOKEN_TYPE: "input"})
        if output_tokens is not None:
            token_hist.record(output_tokens, {**attrs, GEN_AI_TOKEN_TYPE: "output"})
        explicit = obs._cost if obs._cost is not None and 0.0 <= obs._cost <= _MAX_CALL_USD else None
        cost, tier, status = explicit, obs._tier, None
        if self.pricing is not None:
            cost, tier, status = _price(self.pricing, obs, error_type is not None, explicit, input_tokens,
                                        output_tokens)
        cost_attrs = {k: v for k, v in obs._attrs.items() if k != contract.GEN_AI_OPERATION_NAME}
        if tier:
            cost_attrs[contract.COSTLINE_TIER] = tier
        if cost is None:
            if status is not None:
                self._instruments[CALLS_UNPRICED].add(1, {**cost_attrs, REASON: status})
        elif cost > 0:
            self._instruments[COST].add(cost, cost_attrs)


def _price(pricing: PricingTable, obs: CallObservation, failed: bool, explicit: float | None,
           input_tokens: int | None, output_tokens: int | None) -> tuple[float | None, str | None, str]:
    """``(cost, tier, pricing_status)`` the processor gives the call's span (:func:`costline.processors.records.
    flatten_span`, for a span the Recorder wrote): cost None when the lake leaves it unpriced."""
    read, write = obs._cache_read, obs._cache_creation
    price = pricing.price_call(
        model=obs._attrs.get(contract.GEN_AI_REQUEST_MODEL),
        provider=obs._attrs.get(contract.GEN_AI_PROVIDER_NAME),
        input_tokens=input_tokens or 0, output_tokens=output_tokens or 0,
        cache_read_tokens=read or 0, cache_creation_tokens=write or 0,
        cache_creation_1h_tokens=obs._cache_creation_1h, web_search_requests=obs._web_searches,
        batch=obs._batch, fast=obs._fast, service_tier=obs._service_tier, inference_geo=obs._geo,
        endpoint=obs._endpoint, explicit_cost_usd=explicit,
        explicit_tier=obs._tier, response_model=obs._response_model)
    cost, status = price.cost_usd, price.status
    if (cost is None and status == UNKNOWN_MODEL and failed and explicit is None
            and not input_tokens and not output_tokens and not read and not write):
        cost = 0.0  # a failed call that counted no tokens cost nothing, whatever the model
    if obs._usage_incomplete:
        # the provider sent no count, or a broken one: what was counted is a lower bound, priced; without an
        # input count the prompt's price is unknown, never that of a free prompt
        if input_tokens is None and explicit is None:
            cost, status = None, INCOMPLETE_USAGE
    elif status == PRICED and not failed:
        embedding = obs._attrs.get(contract.GEN_AI_OPERATION_NAME) == _EMBEDDINGS
        if (input_tokens is output_tokens is read is write is None or (input_tokens is None and not embedding)
                or (output_tokens is None and input_tokens is not None and not embedding)):
            # a call that answered without any usage, or with one count but not the other (one that was no
            # count: negative, NaN, not whole): unknown usage, never $0, never a free prompt or answer
            cost, status = None, INCOMPLETE_USAGE
    return cost, price.tier, status


def _observer(stats: Callable[[], Any], points: Callable[[Any], list[tuple[int, dict[str, str]]]],
              what: str) -> Callable[[Any], list[Any]]:
    """An observable instrument's callback: ``points(stats())`` as observations, none (logged) when either fails."""
    from opentelemetry.metrics import Observation

    def callback(_options: Any) -> list[Any]:
        try:
            return [Observation(value, attrs) for value, attrs in points(stats())]
        except Exception:
            log.exception("costline: could not read %s for metrics", what)
            return []
    return callback


def _count_or_none(value: Any, otherwise: int | None = None) -> int | None:
    """``value`` when it is a token count the Recorder writes (a whole ``int``, 0 to :data:`contract.MAX_TOKENS`), else
    ``otherwise``: None, NaN, a negative, a float (``1000.0`` too: the Recorder drops it), a bool, an absurd count."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= contract.MAX_TOKENS:
        return otherwise
    return value


def _absurd(value: Any) -> bool:
    """A count over :data:`contract.MAX_TOKENS`: a broken counter, which the Recorder leaves out and flags."""
    return isinstance(value, int) and not isinstance(value, bool) and value > contract.MAX_TOKENS


def _number_or_none(value: Any) -> float | None:
    """A number the Recorder writes as ``costline.cost_usd`` (NaN is none); not yet checked against the processor's
    bounds (finite, 0 to $100,000)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


# --- the pipeline -------------------------------------------------------------------------------
@dataclass
class MetricsSetup:
    """What :func:`setup_metrics` built: the provider, the instruments, the scrape endpoint."""

    provider: MeterProvider
    metrics: CostlineMetrics
    #: ``http://host:port/metrics`` when the Prometheus endpoint is on, else None.
    prometheus_url: str | None = None
    _server: Any = None
    _thread: Any = None

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Export what is left, stop the readers and the scrape endpoint. Idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        try:
            self.provider.shutdown()
        except Exception:
            log.exception("costline: metrics provider shutdown failed")


def setup_metrics(
    service_name: str,
    *,
    config: Config | CollectorConfig | None = None,
    readers: Sequence[MetricReader] = (),
    pricing: PricingTable | None = None,
    now: Callable[[], float] = time.perf_counter,
    set_global: bool = False,
) -> MetricsSetup:
    """A MeterProvider with costline's readers (``[collector] metrics_*``) plus ``readers``.

    ``config`` is the whole config (its pricing table then prices calls unless ``pricing`` is
    given) or its ``[collector]`` section (default: :func:`~costline.config.load_config`).
    Raises :class:`~costline.collectors.errors.CollectorError` when an enabled exporter cannot
    be set up (its package missing, the port taken).
    """
    if config is None:
        from costline.config import load_config

        config = load_config()
    if isinstance(config, Config):
        pricing = pricing or PricingTable(config.pricing)
        collector = config.collector
    else:
        collector = config
    all_readers: list[MetricReader] = list(readers)
    if collector.metrics_otlp:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        except ImportError as exc:
            raise CollectorError(f"{exc.name} is not installed: pip install opentelemetry-exporter-otlp") from None
        exporter = OTLPMetricExporter(endpoint=collector.metrics_otlp_endpoint) if collector.metrics_otlp_endpoint \
            else OTLPMetricExporter()
        all_readers.append(PeriodicExportingMetricReader(
            exporter, export_interval_millis=collector.metrics_export_interval_s * 1000.0))
    server = thread = url = None
    if collector.metrics_prometheus:
        try:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError as exc:
            raise CollectorError(f"{exc.name} is not installed: pip install 'costline[prometheus]'") from None
        registry = CollectorRegistry()  # this provider's metrics only, not the process-wide registry
        all_readers.append(PrometheusMetricReader(registry=registry))
        host, port = collector.metrics_prometheus_host, collector.metrics_prometheus_port
        try:
            server, thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise CollectorError(f"cannot serve Prometheus metrics on {host}:{port} ({exc}): set "
                                 "[collector] metrics_prometheus_port to a free port") from exc
        bound_host, bound_port = server.server_address[:2]
        url = f"http://{bound_host}:{bound_port}/metrics"
    provider = MeterProvider(metric_readers=all_readers,
                             resource=Resource.create({SERVICE_NAME: service_name}))
    if set_global:
        otel_metrics.set_meter_provider(provider)
    return MetricsSetup(provider, CostlineMetrics(provider, pricing=pricing, now=now), url, server, thread)
