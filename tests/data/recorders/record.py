"""Record a probe's spans against costline's stand-in (run in costline's .venv; the probe in its own venv).

    python record.py <probe> <out.json> <mode,mode,...>

``<probe>`` is ``crewai`` (venv: $CREWAI_VENV), ``mlflow`` (MLflow Tracing, venv: $MLFLOW_VENV) or ``af_anthropic`` (Agent Framework's Anthropic client,
venv: $AF_ANTHROPIC_VENV). For each mode the stand-in fails the first request with 400, the probe runs
(``<probe>_probe.py <stand-in URL> <mode> <its output>``), and its spans are stored with the stand-in's
log of what it served and the probe environment's versions of the packages that matter.
"""
import dataclasses
import json
import os
import subprocess
import sys
import tempfile

from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

HERE = os.path.dirname(os.path.abspath(__file__))
PROBES = {
    "crewai": ("CREWAI_VENV", ("crewai==", "anthropic==", "opentelemetry-sdk==",
                               "opentelemetry-instrumentation-crewai==", "openinference-instrumentation-crewai==",
                               "opentelemetry-instrumentation-anthropic==")),
    "mlflow": ("MLFLOW_VENV", ("mlflow-tracing==", "anthropic==", "openai==", "langchain-anthropic==",
                               "opentelemetry-sdk==", "opentelemetry-exporter-otlp-proto-http==")),
    "af_anthropic": ("AF_ANTHROPIC_VENV", ("agent-framework-core==", "agent-framework-anthropic==", "anthropic==",
                                           "opentelemetry-sdk==")),
}

probe, out, modes = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
venv_var, keep = PROBES[probe]
venv = os.environ[venv_var]
srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
srv.start()
rec = {"modes": {}}
try:
    for mode in modes:
        srv.log.clear()
        srv.clear_errors()  # a 400 the last mode left unused (its calls went to the other API)
        srv.inject_errors(400, 1, api="any" if probe == "mlflow" else "anthropic")
        tmp = os.path.join(tempfile.gettempdir(), f"{probe}_{mode}.json")
        p = subprocess.run([f"{venv}/bin/python", os.path.join(HERE, f"{probe}_probe.py"), srv.url, mode, tmp],
                           capture_output=True, text=True, timeout=300)
        print(mode, p.returncode, p.stdout[-2000:], p.stderr[-3000:])
        with open(tmp) as f:
            got = json.load(f)
        got["served"] = [dataclasses.asdict(e) for e in srv.log.entries()]
        freeze = subprocess.run([f"{venv}/bin/pip", "freeze"], capture_output=True, text=True).stdout
        got["venv"] = sorted(v for v in freeze.splitlines() if v.startswith(keep))
        rec["modes"][mode] = got
finally:
    srv.shutdown()
with open(out, "w") as f:
    json.dump(rec, f, separators=(",", ":"))
