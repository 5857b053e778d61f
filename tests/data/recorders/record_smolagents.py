"""Record smolagents' spans (OpenInference's smolagents + OpenAI instrumentors) against costline's stand-in.

Run in costline's .venv (the stand-in here), smolagents in a venv of its own:

    SMOLAGENTS_VENV=/path/smolvenv python tests/data/recorders/record_smolagents.py \\
        tests/data/smolagents_dated_spans.json dated,echo

$SMOLAGENTS_VENV: smolagents 1.26.0, openinference-instrumentation-smolagents 0.1.43,
openinference-instrumentation-openai 0.1.66, openai, opentelemetry-sdk. The stand-in serves chat completions for
``gpt-4o-mini`` (listed as a student model name: it answers chat completions only for those). Mode ``dated`` puts a
proxy in front of it that rewrites the answer's ``model`` to the dated snapshot OpenAI's API answers with
(a request for ``gpt-4o-mini`` answers ``"model": "gpt-4o-mini-2024-07-18"``); ``echo`` talks to the stand-in,
which answers with the model asked for. ``smolagents_probe.py`` runs, and its spans are stored with the stand-in's
log of what it served and the probe environment's package versions.
"""
import dataclasses
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request

from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

HERE = os.path.dirname(os.path.abspath(__file__))
KEEP = ("smolagents==", "openinference-instrumentation-smolagents==", "openinference-instrumentation-openai==",
        "openai==", "opentelemetry-sdk==")
SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18"}


def dated_proxy(upstream: str) -> http.server.ThreadingHTTPServer:
    """A reverse proxy that answers as api.openai.com does: a JSON answer's ``model`` is the dated snapshot."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            req = urllib.request.Request(upstream + self.path, data=body, method="POST", headers={
                k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")})
            try:
                resp = urllib.request.urlopen(req)
                status, data, ctype = resp.status, resp.read(), resp.headers.get("content-type", "")
            except urllib.error.HTTPError as e:
                status, data, ctype = e.code, e.read(), e.headers.get("content-type", "")
            if "json" in ctype:
                doc = json.loads(data)
                if isinstance(doc, dict) and doc.get("model") in SNAPSHOTS:
                    doc["model"] = SNAPSHOTS[doc["model"]]
                data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("content-type", ctype or "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


out, modes = sys.argv[1], sys.argv[2].split(",")
venv = os.environ["SMOLAGENTS_VENV"]
rec = {"modes": {}, "recorded_by": "tests/data/recorders/record_smolagents.py + smolagents_probe.py, against "
       "costline StandInServer(latency_scale=0, student_models=('gpt-4o-mini',)); mode dated through a proxy that "
       "answers the dated snapshot",
       "format": "modes.<mode>.otlp_gzip: base64 of gzip of one OTLP ExportTraceServiceRequest (protobuf) per "
                 "trace; served: the stand-in log, one entry per request; runs: what the probe saw"}
for mode in modes:
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, student_models=("gpt-4o-mini",)))
    srv.start()
    proxy = dated_proxy(srv.url) if mode == "dated" else None
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}" if proxy else srv.url
        tmp = os.path.join(tempfile.gettempdir(), f"smolagents_{mode}.json")
        p = subprocess.run([f"{venv}/bin/python", os.path.join(HERE, "smolagents_probe.py"), url, mode, tmp],
                           capture_output=True, text=True, timeout=300)
        print(mode, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
        with open(tmp) as f:
            got = json.load(f)
        got["served"] = [dataclasses.asdict(e) for e in srv.log.entries()]
        freeze = subprocess.run([f"{venv}/bin/python", "-m", "pip", "freeze"], capture_output=True,
                                text=True).stdout
        got["venv"] = sorted(v for v in freeze.splitlines() if v.startswith(KEEP))
        rec["modes"][mode] = got
    finally:
        if proxy:
            proxy.shutdown()
        srv.shutdown()
with open(out, "w") as f:
    json.dump(rec, f, separators=(",", ":"))
