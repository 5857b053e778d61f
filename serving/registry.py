"""The model registry: tier → model id, provider, endpoint and prices, built from config.

The four API tiers come from ``[[pricing.models]]`` (the first model of each tier, or
``[serving.backends] tier_models``), the student from ``[serving.backends]``::

    registry = ModelRegistry.from_config(config)
    registry.tier("budget").model          # "claude-haiku-4-5"
    registry.next_tier("budget")           # "mid"
    registry.estimate_cost("mid", input_tokens=800, output_tokens=200)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from costline import contract
from costline.config import Config
from costline.pricing import PricingTable
from costline.serving.errors import RoutingError

__all__ = ["TierSpec", "ModelRegistry", "TIER_ORDER"]

log = logging.getLogger(__name__)

#: Every tier a request can be routed to, cheapest first (the student is self-hosted).
TIER_ORDER: tuple[str, ...] = (contract.TIER_STUDENT, *contract.API_TIERS)


@dataclass(frozen=True, slots=True)
class TierSpec:
    """One routable tier."""

    name: str
    model: str
    provider: str
    #: Base URL of the API; None = the SDK's default.
    base_url: str | None
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    #: Environment variable of the API key ([serving.tiers.<tier>] api_key_env); None = the backend's default.
    key_env: str | None = None
    #: Claude on a cloud: the region ([serving.tiers.<tier>] region); None = the cloud's own defaults.
    region: str | None = None
    #: Vertex AI tiers: the Google Cloud project ([serving.tiers.<tier>] project); None = the credentials'.
    project: str | None = None

    @property
    def is_student(self) -> bool:
        return self.name == contract.TIER_STUDENT


class ModelRegistry:
    """The tiers costline routes between, and the escalation ladder over them."""

    def __init__(
        self,
        tiers: dict[str, TierSpec],
        *,
        pricing: PricingTable | None = None,
        student_next: str = contract.TIER_MID,
        student_cost_per_request: float = 0.0,
    ) -> None:
        unknown = [t for t in tiers if t not in TIER_ORDER]
        if unknown:
            raise RoutingError(f"unknown tier(s) {unknown}: tiers are {', '.join(TIER_ORDER)}")
        self._tiers = dict(sorted(tiers.items(), key=lambda kv: TIER_ORDER.index(kv[0])))
        self.pricing = pricing or PricingTable()
        if student_next not in contract.API_TIERS:  # the student itself would loop; a misspelt tier, end escalation
            raise RoutingError(f"[serving.escalation] student_next = {student_next!r}: must be one of the API tiers "
                               f"({', '.join(contract.API_TIERS)})")
        self.student_next = student_next
        #: Where a rejected student answer goes: ``student_next``, or (a tier the registry lacks) the next API tier
        #: above it the registry has, as the API tiers' ladder skips the tiers it lacks; None: none above it.
        self.student_escalates_to = next((t for t in self.api_tiers if self.rank(t) >= self.rank(student_next)), None)
        if contract.TIER_STUDENT in self._tiers and self.student_escalates_to != student_next:
            log.warning("costline: [serving.escalation] student_next = %r is not a tier of the registry (%s): a "
                        "rejected student answer goes to %s", student_next, ", ".join(self.api_tiers) or "none",
                        repr(self.student_escalates_to) if self.student_escalates_to else "no tier (not escalated)")
        #: What a student request is estimated to cost (its GPU hour spread over requests).
        self.student_cost_per_request = student_cost_per_request

    @classmethod
    def from_config(cls, config: Config, *, student_requests_per_hour: float = 3600.0) -> "ModelRegistry":
        """Tiers from ``[[pricing.models]]`` and ``[serving.backends]``."""
        backends = config.serving.backends
        extra = sorted(set(backends.tier_models) - set(contract.API_TIERS))
        if extra:
            raise RoutingError(f"[serving.backends] tier_models.{extra[0]}: not an API tier "
                               f"({', '.join(contract.API_TIERS)})")
        tiers: dict[str, TierSpec] = {}
        for tier in contract.API_TIERS:
            wanted = backends.tier_models.get(tier)
            candidates = [m for m in config.pricing.models if m.tier == tier]
            entry = None
            if wanted:
                entry = next((m for m in config.pricing.models if wanted in (m.model, *m.aliases)), None)
                if entry is None:
                    raise RoutingError(
                        f"[serving.backends] tier_models.{tier} = {wanted!r} is not in [[pricing.models]]: "
                        "add it there so its calls are priced"
                    )
            elif candidates:
                entry = candidates[0]
            if entry is None:
                continue
            # [serving.backends] anthropic_base_url is the Anthropic API's: a tier priced under another provider
            # (openai, aws.bedrock) is never sent there, nor its key
            base_url = backends.anthropic_base_url if entry.provider == contract.PROVIDER_ANTHROPIC else None
            tiers[tier] = TierSpec(tier, wanted or entry.model, entry.provider, base_url,
                                   entry.input_per_mtok, entry.output_per_mtok)
        tiers[contract.TIER_STUDENT] = TierSpec(contract.TIER_STUDENT, backends.student_model,
                                                contract.PROVIDER_VLLM, backends.student_base_url)
        for name in TIER_ORDER:  # [serving.tiers.<tier>]: another API, server or model for a tier
            override = config.serving.tiers.get(name)
            if override.configured:
                tiers[name] = _overridden(config, name, tiers.get(name), override)
        per_request = config.pricing.student_usd_per_hour / max(student_requests_per_hour, 1e-9)
        return cls(tiers, pricing=PricingTable(config.pricing), student_next=config.serving.escalation.student_next,
                   student_cost_per_request=per_request)

    # -- lookups -----------------------------------------------------------------------
    def __contains__(self, tier: object) -> bool:
        return tier in self._tiers

    def __iter__(self) -> Iterator[TierSpec]:
        return iter(self._tiers.values())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._tiers)

    @property
    def api_tiers(self) -> tuple[str, ...]:
        """The API tiers present, cheapest first."""
        return tuple(t for t in self._tiers if t != contract.TIER_STUDENT)

    def tier(self, name: str) -> TierSpec:
        try:
            return self._tiers[name]
        except KeyError:
            raise RoutingError(f"no tier {name!r} in the registry (have: {', '.join(self._tiers)}): "
                               "check [[pricing.models]] and [serving.router.rules]") from None

    def next_tier(self, name: str) -> str | None:
        """The tier an answer escalates to: the next API tier up; the student goes to ``student_next`` (the next API
        tier above it when the registry lacks it)."""
        if name == contract.TIER_STUDENT:
            return self.student_escalates_to
        api = self.api_tiers
        if name not in api:
            return None
        i = api.index(name)
        return api[i + 1] if i + 1 < len(api) else None

    def ladder(self, start: str, max_escalations: int) -> list[str]:
        """``start`` and the tiers it escalates to, at most ``max_escalations`` of them."""
        out = [start]
        while len(out) <= max_escalations:
            nxt = self.next_tier(out[-1])
            if nxt is None:
                break
            out.append(nxt)
        return out

    def rank(self, name: str) -> int:
        """Position among the API tiers (capability order); the student ranks below budget."""
        return TIER_ORDER.index(name)

    def estimate_cost(self, name: str, *, input_tokens: int, output_tokens: int) -> float:
        """USD of one call on a tier (uncached input; the student's amortised GPU cost)."""
        spec = self.tier(name)
        if spec.is_student:
            return self.student_cost_per_request
        price = self.pricing.price_call(model=spec.model, provider=spec.provider,
                                        input_tokens=input_tokens, output_tokens=output_tokens)
        if price.cost_usd is not None:
            return price.cost_usd
        return (input_tokens * spec.input_per_mtok + output_tokens * spec.output_per_mtok) / 1e6



def _overridden(config: Config, name: str, spec: TierSpec | None, override: Any) -> TierSpec:
    """Tier ``name`` as ``[serving.tiers.<name>]`` (``override``) changes ``spec`` (None: a tier
    [[pricing.models]] has no entry for)."""
    where = f"[serving.tiers.{name}]"
    default_provider = spec.provider if spec is not None else contract.PROVIDER_ANTHROPIC
    provider = {"anthropic": contract.PROVIDER_ANTHROPIC, "openai": contract.PROVIDER_OPENAI,
                "bedrock": contract.PROVIDER_BEDROCK, "vertex": contract.PROVIDER_VERTEX}.get(override.api,
                                                                                              default_provider)
    if provider == contract.PROVIDER_OPENAI and name == contract.TIER_STUDENT:
        provider = contract.PROVIDER_VLLM  # the student is an OpenAI-compatible server already
    model = override.model or (spec.model if spec is not None else "")
    if not model:
        raise RoutingError(f"{where} model: tier {name!r} has no [[pricing.models]] entry, so name its model here")
    same_api = spec is not None and provider == spec.provider
    base_url = override.base_url or (spec.base_url if same_api else None)
    input_price = output_price = 0.0
    if name != contract.TIER_STUDENT:
        if provider in (contract.PROVIDER_BEDROCK, contract.PROVIDER_VERTEX):
            # a cloud's spelling of Claude, priced as the processors price its calls: Bedrock's
            # "us.anthropic.claude-haiku-4-5-20251001-v1:0", Vertex's "claude-haiku-4-5@20251001" are the entry of
            # claude-haiku-4-5 (costline.pricing.normalize_model_id); an exact entry wins
            entry = PricingTable(config.pricing).lookup(model)
        else:  # the id the API is sent: exactly as priced (a spelling the API does not know fails at start)
            entry = next((m for m in config.pricing.models if model in (m.model, *m.aliases)), None)
        if entry is None:
            raise RoutingError(f"{where} model = {model!r} is not in [[pricing.models]]: add it there (with its "
                               "provider and prices) so its calls are priced")
        input_price, output_price = entry.input_per_mtok, entry.output_per_mtok
    return TierSpec(name, model, provider, base_url, input_price, output_price, override.api_key_env or None,
                    override.region or None, override.project or None)
