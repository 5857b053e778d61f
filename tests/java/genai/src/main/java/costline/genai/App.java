package costline.genai;

import com.anthropic.client.AnthropicClient;
import com.anthropic.client.okhttp.AnthropicOkHttpClient;
import com.anthropic.core.http.StreamResponse;
import com.anthropic.core.opentelemetry.OpenTelemetryOptions;
import com.anthropic.errors.AnthropicServiceException;
import com.anthropic.helpers.MessageAccumulator;
import com.anthropic.models.messages.CacheControlEphemeral;
import com.anthropic.models.messages.Message;
import com.anthropic.models.messages.MessageCreateParams;
import com.anthropic.models.messages.RawMessageStreamEvent;
import com.anthropic.models.messages.TextBlockParam;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.openai.client.OpenAIClient;
import com.openai.client.okhttp.OpenAIOkHttpClient;
import com.openai.errors.OpenAIServiceException;
import com.openai.models.chat.completions.ChatCompletion;
import com.openai.models.chat.completions.ChatCompletionChunk;
import com.openai.models.chat.completions.ChatCompletionCreateParams;
import com.openai.models.chat.completions.ChatCompletionStreamOptions;
import com.openai.models.completions.CompletionUsage;
import com.openai.models.embeddings.CreateEmbeddingResponse;
import com.openai.models.embeddings.EmbeddingCreateParams;
import io.opentelemetry.api.common.AttributeKey;
import io.opentelemetry.api.common.Attributes;
import io.opentelemetry.api.trace.propagation.W3CTraceContextPropagator;
import io.opentelemetry.context.Context;
import io.opentelemetry.context.propagation.ContextPropagators;
import io.opentelemetry.exporter.otlp.http.trace.OtlpHttpSpanExporter;
import io.opentelemetry.exporter.otlp.trace.OtlpGrpcSpanExporter;
import io.opentelemetry.instrumentation.openai.v1_1.OpenAITelemetry;
import io.opentelemetry.sdk.OpenTelemetrySdk;
import io.opentelemetry.sdk.common.CompletableResultCode;
import io.opentelemetry.sdk.resources.Resource;
import io.opentelemetry.sdk.trace.ReadWriteSpan;
import io.opentelemetry.sdk.trace.ReadableSpan;
import io.opentelemetry.sdk.trace.SdkTracerProvider;
import io.opentelemetry.sdk.trace.SpanProcessor;
import io.opentelemetry.sdk.trace.data.EventData;
import io.opentelemetry.sdk.trace.data.SpanData;
import io.opentelemetry.sdk.trace.export.BatchSpanProcessor;
import io.opentelemetry.sdk.trace.export.SpanExporter;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * costline's Java test app: real SDK calls against costline's stand-in APIs, traced by the OpenTelemetry
 * Java SDK and exported over OTLP (http/protobuf or gRPC) to costline's receiver.
 *
 * <p>The calls, in this order, each in a trace of its own (no span around them):
 *
 * <ol>
 *   <li>{@code openai-retried}: a chat completion the stand-in first answers 500 (the test injects it), which
 *       the client retries once, inside the one instrumented call;
 *   <li>{@code openai-fails}: a chat completion for a model the stand-in does not serve (404, not retried);
 *   <li>{@code openai-chat}: a chat completion;
 *   <li>{@code openai-streamed}: a streamed one with {@code stream_options.include_usage}, read to the end;
 *   <li>{@code openai-embeddings}: an embeddings call;
 *   <li>{@code anthropic-fails}: a Messages call the stand-in fails with 400 (injected; not retried);
 *   <li>{@code anthropic-retried}: a short Messages call the stand-in first answers 529 (injected), retried once;
 *   <li>{@code anthropic-cached-0} / {@code -1}: a long system prompt marked {@code cache_control: ephemeral}
 *       (a cache write, then a read);
 *   <li>{@code anthropic-streamed}: the same prompt streamed and read to the end (a cache read).
 * </ol>
 *
 * <p>Both clients retry once ({@code maxRetries(1)}): what they retry (5xx, 529) is the test's injected
 * errors; a 4xx is not retried.
 *
 * <p>The OpenAI client is wrapped by OpenTelemetry's library instrumentation ({@code OpenAITelemetry}); the
 * Anthropic client emits its own spans (anthropic-java 3.x's {@code openTelemetry} option). Its last line
 * on stdout is one JSON report: each call as the SDK saw it, every span the app ended (scope, name,
 * attributes, status, events) and what the exporter got through.
 *
 * <p>Arguments: {@code --otlp URL --protocol http|grpc --anthropic URL --openai URL [--only openai|anthropic]}.
 */
public final class App {
  static final String SYSTEM = "You answer questions about our refund policy. ".repeat(60);
  static final String HAIKU = "claude-haiku-4-5";
  static final String STUDENT = "costline-student";
  static final String EMBEDDING_MODEL = "text-embedding-3-small";
  static final String UNKNOWN_MODEL = "no-such-model";

  private final List<Map<String, Object>> calls = new ArrayList<>();

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = new LinkedHashMap<>();
    for (int i = 0; i + 1 < argv.length; i += 2) {
      args.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
    }
    String otlp = required(args, "otlp");
    String protocol = args.getOrDefault("protocol", "http");
    String only = args.getOrDefault("only", "");

    Recorded recorded = new Recorded();
    Counting exporter = new Counting(exporter(protocol, otlp));
    SdkTracerProvider tracerProvider =
        SdkTracerProvider.builder()
            .setResource(Resource.getDefault().merge(Resource.create(Attributes.of(
                AttributeKey.stringKey("service.name"), "costline-java-genai"))))
            .addSpanProcessor(recorded)
            .addSpanProcessor(BatchSpanProcessor.builder(exporter)
                .setScheduleDelay(Duration.ofMillis(200)).build())
            .build();
    OpenTelemetrySdk otel =
        OpenTelemetrySdk.builder()
            .setTracerProvider(tracerProvider)
            .setPropagators(ContextPropagators.create(W3CTraceContextPropagator.getInstance()))
            .buildAndRegisterGlobal();

    App app = new App();
    String stderrNote = "";
    int code = 0;
    try {
      if (!only.equals("anthropic")) {
        app.openai(otel, required(args, "openai"));
      }
      if (!only.equals("openai")) {
        app.anthropic(tracerProvider, required(args, "anthropic"));
      }
    } catch (Exception e) { // an unexpected failure: still report, then exit 1 (never hang on OkHttp's threads)
      e.printStackTrace();
      code = 1;
    } finally {
      CompletableResultCode flushed = tracerProvider.forceFlush().join(30, TimeUnit.SECONDS);
      tracerProvider.shutdown().join(30, TimeUnit.SECONDS);
      if (!flushed.isSuccess()) {
        stderrNote = "forceFlush did not succeed";
      }
    }
    Map<String, Object> report = new LinkedHashMap<>();
    report.put("protocol", protocol);
    report.put("calls", app.calls);
    report.put("spans", recorded.spans);
    Map<String, Object> export = new LinkedHashMap<>();
    export.put("ended", recorded.spans.size());
    export.put("accepted", exporter.accepted.get());
    export.put("failures", exporter.failures);
    export.put("note", stderrNote);
    report.put("export", export);
    System.out.println(new ObjectMapper().writeValueAsString(report));
    System.out.flush();
    System.exit(code); // OkHttp's threads would keep the JVM up for a minute
  }

  static String required(Map<String, String> args, String name) {
    String v = args.get(name);
    if (v == null || v.isEmpty()) {
      throw new IllegalArgumentException("--" + name + " is required");
    }
    return v;
  }

  static SpanExporter exporter(String protocol, String endpoint) {
    switch (protocol) {
      case "http": // http/protobuf: the endpoint is the full URL, .../v1/traces
        return OtlpHttpSpanExporter.builder().setEndpoint(endpoint).setCompression("gzip")
            .setTimeout(Duration.ofSeconds(15)).build();
      case "grpc": // the endpoint is the server's http://host:port
        return OtlpGrpcSpanExporter.builder().setEndpoint(endpoint).setCompression("gzip")
            .setTimeout(Duration.ofSeconds(15)).build();
      default:
        throw new IllegalArgumentException("--protocol must be http or grpc, got " + protocol);
    }
  }

  // -- OpenAI: openai-java wrapped by opentelemetry-openai-java-1.1 ---------------------------------------
  void openai(OpenTelemetrySdk otel, String baseUrl) {
    OpenAIClient raw = OpenAIOkHttpClient.builder().baseUrl(baseUrl).apiKey("test").maxRetries(1).build();
    OpenAIClient client = OpenAITelemetry.builder(otel).build().wrap(raw);

    Map<String, Object> retried = call("openai-retried", "openai");
    ChatCompletion first = client.chat().completions().create(chat(STUDENT, "Is there a restocking fee?"));
    retried.put("failed", false);
    retried.put("responseId", first.id());
    retried.put("usage", usage(first.usage().orElse(null)));

    Map<String, Object> failed = call("openai-fails", "openai");
    try {
      client.chat().completions().create(chat(UNKNOWN_MODEL, "What is the refund window?"));
      failed.put("failed", false);
    } catch (OpenAIServiceException e) {
      failed.put("failed", true);
      failed.put("statusCode", e.statusCode());
      failed.put("error", e.getClass().getName());
    }

    Map<String, Object> chat = call("openai-chat", "openai");
    ChatCompletion completion = client.chat().completions().create(chat(STUDENT, "How do I return a damaged item?"));
    chat.put("failed", false);
    chat.put("responseId", completion.id());
    chat.put("usage", usage(completion.usage().orElse(null)));

    Map<String, Object> streamed = call("openai-streamed", "openai");
    ChatCompletionCreateParams params = chat(STUDENT, "Can I exchange a gift without a receipt?").toBuilder()
        .streamOptions(ChatCompletionStreamOptions.builder().includeUsage(true).build()).build();
    CompletionUsage[] last = new CompletionUsage[1];
    String[] id = new String[1];
    StringBuilder text = new StringBuilder();
    try (com.openai.core.http.StreamResponse<ChatCompletionChunk> s =
        client.chat().completions().createStreaming(params)) {
      s.stream().forEach(chunk -> {
        id[0] = chunk.id();
        chunk.usage().ifPresent(u -> last[0] = u);
        for (ChatCompletionChunk.Choice c : chunk.choices()) {
          c.delta().content().ifPresent(text::append);
        }
      });
    }
    streamed.put("failed", false);
    streamed.put("responseId", id[0]);
    streamed.put("usage", usage(last[0]));
    streamed.put("chars", text.length());

    Map<String, Object> emb = call("openai-embeddings", "openai");
    CreateEmbeddingResponse e = client.embeddings().create(EmbeddingCreateParams.builder()
        .model(EMBEDDING_MODEL).input("Where is my refund?").build());
    emb.put("failed", false);
    Map<String, Object> u = new LinkedHashMap<>();
    u.put("prompt_tokens", e.usage().promptTokens());
    u.put("total_tokens", e.usage().totalTokens());
    emb.put("usage", u);
    emb.put("vectors", e.data().size());
  }

  static ChatCompletionCreateParams chat(String model, String question) {
    return ChatCompletionCreateParams.builder().model(model).maxCompletionTokens(64)
        .addSystemMessage("You answer questions about our refund policy.").addUserMessage(question).build();
  }

  static Map<String, Object> usage(CompletionUsage u) {
    if (u == null) {
      return null;
    }
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("prompt_tokens", u.promptTokens());
    m.put("completion_tokens", u.completionTokens());
    m.put("cached_tokens", u.promptTokensDetails().flatMap(d -> d.cachedTokens()).orElse(null));
    return m;
  }

  // -- Anthropic: anthropic-java's own spans ------------------------------------------------------------
  void anthropic(SdkTracerProvider tracerProvider, String baseUrl) {
    AnthropicClient client = AnthropicOkHttpClient.builder().baseUrl(baseUrl).apiKey("test").maxRetries(1)
        .openTelemetry(OpenTelemetryOptions.builder().tracerProvider(tracerProvider).build()).build();

    Map<String, Object> failed = call("anthropic-fails", "anthropic");
    try {
      client.messages().create(messages("Is shipping refunded?"));
      failed.put("failed", false);
    } catch (AnthropicServiceException e) {
      failed.put("failed", true);
      failed.put("statusCode", e.statusCode());
      failed.put("error", e.getClass().getName());
    }

    Map<String, Object> retried = call("anthropic-retried", "anthropic");
    Message answer = client.messages().create(MessageCreateParams.builder().model(HAIKU).maxTokens(64)
        .addUserMessage("Is there a restocking fee?").build());
    retried.put("failed", false);
    retried.put("responseId", answer.id());
    retried.put("usage", usage(answer.usage()));

    for (int i = 0; i < 2; i++) {
      Map<String, Object> c = call("anthropic-cached-" + i, "anthropic");
      Message m = client.messages().create(messages("Question " + i + ": can I return a damaged item?"));
      c.put("failed", false);
      c.put("responseId", m.id());
      c.put("usage", usage(m.usage()));
    }

    Map<String, Object> streamed = call("anthropic-streamed", "anthropic");
    MessageAccumulator acc = MessageAccumulator.create();
    try (StreamResponse<RawMessageStreamEvent> s =
        client.messages().createStreaming(messages("Streamed: how long do refunds take?"))) {
      s.stream().forEach(acc::accumulate);
    }
    Message m = acc.message();
    streamed.put("failed", false);
    streamed.put("responseId", m.id());
    streamed.put("usage", usage(m.usage()));
  }

  static MessageCreateParams messages(String question) {
    return MessageCreateParams.builder().model(HAIKU).maxTokens(64)
        .systemOfTextBlockParams(List.of(TextBlockParam.builder().text(SYSTEM)
            .cacheControl(CacheControlEphemeral.builder().build()).build()))
        .addUserMessage(question).build();
  }

  static Map<String, Object> usage(com.anthropic.models.messages.Usage u) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("input_tokens", u.inputTokens());
    m.put("output_tokens", u.outputTokens());
    m.put("cache_read_input_tokens", u.cacheReadInputTokens().orElse(0L));
    m.put("cache_creation_input_tokens", u.cacheCreationInputTokens().orElse(0L));
    return m;
  }

  Map<String, Object> call(String name, String api) {
    Map<String, Object> c = new LinkedHashMap<>();
    c.put("name", name);
    c.put("api", api);
    calls.add(c);
    return c;
  }

  // -- what the app ended and what got out ----------------------------------------------------------------
  /** Every span the app ends, as a plain map, for the report. */
  static final class Recorded implements SpanProcessor {
    final List<Map<String, Object>> spans = Collections.synchronizedList(new ArrayList<>());

    @Override
    public void onStart(Context parentContext, ReadWriteSpan span) {}

    @Override
    public boolean isStartRequired() {
      return false;
    }

    @Override
    public void onEnd(ReadableSpan span) {
      SpanData d = span.toSpanData();
      Map<String, Object> m = new LinkedHashMap<>();
      m.put("scope", d.getInstrumentationScopeInfo().getName());
      m.put("scopeVersion", d.getInstrumentationScopeInfo().getVersion());
      m.put("name", d.getName());
      m.put("kind", d.getKind().name());
      m.put("traceId", d.getTraceId());
      m.put("parentSpanId", d.getParentSpanId());
      m.put("status", d.getStatus().getStatusCode().name());
      m.put("attributes", attributes(d.getAttributes()));
      List<Map<String, Object>> events = new ArrayList<>();
      for (EventData e : d.getEvents()) {
        Map<String, Object> em = new LinkedHashMap<>();
        em.put("name", e.getName());
        em.put("attributes", attributes(e.getAttributes()));
        events.add(em);
      }
      m.put("events", events);
      spans.add(m);
    }

    @Override
    public boolean isEndRequired() {
      return true;
    }

    static Map<String, Object> attributes(Attributes attributes) {
      Map<String, Object> out = new TreeMap<>();
      attributes.forEach((k, v) -> {
        // stack traces are long and say nothing the test reads
        if (!k.getKey().equals("exception.stacktrace")) {
          out.put(k.getKey(), v);
        }
      });
      return out;
    }
  }

  /** The OTLP exporter, counting the spans each export got through and the exports that failed. */
  static final class Counting implements SpanExporter {
    final SpanExporter delegate;
    final AtomicInteger accepted = new AtomicInteger();
    final List<String> failures = Collections.synchronizedList(new ArrayList<>());

    Counting(SpanExporter delegate) {
      this.delegate = delegate;
    }

    @Override
    public CompletableResultCode export(Collection<SpanData> spans) {
      int n = spans.size();
      CompletableResultCode result = delegate.export(spans);
      result.whenComplete(() -> {
        if (result.isSuccess()) {
          accepted.addAndGet(n);
        } else {
          Throwable t = result.getFailureThrowable();
          failures.add(n + " spans: " + (t == null ? "failed" : t.toString()));
        }
      });
      return result;
    }

    @Override
    public CompletableResultCode flush() {
      return delegate.flush();
    }

    @Override
    public CompletableResultCode shutdown() {
      return delegate.shutdown();
    }
  }
}
