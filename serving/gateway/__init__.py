"""costline.serving.gateway: the HTTP front of the serving path.

* :mod:`~costline.serving.gateway.app` — :class:`Gateway`, the Anthropic Messages API in front of the pipeline;
* :mod:`~costline.serving.gateway.openai_api` — the OpenAI Chat Completions API on the same pipeline;
* :mod:`~costline.serving.gateway.messages_api` — the Messages API's shapes (error types, texts);
* :mod:`~costline.serving.gateway.asgi` — serving the handlers (Starlette on uvicorn, bounded pool);
* :mod:`~costline.serving.gateway.auth` — API keys, tenants and rate limits (docs/security.md);
* :mod:`~costline.serving.gateway.workers` — ``costline serve --workers N``: N processes on one port, one cache;
* :mod:`~costline.serving.gateway.shared_limits` — the rate-limit buckets and the tenants' in-flight counts
  those workers share;
* ``_http`` — the plain request/response shapes and the stdlib JSON server the stand-ins share;
* :mod:`~costline.serving.gateway.serve_cli` (``costline serve``), :mod:`~costline.serving.gateway.keys_cli`
  (``costline keys``).

Names are imported lazily, so ``import costline.serving.gateway`` pulls in no web framework.
"""

from __future__ import annotations

from costline.lazy import lazy_loader

#: public name -> the module that defines it
_LAZY: dict[str, str] = {
    "Gateway": "app",
    "AsgiServer": "asgi",
    "ChatCompletions": "openai_api",
    "GatewayGuard": "auth",
    "KeyStore": "auth",
    "WorkerSupervisor": "workers",
    "SharedRateLimiter": "shared_limits",
    "SharedTenantCounts": "shared_limits",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_loader(__name__, _LAZY)
