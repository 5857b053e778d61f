"""Run in a venv with openai-agents and its bridges ($COSTLINE_PYTHON: costline's .venv python, which serves the stand-in): run Agents SDK scenarios against the stand-in under each bridge combination; write spans as JSON."""
import asyncio, json, os, subprocess, sys
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
import openai
import agents
from agents import Agent, Runner, function_tool, set_trace_processors, OpenAIChatCompletionsModel, OpenAIResponsesModel

HERE = os.path.dirname(os.path.abspath(__file__))
proc = subprocess.Popen([os.environ["COSTLINE_PYTHON"], os.path.join(HERE, "agents_standin.py")], stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE, text=True)
URL = proc.stdout.readline().strip()
def standin(cmd):
    proc.stdin.write(cmd + "\n"); proc.stdin.flush()
    return json.loads(proc.stdout.readline()) if cmd == "dump" else None

SYSTEM = "You answer questions about our refund policy. " * 60
MODEL, STUDENT = "gpt-5-mini", "costline-student"

@function_tool
def lookup_order(order_id: str) -> str:
    """Look an order up."""
    return f"order {order_id}: shipped"

def usage_of(r):
    u = r.usage
    return {"requests": u.requests, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cached_tokens": u.input_tokens_details.cached_tokens if u.input_tokens_details else 0,
            "response_id": r.response_id}

async def scenarios(client):
    responses_model = OpenAIResponsesModel(MODEL, openai_client=client)
    billing = Agent(name="Billing agent", instructions="Billing. " + SYSTEM, model=responses_model)
    triage = Agent(name="Triage agent", instructions=SYSTEM, model=responses_model, tools=[lookup_order],
                   handoffs=[billing])
    out = []
    r = await Runner.run(triage, "please lookup_order 42")            # tool call, then the answer
    out.append(("tool", [usage_of(x) for x in r.raw_responses]))
    r = await Runner.run(triage, "transfer_to_billing_agent: I was charged twice")  # handoff
    out.append(("handoff", [usage_of(x) for x in r.raw_responses]))
    s = Runner.run_streamed(triage, "Stream the refund steps")
    async for _ in s.stream_events():
        pass
    out.append(("streamed", [usage_of(x) for x in s.raw_responses]))
    chat = Agent(name="Chat agent", instructions="Be brief.", model=OpenAIChatCompletionsModel(STUDENT, openai_client=client))
    r = await Runner.run(chat, "Summarise ticket 7")
    out.append(("chat", [usage_of(x) for x in r.raw_responses]))
    broken = Agent(name="Broken agent", instructions="x", model=OpenAIResponsesModel("gpt-unknown", openai_client=client))
    try:
        await Runner.run(broken, "hello")
    except openai.NotFoundError:
        out.append(("failed", []))
    return out

def instrumentors(names):
    out = []
    for n in names.split("+"):
        if n == "oi-agents":
            from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
            out.append((OpenAIAgentsInstrumentor(), {"exclusive_processor": False}))
        elif n == "ll-agents":
            from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor
            out.append((OpenAIAgentsInstrumentor(), {}))
        elif n == "ll-openai":
            from opentelemetry.instrumentation.openai import OpenAIInstrumentor
            out.append((OpenAIInstrumentor(), {}))
        elif n == "oi-openai":
            from openinference.instrumentation.openai import OpenAIInstrumentor
            out.append((OpenAIInstrumentor(), {}))
    return out

def attr(v):
    return list(v) if isinstance(v, tuple) else v

def main(names):
    exp = InMemorySpanExporter(); prov = TracerProvider(); prov.add_span_processor(SimpleSpanProcessor(exp))
    set_trace_processors([])  # nothing exported to api.openai.com
    insts = instrumentors(names)
    for i, kw in insts:
        i.instrument(tracer_provider=prov, **kw)
    standin("clear")
    client = openai.AsyncOpenAI(base_url=URL, api_key="x", max_retries=0)
    try:
        usages = asyncio.run(scenarios(client))
    finally:
        for i, _ in reversed(insts):
            i.uninstrument()
        set_trace_processors([])
    served = standin("dump")
    spans = []
    for s in exp.get_finished_spans():
        attrs = {k: attr(v) for k, v in s.attributes.items() if len(str(v)) <= 200}
        dropped = sorted(k for k, v in s.attributes.items() if len(str(v)) > 200)
        spans.append({"scope": s.instrumentation_scope.name, "name": s.name, "trace": f"{s.context.trace_id:032x}",
                      "span": f"{s.context.span_id:016x}", "parent": f"{s.parent.span_id:016x}" if s.parent else None,
                      "kind": s.kind.name, "start": s.start_time, "end": s.end_time, "status": s.status.status_code.name,
                      "events": [e.name for e in s.events], "attributes": attrs, "dropped_long": dropped})
    return {"names": names, "usages": usages, "served": served, "spans": spans}

if __name__ == "__main__":
    results = [main(n) for n in sys.argv[2:]]
    json.dump(results, open(sys.argv[1], "w"), indent=1)
    proc.stdin.close(); proc.wait()
