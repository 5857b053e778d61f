"""Model registry and call pricing.

A :class:`PricingTable` is built from :class:`~costline.config.PricingConfig`.
It answers two questions about a model call:

* which tier served it (:meth:`PricingTable.tier_of`), and
* what it cost (:meth:`PricingTable.price_call`).

Token accounting follows the GenAI semantic conventions: ``input_tokens``
*includes* cache reads and cache writes, so the uncached part is
``input - cache_read - cache_creation``. Cache reads cost the model's ``cache_read_per_mtok``, else
``cache_read_multiplier`` x its input price; cache writes its ``cache_write_per_mtok``, else
``cache_write_multiplier`` x, except those written with a one-hour lifetime (Anthropic's ``ttl: "1h"``, a
part of the writes): its ``cache_write_1h_per_mtok``, else ``cache_write_1h_multiplier`` x (2 against 1.25).
A call over a model's ``long_context_above_tokens`` of input (cached ones included) is billed, all of it, at
its long-prompt prices (:func:`long_prices`); a batch call costs ``batch_multiplier`` x its tokens. The web
searches a model's server tool made cost :func:`web_search_price` each on top. A call in Anthropic's fast mode
costs the model's ``fast_multiplier`` x its tokens; without one it is unpriced (``no_fast_price``). The service
tier a provider says served the call (:func:`service_tier_effect`) can discount it to batch prices (OpenAI's
``flex``, an Anthropic batch) or raise it: OpenAI's ``priority`` costs the model's ``priority_multiplier`` x its
tokens, without one it is unpriced (``no_priority_price``). Anthropic's US-only inference (``inference_geo`` "us")
costs :func:`us_inference_price` x its tokens (1.1). Claude on a cloud's regional endpoint (:func:`endpoint_scope`:
a Bedrock geography profile or in-region id, a Vertex AI region) costs :func:`regional_endpoint_price` x its tokens
(1.1 from Sonnet 4.5 and Haiku 4.5 on; the global endpoints cost the list prices).

Student calls have no token price (``cost_usd`` is 0, status ``student``) unless the span
carries an explicit ``costline.cost_usd``: the GPU's hosting cost comes from a dated
schedule (:func:`hosting_schedule`) that the lake's views apply hour by hour and share among
the requests that used the student (docs/sql.md).

An unknown model is never priced at $0 silently: :meth:`price_call` returns
``cost_usd=None`` with ``status="unknown_model"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from costline import contract
from datetime import datetime

from costline.config import ModelPrice, PricingConfig, parse_utc
from costline.errors import UnknownModelError

__all__ = [
    "PricingTable",
    "CallPrice",
    "normalize_model_id",
    "hosting_schedule",
    "cache_prices",
    "cache_write_1h_price",
    "long_prices",
    "long_prompt",
    "web_search_price",
    "us_inference_price",
    "regional_endpoint_price",
    "endpoint_scope",
    "endpoint_split",
    "bedrock_foundation_model",
    "service_tier_effect",
    "BATCH",
    "PRIORITY",
    "PRICED",
    "EXPLICIT",
    "STUDENT",
    "UNKNOWN_MODEL",
    "NO_FAST_PRICE",
    "NO_PRIORITY_PRICE",
    "UNPRICED_STATUSES",
]

PRICED: Final = "priced"  # priced from the table
EXPLICIT: Final = "explicit"  # the span carried costline.cost_usd
STUDENT: Final = "student"  # self-hosted: hosting cost spread per window
UNKNOWN_MODEL: Final = "unknown_model"  # no price known: cost_usd is None
NO_FAST_PRICE: Final = "no_fast_price"  # a fast-mode call of a model without fast_multiplier: cost_usd is None
NO_PRIORITY_PRICE: Final = "no_priority_price"  # an OpenAI priority call of a model without priority_multiplier
#: Statuses of a call the table could not price (``cost_usd`` None); the processor names their models in its log.
UNPRICED_STATUSES: Final = frozenset({UNKNOWN_MODEL, NO_FAST_PRICE, NO_PRIORITY_PRICE})

BATCH: Final = "batch"  # a service tier billed at batch prices
PRIORITY: Final = "priority"  # a service tier billed at the model's priority multiplier
#: (provider prefixes, service tier the answer names) -> what it does to the price. OpenAI bills ``flex`` at Batch
#: API prices and ``priority`` at a per-model premium (its own API and Azure's); an Anthropic Message Batches
#: result says ``usage.service_tier`` "batch". Other tiers ("default", "standard", "auto", "scale") change nothing.
_SERVICE_TIERS: Final = (
    (("anthropic",), "batch", BATCH),
    (("openai", "azure"), "flex", BATCH),
    (("openai", "azure"), "priority", PRIORITY),
)

#: A snapshot's date: Anthropic's ``-20251001`` (Vertex AI's ``@20251001``), OpenAI's ``-2024-11-20`` (what OpenAI and
#: Azure OpenAI answer as the response model), Bedrock's ``-v1:0``, ``-latest``. A snapshot priced apart from its
#: alias (OpenAI's first ``gpt-4o-2024-05-13``) is listed by its dated id, which is looked up first.
_DATE_SUFFIX = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|@\d{8}|-v\d+(:\d+)?|-latest)$")
_PER_TOKEN = 1e-6


#: ``provider:model`` as Pydantic AI and LangChain's ``init_chat_model`` name a model (only these providers: an
#: Ollama tag such as ``llama3.1:8b`` is a name of its own).
_PROVIDER_PREFIX = re.compile(r"^(?:anthropic|openai|azure|bedrock|google-vertex|google-gla|vertex_ai|gateway):")
#: OpenRouter's variants of a Claude model billed at its prices (``:online`` adds web results: not stripped).
_ROUTER_VARIANT = re.compile(r":(?:beta|thinking)$")
#: A dotted version in a Claude id as routers write it (``claude-3.5-haiku``, ``claude-sonnet-4.5``).
_DOTTED_VERSION = re.compile(r"(\d)\.(\d)")
#: A Claude 4-or-later id with its version first, as the Vercel AI Gateway first named them (``claude-4-sonnet``,
#: ``claude-4.1-opus``): Anthropic's ids since Claude 4 put the family first (``claude-sonnet-4``).
_VERSION_FIRST = re.compile(r"^claude-([4-9](?:-\d)?)-(opus|sonnet|haiku)(?=$|-)")
#: Amazon Bedrock's model ids: ``anthropic.`` after an optional cross-region inference prefix.
_BEDROCK_PREFIX = re.compile(r"^(?:(?:us|us-gov|eu|apac|ap|jp|au|ca|global)\.)?anthropic\.")


#: A Claude id's version once normalised: ``claude-sonnet-4-5`` (4, 5), ``claude-fable-5`` (5), ``claude-3-5-haiku``.
_CLAUDE_VERSION = re.compile(r"^claude-(?:[a-z]+-)?(\d{1,2})(?:-(\d{1,2}))?(?=$|-)")
#: The first Claude the clouds sell through global and regional endpoints at two prices: Sonnet 4.5 (and Haiku 4.5,
#: released after it); older models keep one price wherever they run.
_ENDPOINT_SPLIT_SINCE: Final = (4, 5)
#: A Bedrock Claude id, after an ARN's or a router's ``…/``: its inference profile's geography (``global``, ``us``,
#: ``eu``, ``apac``, ``jp``, ``au``, ``us-gov``…) or none (an in-region model id).
_BEDROCK_CLAUDE = re.compile(r"^(?:([a-z][a-z-]{0,15})\.)?anthropic\.claude")
#: A Vertex AI call's location in its URL (``…/locations/us-east5/publishers/anthropic/models/…``).
_VERTEX_LOCATION = re.compile(r"/locations/([a-z0-9-]{1,40})/publishers/anthropic/")
#: Vertex AI's hosts: ``aiplatform.googleapis.com`` (global), ``us-east5-aiplatform.googleapis.com`` (a region),
#: ``aiplatform.us.rep.googleapis.com`` (a multi-region); mTLS's ``…aiplatform.mtls.googleapis.com``; a port kept.
_VERTEX_HOST = re.compile(
    r"^(?:([a-z0-9-]{1,40})-)?aiplatform(\.[a-z0-9-]{1,40}\.rep)?(?:\.mtls)?\.googleapis\.com\.?(?::\d{1,5})?$")
#: The most of a URL :func:`endpoint_scope` reads (the location comes early in it).
_MAX_URL_CHARS: Final = 2048


def normalize_model_id(model: str) -> str:
    """``claude-haiku-4-5-20251001`` → ``claude-haiku-4-5``, ``gpt-4o-2024-11-20`` → ``gpt-4o`` (strip snapshot
    dates / ``-latest``), also as
    the clouds spell it: Bedrock's ``us.anthropic.claude-haiku-4-5-20251001-v1:0`` (or an inference
    profile's ARN ending in it), Vertex AI's ``claude-haiku-4-5@20251001``; as routers and frameworks spell it:
    OpenRouter's and the Vercel AI Gateway's ``anthropic/claude-haiku-4.5`` (a Claude version's dots are dashes;
    the gateway's early ``claude-4.1-opus`` is ``claude-opus-4-1``; OpenRouter's same-price ``:beta`` /
    ``:thinking`` variants), Pydantic AI's and LangChain's ``anthropic:claude-haiku-4-5``."""
    model = model.strip().lower()
    if "/" in model:  # "anthropic/claude-..." style prefixes, ARNs
        model = model.rsplit("/", 1)[1]
    model = _PROVIDER_PREFIX.sub("", model)
    model = _BEDROCK_PREFIX.sub("", model)
    if model.startswith("claude-"):
        model = _DOTTED_VERSION.sub(r"\1-\2", _ROUTER_VARIANT.sub("", model))
        model = _VERSION_FIRST.sub(r"claude-\2-\1", model)
    stripped = _DATE_SUFFIX.sub("", model)
    if stripped != model and stripped.startswith("claude-"):  # Bedrock: a version after the date
        stripped = _DATE_SUFFIX.sub("", stripped)
    return stripped


@dataclass(frozen=True, slots=True)
class CallPrice:
    cost_usd: float | None
    tier: str
    status: str


class PricingTable:
    """Tier lookup and call pricing for one version of the pricing config."""

    def __init__(self, config: PricingConfig | None = None) -> None:
        self.config = config or PricingConfig()
        self.version = self.config.version
        self._by_id: dict[str, ModelPrice] = {}
        for m in self.config.models:
            for name in (m.model, *m.aliases):
                self._by_id[name.lower()] = m
                self._by_id.setdefault(normalize_model_id(name), m)
        self._student_providers = frozenset(p.lower() for p in self.config.student_providers)

    def lookup(self, model: str | None) -> ModelPrice | None:
        """The registry entry for a model id, tolerant of snapshot suffixes; None if unknown."""
        if not model:
            return None
        low = model.strip().lower()
        return self._by_id.get(low) or self._by_id.get(normalize_model_id(low))

    def require(self, model: str) -> ModelPrice:
        """Like :meth:`lookup` but raises :class:`UnknownModelError`."""
        found = self.lookup(model)
        if found is None:
            raise UnknownModelError(model)
        return found

    def is_student(self, provider: str | None, model: str | None, tier: str | None = None) -> bool:
        if tier == contract.TIER_STUDENT:
            return True
        if provider and provider.lower() in self._student_providers:
            return True
        entry = self.lookup(model)
        return entry is not None and entry.tier == contract.TIER_STUDENT

    def tier_of(self, provider: str | None, model: str | None, explicit_tier: str | None = None) -> str:
        """The tier that served a call: the span's own ``costline.tier`` wins, then the registry."""
        if explicit_tier:
            return explicit_tier
        if self.is_student(provider, model):
            return contract.TIER_STUDENT
        entry = self.lookup(model)
        return entry.tier if entry else contract.UNKNOWN_TIER

    def price_call(
        self,
        *,
        model: str | None,
        provider: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cache_read_tokens: int = 0,
        cache_creation_tokens: int = 0,
        cache_creation_1h_tokens: int = 0,
        web_search_requests: int = 0,
        batch: bool = False,
        fast: bool = False,
        service_tier: str | None = None,
        inference_geo: str | None = None,
        endpoint: str | None = None,
        explicit_cost_usd: float | None = None,
        explicit_tier: str | None = None,
        response_model: str | None = None,
    ) -> CallPrice:
        """Price one model call. Never raises for unknown models: see ``status``.

        ``cache_creation_1h_tokens`` are the part of ``cache_creation_tokens`` written with a one-hour lifetime
        (more than the writes is read as all of them); ``web_search_requests`` the searches its server tool made,
        priced per search on top of the tokens (the batch multiplier discounts the tokens only). ``fast``: the
        call ran in Anthropic's fast mode, its tokens at the model's ``fast_multiplier`` (none: unpriced).
        ``service_tier``: the tier the provider says served it (:func:`service_tier_effect`: batch prices, or the
        model's ``priority_multiplier``, none: unpriced). ``inference_geo``: where Anthropic says it ran ("us":
        :func:`us_inference_price` x the tokens). ``endpoint``: the kind of a cloud's endpoint that ran it
        (:func:`endpoint_scope`; "regional": :func:`regional_endpoint_price` x the tokens)."""
        tier = self.tier_of(provider, response_model or model, explicit_tier)
        if tier == contract.UNKNOWN_TIER and response_model:
            tier = self.tier_of(provider, model, explicit_tier)
        if explicit_cost_usd is not None:
            return CallPrice(float(explicit_cost_usd), tier, EXPLICIT)
        if tier == contract.TIER_STUDENT:
            return CallPrice(0.0, tier, STUDENT)
        entry = self.lookup(response_model) or self.lookup(model)
        if entry is None:
            return CallPrice(None, tier, UNKNOWN_MODEL)
        if fast and entry.fast_multiplier is None:
            return CallPrice(None, tier, NO_FAST_PRICE)  # 2 to 6 x the standard price: never guessed
        effect = service_tier_effect(provider, service_tier)
        if effect == PRIORITY and entry.priority_multiplier is None:
            return CallPrice(None, tier, NO_PRIORITY_PRICE)  # 1.7 to 2 x, by model: never guessed
        cfg = self.config
        read = max(int(cache_read_tokens or 0), 0)
        write = max(int(cache_creation_tokens or 0), 0)
        write_1h = min(max(int(cache_creation_1h_tokens or 0), 0), write)
        total_in = max(int(input_tokens or 0), 0)
        uncached = max(total_in - read - write, 0)
        in_price, out_price, scale = entry.input_per_mtok, entry.output_per_mtok, 1.0
        if long_prompt(entry, total_in):
            in_price, out_price, scale = long_prices(entry)
        read_price, write_price = cache_prices(entry, cfg)
        cost = (
            uncached * in_price * _PER_TOKEN
            + read * read_price * scale * _PER_TOKEN
            + (write - write_1h) * write_price * scale * _PER_TOKEN
            + (write_1h * cache_write_1h_price(entry, cfg) * scale * _PER_TOKEN if write_1h else 0.0)
            + max(int(output_tokens or 0), 0) * out_price * _PER_TOKEN
        )
        if fast:
            cost *= entry.fast_multiplier or 0.0
        if effect == PRIORITY:
            cost *= entry.priority_multiplier or 0.0
        if inference_geo == "us" and endpoint is None:  # Anthropic's API's own US-only inference, not a cloud's
            cost *= us_inference_price(entry, cfg)
        if endpoint == contract.ENDPOINT_REGIONAL:
            cost *= regional_endpoint_price(entry, cfg)
        if batch or effect == BATCH:
            cost *= cfg.batch_multiplier
        searches = max(int(web_search_requests or 0), 0)
        if searches:
            cost += searches * web_search_price(entry, cfg) / 1000.0
        return CallPrice(cost, tier, PRICED)

    def student_hourly_cost(self) -> float:
        """The flat hosting rate (``student_usd_per_hour``); the views use :func:`hosting_schedule`."""
        return self.config.student_usd_per_hour


def cache_prices(model: ModelPrice, config: PricingConfig) -> tuple[float, float]:
    """USD per million cache-read and cache-write input tokens of ``model``: its own prices where set, else its
    input price x ``cache_read_multiplier`` / ``cache_write_multiplier``."""
    read = model.cache_read_per_mtok
    write = model.cache_write_per_mtok
    return (model.input_per_mtok * config.cache_read_multiplier if read is None else read,
            model.input_per_mtok * config.cache_write_multiplier if write is None else write)


def web_search_price(model: ModelPrice, config: PricingConfig) -> float:
    """USD per 1,000 web searches of ``model``'s server tool: its own price, else ``[pricing] web_search_per_1k``."""
    return config.web_search_per_1k if model.web_search_per_1k is None else model.web_search_per_1k


def us_inference_price(model: ModelPrice, config: PricingConfig) -> float:
    """The multiple of its global token prices a call of ``model`` costs when Anthropic ran it in the US only
    (``inference_geo`` "us"): its own ``us_inference_multiplier``, else ``[pricing] us_inference_multiplier``."""
    own = model.us_inference_multiplier
    return config.us_inference_multiplier if own is None else own


def regional_endpoint_price(model: ModelPrice, config: PricingConfig) -> float:
    """The multiple of its global prices a call of ``model`` costs through a cloud's regional endpoint: its own
    ``regional_endpoint_multiplier``, else ``[pricing] regional_endpoint_multiplier`` for a Claude model the clouds
    sell at two prices (:func:`endpoint_split`), else 1."""
    own = model.regional_endpoint_multiplier
    if own is not None:
        return own
    return config.regional_endpoint_multiplier if endpoint_split(model) else 1.0


def endpoint_split(model: ModelPrice) -> bool:
    """Whether the clouds sell ``model`` (a registry entry, by its id or an alias) through global and regional
    endpoints at two prices: Claude from Sonnet 4.5 and Haiku 4.5 on."""
    for name in (model.model, *model.aliases):
        found = _CLAUDE_VERSION.match(normalize_model_id(name))
        if found and (int(found[1]), int(found[2] or 0)) >= _ENDPOINT_SPLIT_SINCE:
            return True
    return False


def endpoint_scope(model: str | None, server_address: str | None = None, url: str | None = None) -> str | None:
    """The kind of a cloud's endpoint that ran a Claude call: ``"global"``, ``"regional"`` or None (not a cloud's
    call, or the span does not say).

    Amazon Bedrock says it in the model id: ``global.anthropic.…`` is a global inference profile; a geography's
    (``us.``, ``eu.``, ``apac.``, ``jp.``…) or an in-region id (``anthropic.…``) is regional; an application
    inference profile's ARN names no model and says nothing. Google Vertex AI says it in the request's URL
    (``…/locations/global/…`` or ``…/locations/us-east5/…``) or its host (``aiplatform.googleapis.com`` against
    ``us-east5-aiplatform.googleapis.com`` or a multi-region's ``aiplatform.us.rep.googleapis.com``)."""
    if model:
        bedrock = _BEDROCK_CLAUDE.match(model.strip().lower().rsplit("/", 1)[-1])
        if bedrock:
            return contract.ENDPOINT_GLOBAL if bedrock[1] == "global" else contract.ENDPOINT_REGIONAL
    if url:
        located = _VERTEX_LOCATION.search(url[:_MAX_URL_CHARS].lower())
        if located:
            return contract.ENDPOINT_GLOBAL if located[1] == "global" else contract.ENDPOINT_REGIONAL
    if server_address and (not model or normalize_model_id(model).startswith("claude-")):  # Gemini's hosts too
        host = _VERTEX_HOST.match(server_address.strip().lower()[:256])
        if host:
            return contract.ENDPOINT_REGIONAL if host[1] or host[2] else contract.ENDPOINT_GLOBAL
    return None


def bedrock_foundation_model(model: str) -> str:
    """A Bedrock Claude inference profile's model without its geography (``us.anthropic.claude-…`` →
    ``anthropic.claude-…``: what Bedrock's CountTokens takes); any other id as it is."""
    found = _BEDROCK_CLAUDE.match(model.strip().lower())
    return model.strip()[len(found[1]) + 1:] if found and found[1] else model


def service_tier_effect(provider: str | None, service_tier: str | None) -> str | None:
    """What the service tier a provider's answer names does to a call's price: :data:`BATCH` (batch prices),
    :data:`PRIORITY` (the model's ``priority_multiplier``) or None (the standard prices)."""
    if not service_tier or not provider:
        return None
    for providers, tier, effect in _SERVICE_TIERS:
        if service_tier == tier and provider.startswith(providers):
            return effect
    return None


def long_prompt(model: ModelPrice, input_tokens: int) -> bool:
    """Whether a call of ``input_tokens`` (cache reads and writes included) falls in the model's long-prompt band."""
    above = model.long_context_above_tokens
    return above is not None and input_tokens > above


def long_prices(model: ModelPrice) -> tuple[float, float, float]:
    """USD per million input and output tokens in the model's long-prompt band, and the factor its cache prices
    are scaled by there (as its input price is; 1 for a model whose input price is 0)."""
    long_in = model.long_input_per_mtok if model.long_input_per_mtok is not None else model.input_per_mtok
    long_out = model.long_output_per_mtok if model.long_output_per_mtok is not None else model.output_per_mtok
    return long_in, long_out, (long_in / model.input_per_mtok if model.input_per_mtok > 0 else 1.0)


def cache_write_1h_price(model: ModelPrice, config: PricingConfig) -> float:
    """USD per million input tokens of ``model`` written to the prompt cache for an hour: its own price where set,
    else its input price x ``cache_write_1h_multiplier``."""
    own = model.cache_write_1h_per_mtok
    return model.input_per_mtok * config.cache_write_1h_multiplier if own is None else own


def hosting_schedule(config: PricingConfig) -> list[tuple[datetime | None, datetime | None, float]]:
    """The student's hosting as ``[(since, until, USD per hour)]`` (naive UTC; None: open end).

    ``[[pricing.hosting]]`` periods (rate x replicas) when there are any, else one open period at
    ``student_usd_per_hour`` (none when that is 0).
    """
    if config.hosting:
        return [(parse_utc(p.since) if p.since else None, parse_utc(p.until) if p.until else None,
                 float(p.usd_per_hour) * int(p.replicas)) for p in config.hosting]
    if config.student_usd_per_hour > 0:
        return [(None, None, float(config.student_usd_per_hour))]
    return []
