"""Record Google ADK's own spans (scope ``gcp.vertex.agent``) against costline's stand-in Gemini API.

Run in costline's .venv (the stand-in here), ADK in venvs of its own (google-adk pins OpenTelemetry and
google-genai versions costline's venv does not have):

    ADK1_VENV=/path/adk1venv ADK2_VENV=/path/adk2venv \\
        python tests/data/recorders/record_adk.py tests/data/adk_spans.json adk1,adk2_legacy,adk2,adk1_openinference

$ADK1_VENV: google-adk 1.39.1 (``--no-deps``, plus fastapi, authlib, joserfc, aiosqlite, tzlocal); $ADK2_VENV:
google-adk 2.13.0; both see costline's venv through a ``.pth`` (``site.addsitedir``), which gives them
openinference-instrumentation-google-genai. Modes: ``adk1`` (1.x: ``call_llm`` with ``generate_content <model>`` inside it, one model call),
``adk2_legacy`` (2.x with ``ADK_TELEMETRY_SCHEMA_VERSION_OPT_IN=1``: the same pair), ``adk2`` (2.x's default
schema), ``adk1_openinference`` (1.x with OpenInference's google-genai instrumentor: its span inside ADK's
two). For each mode the stand-in fails the first Gemini request with 500, ``adk_probe.py`` runs, and its spans
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
KEEP = ("google-adk==", "google-genai==", "opentelemetry-sdk==", "opentelemetry-api==",
        "openinference-instrumentation-google-genai==")
MODES = {"adk1": ("ADK1_VENV", {}), "adk2_legacy": ("ADK2_VENV", {"ADK_TELEMETRY_SCHEMA_VERSION_OPT_IN": "1"}),
         "adk2": ("ADK2_VENV", {}), "adk1_openinference": ("ADK1_VENV", {})}

out, modes = sys.argv[1], sys.argv[2].split(",")
rec = {"modes": {}, "recorded_by": "tests/data/recorders/record_adk.py + adk_probe.py, against costline "
       "StandInServer(latency_scale=0) with one Gemini 500 injected first",
       "format": "modes.<mode>.otlp_gzip: base64 of gzip of one OTLP ExportTraceServiceRequest (protobuf) per "
                 "trace; served: the stand-in log, one entry per request; runs: what the probe saw"}
for mode in modes:
    venv_var, env = MODES[mode]
    venv = os.environ[venv_var]
    srv = StandInServer(StandInConfig(port=0, latency_scale=0.0))
    srv.start()
    try:
        attach(srv).inject_errors(500, 1)
        tmp = os.path.join(tempfile.gettempdir(), f"adk_{mode}.json")
        p = subprocess.run([f"{venv}/bin/python", os.path.join(HERE, "adk_probe.py"), srv.url, mode, tmp],
                           capture_output=True, text=True, timeout=300, env={**os.environ, **env})
        print(mode, p.returncode, p.stdout[-3000:], p.stderr[-3000:])
        with open(tmp) as f:
            got = json.load(f)
        got["served"] = [dataclasses.asdict(e) for e in srv.log.entries()]
        freeze = subprocess.run([f"{venv}/bin/python", "-m", "pip", "freeze"], capture_output=True,
                                text=True).stdout
        got["venv"] = sorted(v for v in freeze.splitlines() if v.startswith(KEEP))
        rec["modes"][mode] = got
    finally:
        srv.shutdown()
with open(out, "w") as f:
    json.dump(rec, f, separators=(",", ":"))
