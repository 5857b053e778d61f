"""Apps that call Claude through Amazon Bedrock switch to costline by endpoint: the gateway speaks Bedrock Runtime's
InvokeModel (streamed too) to the real ``anthropic.AnthropicBedrock`` client and to boto3's ``bedrock-runtime``
client, a costline key sent as the Bedrock API key (bearer); routing, the cache and telemetry are the Messages
API's, the shapes (errors, token-count headers, event-stream chunks) Bedrock's."""

from __future__ import annotations

import json
import ssl
import subprocess

import anthropic
import pytest
from gateways import DictCache, routed_gateway

from costline.serving.gateway.auth import KeyStore
from costline.serving.settings import StandInConfig
from costline.sim.standin import StandInServer

boto3 = pytest.importorskip("boto3")
from botocore.config import Config as BotoConfig  # noqa: E402
from botocore.exceptions import ClientError, EventStreamError  # noqa: E402

MODEL = "us.anthropic.claude-haiku-4-5-20251001-v1:0"  # what the app asks for: the router decides
QUESTION = "How do I reset my password?"


@pytest.fixture(scope="module")
def standin():
    server = StandInServer(StandInConfig(latency_scale=0.0), port=0)
    server.start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: boto3 sends a bearer token to an https endpoint only."""
    folder = tmp_path_factory.mktemp("bedrock-front-tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture
def served(standin, tmp_path, monkeypatch, certificate):
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    keys = tmp_path / "keys.json"
    _, secret = KeyStore(keys).add("acme")
    cache = DictCache()
    cert, key = certificate
    with routed_gateway(standin, keys, cache=cache, tls_cert_file=cert, tls_key_file=key, drain_timeout_s=2) as gw:
        assert gw.url.startswith("https://")
        gw.ca = cert
        try:
            yield gw, secret, cache
        finally:
            standin.clear_errors()  # an injected failure a test did not use stays with that test


def bedrock_sdk(gw, key: str):
    return anthropic.AnthropicBedrock(base_url=gw.url, api_key=key, aws_region="us-east-1", max_retries=0,
                                      http_client=anthropic.DefaultHttpxClient(
                                          verify=ssl.create_default_context(cafile=str(gw.ca))))


@pytest.fixture
def boto_client(monkeypatch):
    """boto3's bedrock-runtime client at a gateway: a bearer token (the costline key) or, without one, SigV4 with
    AWS keys; closed after the test (the gateway's drain waits for open connections)."""
    made = []

    def make(gw, *, key: str | None):
        made.append(_boto(gw, monkeypatch, key=key))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _boto(gw, monkeypatch, *, key: str | None):
    if key is not None:
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", key)
    else:
        monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=gw.url, verify=str(gw.ca),
                        config=BotoConfig(retries={"max_attempts": 1}))


def test_anthropic_bedrock_is_answered_by_the_routed_tier(served, standin):
    gw, key, _ = served
    before = len(standin.log.entries("anthropic"))
    with bedrock_sdk(gw, key) as client:  # closed: the gateway's drain waits for open connections
        raw = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": QUESTION}])
    msg = raw.parse()
    assert msg.content[0].text and raw.headers["x-costline-tier"] == "budget"
    seen = standin.log.entries("anthropic")[before:]  # the gateway's tier call, on Anthropic's API
    assert len(seen) == 1 and seen[0].model == "claude-haiku-4-5"
    assert int(raw.headers["x-amzn-bedrock-output-token-count"]) == msg.usage.output_tokens == seen[0].output_tokens


def test_anthropic_bedrock_streams_through_invoke_with_response_stream(served):
    gw, key, _ = served
    with bedrock_sdk(gw, key) as client, client.messages.stream(
            model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Explain refunds briefly"}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert pieces and "".join(pieces) == final.content[0].text and final.usage.output_tokens > 0


def test_boto3_invoke_model_with_a_bearer_key_and_its_cache_hit(served, boto_client):
    gw, key, cache = served
    client = boto_client(gw, key=key)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                       "messages": [{"role": "user", "content": QUESTION}]})
    first = client.invoke_model(modelId=MODEL, body=body, contentType="application/json", accept="application/json")
    answer = json.loads(first["body"].read())
    assert answer["content"][0]["text"] and answer["usage"]["output_tokens"] > 0
    headers = first["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-costline-cache-hit"] == "false"
    again = client.invoke_model(modelId=MODEL, body=body, contentType="application/json", accept="application/json")
    assert json.loads(again["body"].read())["content"][0]["text"] == answer["content"][0]["text"]
    assert again["ResponseMetadata"]["HTTPHeaders"]["x-costline-cache-hit"] == "true"  # the app's repeat, cached


def test_boto3_invoke_model_with_response_stream_reads_every_event(served, boto_client):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                       "messages": [{"role": "user", "content": "Explain invoices briefly"}]})
    out = client.invoke_model_with_response_stream(modelId=MODEL, body=body, contentType="application/json")
    events = [json.loads(e["chunk"]["bytes"]) for e in out["body"]]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    out_tokens = next(e for e in events if e["type"] == "message_delta")["usage"]["output_tokens"]
    assert text and out_tokens > 0
    metrics = events[-1]["amazon-bedrock-invocationMetrics"]  # what LangChain's Bedrock models read
    assert metrics["outputTokenCount"] == out_tokens and metrics["invocationLatency"] >= metrics["firstByteLatency"] >= 0


@pytest.mark.parametrize("body, says", [
    ({"max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}, "anthropic_version is required"),
    ({"anthropic_version": "bedrock-2023-05-31", "model": "x", "max_tokens": 10,
      "messages": [{"role": "user", "content": "hi"}]}, "extraneous key [model]"),
    ({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": []},
     "messages: at least one message is required"),
])
def test_a_malformed_body_is_bedrocks_validation_exception(served, boto_client, body, says):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    with pytest.raises(ClientError) as err:
        client.invoke_model(modelId=MODEL, body=json.dumps(body), contentType="application/json")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert says in err.value.response["Error"]["Message"]


def test_aws_credentials_are_no_costline_key_and_the_answer_says_which_to_send(served, boto_client):
    gw, _, _ = served
    client = boto_client(gw, key=None)  # SigV4-signed
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10,
                       "messages": [{"role": "user", "content": QUESTION}]})
    with pytest.raises(ClientError) as err:
        client.invoke_model(modelId=MODEL, body=body, contentType="application/json")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "AWS_BEARER_TOKEN_BEDROCK" in err.value.response["Error"]["Message"]


def test_boto3_without_a_content_type_is_read_as_json(served, boto_client):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": QUESTION}]})
    out = client.invoke_model(modelId=MODEL, body=body)  # as AWS's own Claude examples call it: no contentType
    assert json.loads(out["body"].read())["content"][0]["text"] and out["contentType"] == "application/json"


def test_an_inference_profile_arn_is_a_model_id(served):
    gw, key, _ = served
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"
    with bedrock_sdk(gw, key) as client:
        msg = client.messages.create(model=arn, max_tokens=50, messages=[{"role": "user", "content": QUESTION}])
    assert msg.content[0].text


def test_a_tier_failing_mid_stream_ends_the_event_stream_with_bedrocks_exception(served, boto_client, standin):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    standin.inject_stream_errors(after_deltas=2)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 200,
                       "messages": [{"role": "user", "content": "Explain the refund rules in detail"}]})
    out = client.invoke_model_with_response_stream(modelId=MODEL, body=body)
    got = []
    with pytest.raises(EventStreamError) as err:
        for event in out["body"]:
            got.append(json.loads(event["chunk"]["bytes"]))
    assert err.value.response["Error"]["Code"] == "serviceUnavailableException"
    assert any(e["type"] == "content_block_delta" for e in got)  # what was sent before the failure stands


def test_a_guardrail_is_refused_rather_than_silently_not_applied(served, boto_client):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    body = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 50,
                       "messages": [{"role": "user", "content": QUESTION}]})
    with pytest.raises(ClientError) as err:
        client.invoke_model(modelId=MODEL, body=body, guardrailIdentifier="gr-pii", guardrailVersion="1")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "guardrails" in err.value.response["Error"]["Message"]


def test_one_question_is_one_cache_entry_whichever_api_asked(served):
    gw, key, cache = served
    asked = {"max_tokens": 200, "messages": [{"role": "user", "content": QUESTION}]}  # whole answers are cached
    with bedrock_sdk(gw, key) as bedrock:
        bedrock.messages.create(model=MODEL, **asked)  # stored under Bedrock's spelling of Haiku
    direct = anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0,
                                 http_client=anthropic.DefaultHttpxClient(
                                     verify=ssl.create_default_context(cafile=str(gw.ca))))
    with direct:
        raw = direct.messages.with_raw_response.create(model="claude-haiku-4-5", **asked)
    assert raw.headers["x-costline-cache-hit"] == "true"
    assert len(cache.entries) == 1


# -- the Converse API ---------------------------------------------------------------------------------------------
def test_boto3_converse_is_answered_in_converses_shape(served, boto_client, standin):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    out = client.converse(modelId=MODEL, system=[{"text": "You are terse."}],
                          messages=[{"role": "user", "content": [{"text": QUESTION}]}],
                          inferenceConfig={"maxTokens": 120, "temperature": 0.2})
    text = out["output"]["message"]["content"][0]["text"]
    usage = out["usage"]
    assert text and out["stopReason"] in ("end_turn", "max_tokens") and out["output"]["message"]["role"] == "assistant"
    assert usage["outputTokens"] > 0 and usage["totalTokens"] == (usage["inputTokens"] + usage["outputTokens"]
                                                                   + usage["cacheReadInputTokens"]
                                                                   + usage["cacheWriteInputTokens"])
    assert out["metrics"]["latencyMs"] >= 0
    seen = standin.log.entries("anthropic")[-1]  # the tier was asked with the system prompt and the sampling
    assert seen.output_tokens == usage["outputTokens"]


def test_boto3_converse_stream_reads_converses_events(served, boto_client):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    out = client.converse_stream(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "Explain refunds"}]}],
                                 inferenceConfig={"maxTokens": 200})
    events = list(out["stream"])
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart" and kinds[-2:] == ["messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text and events[-1]["metadata"]["usage"]["outputTokens"] > 0


def test_converse_tool_use_round_trip(served, boto_client):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    tools = {"tools": [{"toolSpec": {"name": "get_order", "description": "Look an order up",
                                     "inputSchema": {"json": {"type": "object",
                                                              "properties": {"order_id": {"type": "string"}},
                                                              "required": ["order_id"]}}}}],
             "toolChoice": {"tool": {"name": "get_order"}}}
    first = client.converse(modelId=MODEL, toolConfig=tools,
                            messages=[{"role": "user", "content": [{"text": "Where is order 1234?"}]}])
    call = next(b["toolUse"] for b in first["output"]["message"]["content"] if "toolUse" in b)
    assert first["stopReason"] == "tool_use" and call["name"] == "get_order"
    second = client.converse(modelId=MODEL, toolConfig={"tools": tools["tools"]}, messages=[
        {"role": "user", "content": [{"text": "Where is order 1234?"}]},
        first["output"]["message"],
        {"role": "user", "content": [{"toolResult": {"toolUseId": call["toolUseId"],
                                                     "content": [{"json": {"status": "shipped"}}]}}]}])
    assert second["output"]["message"]["content"][0]["text"]


def test_a_one_hour_cache_point_reaches_the_tier_as_a_one_hour_cache_control(served, boto_client, standin,
                                                                            monkeypatch):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    asked = []  # the Messages bodies that reached the tier (the stand-in's log keeps no content blocks)
    answer = standin._message

    def recorded(body, **kwargs):
        asked.append(body)
        return answer(body, **kwargs)

    monkeypatch.setattr(standin, "_message", recorded)
    one_hour = {"cachePoint": {"type": "default", "ttl": "1h"}}
    out = client.converse(modelId=MODEL, system=[{"text": "You answer questions about refunds."}, one_hour],
                          messages=[{"role": "user", "content": [{"text": "Our refund policy: 30 days."}, one_hour,
                                                                 {"text": "Can I return a scratched lamp?"}]}],
                          inferenceConfig={"maxTokens": 60})
    assert out["output"]["message"]["content"][0]["text"]
    assert [(b["system"], b["messages"]) for b in asked] == [(
        [{"type": "text", "text": "You answer questions about refunds.",
          "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        [{"role": "user", "content": [{"type": "text", "text": "Our refund policy: 30 days.",
                                       "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                                      {"type": "text", "text": "Can I return a scratched lamp?"}]}])]


@pytest.mark.parametrize("request_, says", [
    ({"messages": [{"role": "user", "content": [{"reasoningContent": {"reasoningText": {"text": "..."}}}]}]},
     "'reasoningContent' blocks"),
    ({"messages": [{"role": "user", "content": [{"text": "hi"}]}], "guardrailConfig": {"guardrailIdentifier": "g",
                                                                                       "guardrailVersion": "1"}},
     "guardrailConfig"),
    ({"messages": [{"role": "user", "content": [{"cachePoint": {"type": "default"}}]}]}, "cachePoint follows"),
    ({"messages": [{"role": "user", "content": [{"text": "hi"}, {"cachePoint": {"type": "default", "ttl": "2h"}}]}]},
     "messages[0].content[1].cachePoint.ttl: one of 5m, 1h"),
])
def test_converse_refuses_what_it_cannot_carry(served, boto_client, request_, says):
    gw, key, _ = served
    client = boto_client(gw, key=key)
    with pytest.raises(ClientError) as err:
        client.converse(modelId=MODEL, **request_)
    assert err.value.response["Error"]["Code"] == "ValidationException" and says in err.value.response["Error"]["Message"]
