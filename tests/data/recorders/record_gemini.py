"""Record google-genai's spans under each Gemini instrumentation against costline's stand-in.

Run in costline's .venv (the stand-in here), google-genai and the instrumentations in $GEMINI_VENV
(google-genai needs tenacity < 9.2 and opentelemetry-instrumentation-google-genai needs
opentelemetry-util-genai 1.3b0: neither fits costline's venv):

    GEMINI_VENV=/path/geminivenv GEMINI_UTIL_1_1_VENV=/path/gemini2venv \
        python tests/data/recorders/record_gemini.py tests/data/gemini_spans.json \
        official,openinference,openllmetry,all,all_app,logfire,official_util_1_1=official:GEMINI_UTIL_1_1_VENV

$GEMINI_VENV: google-genai 2.34.0 (the official instrumentation supports < 3), opentelemetry-instrumentation-google-genai
1.3b0 with opentelemetry-util-genai 1.3b0, openinference-instrumentation-google-genai 1.4.14,
opentelemetry-instrumentation-google-generativeai 0.62.4, logfire 5.4.0, opentelemetry-sdk 1.45.2,
opentelemetry-exporter-otlp-proto-common. $GEMINI_UTIL_1_1_VENV: google-genai 2.34.0 with
opentelemetry-instrumentation-google-genai 1.1b0 on opentelemetry-util-genai 1.1b0 (what costline's venv pins).
A mode ``label=probe_mode:VENV_VAR`` runs the probe's ``probe_mode`` in that variable's venv, stored as ``label``.

For each mode the stand-in fails the first Gemini request with 429, ``gemini_probe.py`` runs, and its spans
are stored with the stand-in's log of what it served and the probe environment's package versions.
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer
from costline.sim.standin_gemini import attach

HERE = os.path.dirname(os.path.abspath(__file__))
KEEP = ("google-genai==", "opentelemetry-sdk==", "opentelemetry-instrumentation-google-genai==",
        "opentelemetry-util-genai==", "openinference-instrumentation-google-genai==",
        "opentelemetry-instrumentation-google-generativeai==", "logfire==")

out, modes = sys.argv[1], sys.argv[2].split(",")
rec = {"modes": {}}
for item in modes:
    label, _, spec = item.partition("=")
    mode, _, venv_var = (spec or label).partition(":")
    venv = os.environ[venv_var or "GEMINI_VENV"]
    # a fresh stand-in per mode: the implicit cache starts empty each time
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
    srv.start()
    try:
        attach(srv).inject_errors(429, 1)
        tmp = os.path.join(tempfile.gettempdir(), f"gemini_{label}.json")
        p = subprocess.run([f"{venv}/bin/python", os.path.join(HERE, "gemini_probe.py"), srv.url, mode, tmp],
                           capture_output=True, text=True, timeout=300)
        print(label, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
        with open(tmp) as f:
            got = json.load(f)
        got["served"] = [dataclasses.asdict(e) for e in srv.log.entries()]
        freeze = subprocess.run([f"{venv}/bin/pip", "freeze"], capture_output=True, text=True).stdout
        got["venv"] = sorted(v for v in freeze.splitlines() if v.startswith(KEEP))
        rec["modes"][label] = got
    finally:
        srv.shutdown()
with open(out, "w") as f:
    json.dump(rec, f, separators=(",", ":"))
