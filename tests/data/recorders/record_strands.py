"""Run in costline's .venv: the stand-in here, Strands in its own venv; writes the recording."""
import dataclasses
import os
import tempfile
import json
import subprocess
import sys

from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

HERE = os.path.dirname(os.path.abspath(__file__))

out = sys.argv[1]
srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100))
srv.start()
versions = subprocess.run([os.environ["STRANDS_VENV"] + "/bin/pip", "freeze"], capture_output=True, text=True).stdout
keep = ("strands-agents==", "anthropic==", "opentelemetry-sdk==", "opentelemetry-instrumentation-anthropic==")
rec = {"versions": sorted(v for v in versions.splitlines() if v.startswith(keep)), "modes": {}}
try:
    for mode in ("alone", "openllmetry", "sdk"):
        venv = os.environ["STRANDS_SDK_VENV"] if mode == "sdk" else os.environ["STRANDS_VENV"]
        srv.log.clear()
        srv.inject_errors(400, 1)
        tmp = os.path.join(tempfile.gettempdir(), f"strands_{mode}.json")
        p = subprocess.run([f"{venv}/bin/python", os.path.join(HERE, "strands_probe.py"), srv.url, mode, tmp],
                           capture_output=True, text=True, timeout=300)
        print(mode, p.returncode, p.stdout, p.stderr[-3000:])
        got = json.load(open(tmp))
        got["served"] = [dataclasses.asdict(e) for e in srv.log.entries()]
        got["venv"] = sorted(v for v in subprocess.run([f"{venv}/bin/pip", "freeze"], capture_output=True,
                                                       text=True).stdout.splitlines() if v.startswith(keep))
        rec["modes"][mode] = got
finally:
    srv.shutdown()
json.dump(rec, open(out, "w"), indent=1)
