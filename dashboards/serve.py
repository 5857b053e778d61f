"""``costline dashboard --serve``: the page on localhost, rebuilt from the lake as it fills.

A :class:`DashboardServer` answers ``GET /`` with the page, rebuilt on a background
thread when the last build is ``refresh_s`` old (clock injected): a request is
never held up by a rebuild, it gets the last good page; the page reloads itself every
``refresh_s`` seconds, keeping its date range (in the URL's ``#from=..&to=..``).
Standard library and :mod:`costline.netsec` only, loopback by default. Connections are served by
:class:`~costline.netsec.PooledHTTPServer`, as the collector's and the gateway's: at most
``[dashboard] max_workers`` threads and ``max_pending`` connections waiting, past both a 503 at once,
so idle connections cannot grow threads without bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from costline.config import Config
from costline.dashboards.errors import DashboardError
from costline.dashboards.settings import refresh_problem
from costline.netsec import GuardedHandler, Limits, PooledHTTPServer, host_name

__all__ = ["DashboardServer", "PageCache"]

log = logging.getLogger(__name__)


class PageCache:
    """The page's bytes, rebuilt by ``build`` when older than ``max_age_s`` (``clock`` in seconds).

    Only the first page is built in the request that asks for it (there is nothing to serve before it). After
    that a request never waits for a build: a page past ``max_age_s`` is served as it is while one rebuild runs on
    a background thread (one at a time), and the next request gets the new page. A rebuild that fails is logged
    and the last good page stays served; the next try is ``max_age_s`` later.
    """

    def __init__(self, build: Callable[[], str], max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._build = build
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._first = threading.Lock()  # one first build at a time
        self._page: bytes | None = None
        self._built_at = 0.0
        self._rebuild: threading.Thread | None = None
        self.builds = 0
        #: Background rebuilds that failed (the last good page was kept).
        self.failed = 0

    def get(self) -> bytes:
        with self._lock:
            page = self._page
            if page is not None:
                if self._clock() - self._built_at >= self._max_age_s and self._rebuild is None:
                    self._rebuild = threading.Thread(target=self._rebuild_page, name="costline-dashboard-build",
                                                     daemon=True)
                    self._rebuild.start()
                return page
        with self._first:
            with self._lock:
                if self._page is not None:
                    return self._page
            text = self._build().encode("utf-8")  # the first page: raises to the request (a 500 saying why)
            with self._lock:
                self._page, self._built_at = text, self._clock()
                self.builds += 1
                return text

    def _rebuild_page(self) -> None:
        started = self._clock()
        try:
            text = self._build().encode("utf-8")
        except Exception:  # a broken lake must not take the page down: keep serving the last good one
            log.exception("costline dashboard: cannot rebuild the page; serving the one built before")
            with self._lock:
                self.failed += 1
                self._built_at = started
                self._rebuild = None
            return
        with self._lock:
            self._page, self._built_at = text, started
            self.builds += 1
            self._rebuild = None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a running background rebuild (tests, shutdown); False if it still runs after ``timeout``."""
        with self._lock:
            thread = self._rebuild
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()


class _Handler(GuardedHandler):
    """``GET /``: the page. :class:`~costline.netsec.GuardedHandler` closes a connection idle for
    ``idle_timeout_s`` (before its request too) and refuses headers over ``max_header_bytes`` (431)."""

    server: "_HTTPServer"
    #: One request per connection: the page is one self-contained answer, so a keep-alive connection
    #: would only hold a worker idle.
    protocol_version = "HTTP/1.0"

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1 or host_name(hosts[0]) not in self.server.allowed_hosts:
            # DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example
            self.send_error(421, "unknown Host: add it to [dashboard] allowed_hosts")
            return
        path = self.path.split("?", 1)[0]
        if path not in ("/", "/index.html", "/dashboard.html"):
            self.send_error(404, "the dashboard is at /")
            return
        try:
            page = self.server.pages.get()
        except Exception as exc:  # a broken lake must not kill the server: say what happened
            log.exception("costline dashboard: cannot build the page")
            # The reason goes in the (escaped) body: DuckDB's messages span lines, which in the
            # status line would end it and be read as headers.
            self.send_error(500, "cannot build the dashboard", f"cannot build the dashboard: {exc}")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(page)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """One access-log line, the request line in it as the client sent it escaped as http.server escapes it
        (its ``_control_char_table``: C0/C1 controls and the backslash as ``\\xNN``), and any other character
        that does not print as :func:`costline.sqlutil.cell_text` writes it: a request with ESC, BEL or CR can
        neither retitle the terminal nor forge a log line."""
        from costline.sqlutil import cell_text

        log.info("dashboard %s - %s", self.address_string(),
                 cell_text((format % args).translate(self._control_char_table)))


class _HTTPServer(PooledHTTPServer):
    pages: PageCache
    allowed_hosts: frozenset[str]


_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class DashboardServer:
    """Serve ``config``'s dashboard on ``host:port`` (port 0: any free port; see :attr:`url`)."""

    def __init__(
        self,
        config: Config,
        *,
        host: str | None = None,
        port: int | None = None,
        refresh_s: float | None = None,
        build: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        d = config.dashboard
        chosen = refresh_s if refresh_s is not None else d.refresh_s
        problem = refresh_problem(chosen)
        if problem is not None:  # NaN or inf would be served as a page whose JSON cannot be written: 500s
            raise DashboardError(f"the refresh interval ({'--refresh' if refresh_s is not None else '[dashboard] refresh_s'}) "
                                 f"{problem}")
        self.refresh_s = float(chosen)
        if build is None:
            from costline.dashboards.build import build_page

            def build() -> str:
                return build_page(config, refresh_s=self.refresh_s)

        host = host if host is not None else d.host
        port = port if port is not None else d.port
        from costline.netsec import is_loopback

        if not is_loopback(host) and not d.allowed_hosts:
            raise DashboardError(f"listening on {host} lets other machines read every tenant's costs: set "
                                 "[dashboard] allowed_hosts to the names it is reached by (and put "
                                 "authentication in front), or keep the default 127.0.0.1")
        try:
            self._httpd = _HTTPServer((host, port), _Handler, limits=Limits.of(d), name="costline-dashboard",
                                      busy_body=("text/plain; charset=utf-8",
                                                 b"the dashboard is busy (too many connections): retry in a moment\n"))
        except OSError as exc:
            raise DashboardError(f"cannot listen on {host}:{port} ({exc}): pick another --port") from exc
        self._httpd.pages = PageCache(build, self.refresh_s, clock)
        self._httpd.allowed_hosts = _LOOPBACK_NAMES | {host_name(h) for h in d.allowed_hosts}
        self._thread: threading.Thread | None = None

    @property
    def pages(self) -> PageCache:
        return self._httpd.pages

    @property
    def refused(self) -> int:
        """Connections answered 503 because ``max_workers`` + ``max_pending`` were taken."""
        return self._httpd.refused

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        shown = "localhost" if host in ("127.0.0.1", "::1") else host
        return f"http://{shown}:{port}/"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C in the CLI)."""
        self._httpd.serve_forever(poll_interval=0.25)

    def start(self) -> "DashboardServer":
        """Serve on a background thread (tests, embedding)."""
        self._thread = threading.Thread(target=self.serve_forever, name="costline-dashboard", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.pages.wait(5)  # a rebuild in flight finishes (or is left, a daemon thread) before the socket closes
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
