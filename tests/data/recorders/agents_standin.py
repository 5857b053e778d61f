"""costline's venv: serve the stand-in until stdin closes, then dump its log as JSON to argv[1]."""
import json, sys, dataclasses
from costline.config import PricingConfig, ModelPrice
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer
srv = StandInServer(StandInConfig(port=0, latency_scale=0.0, min_cache_tokens=100), pricing=PricingConfig(
    models=(ModelPrice("gpt-5-mini", "budget", provider="openai", input_per_mtok=1.0, output_per_mtok=1.0),)))
srv.start()
print(srv.openai_url, flush=True)
for line in sys.stdin:
    if line.strip() == "clear":
        srv.log.clear()
    elif line.strip() == "dump":
        print(json.dumps([dataclasses.asdict(e) for e in srv.log.entries()]), flush=True)
srv.shutdown()
