package costline.springai;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.opentelemetry.api.common.Attributes;
import io.opentelemetry.context.Context;
import io.opentelemetry.sdk.trace.ReadWriteSpan;
import io.opentelemetry.sdk.trace.ReadableSpan;
import io.opentelemetry.sdk.trace.SpanProcessor;
import io.opentelemetry.sdk.trace.data.EventData;
import io.opentelemetry.sdk.trace.data.SpanData;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.springframework.ai.anthropic.AnthropicCacheOptions;
import org.springframework.ai.anthropic.AnthropicCacheStrategy;
import org.springframework.ai.anthropic.AnthropicChatOptions;
import org.springframework.ai.chat.messages.SystemMessage;
import org.springframework.ai.chat.messages.UserMessage;
import org.springframework.ai.chat.metadata.Usage;
import org.springframework.ai.chat.model.ChatModel;
import org.springframework.ai.chat.model.ChatResponse;
import org.springframework.ai.chat.prompt.Prompt;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.micrometer.tracing.opentelemetry.autoconfigure.SdkTracerProviderBuilderCustomizer;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;

/**
 * costline's Spring AI test app: Spring AI's Anthropic chat model (Spring AI 2.x, on the Anthropic Java SDK),
 * its calls observed by Micrometer and exported as spans by Spring Boot's OpenTelemetry starter over OTLP.
 *
 * <p>The calls, in this order, each in a trace of its own: {@code springai-fails} (the stand-in answers 400,
 * injected by the test), {@code springai-cached-0} / {@code -1} (a long system prompt cached with Spring
 * AI's {@code SYSTEM_ONLY} cache strategy: a cache write, then a read), {@code springai-streamed} (the same
 * prompt streamed to the end: a cache read). The last line on stdout is a JSON report: each call as Spring
 * AI saw it and every span the app ended.
 *
 * <p>Configured by Spring properties on the command line ({@code --spring.ai.anthropic.base-url=...},
 * {@code --management.opentelemetry.tracing.export.otlp.endpoint=...}, ...: see tests/test_ingest_java.py).
 */
@SpringBootApplication
public class App {
  static final String SYSTEM = "You answer questions about our refund policy. ".repeat(60);

  public static void main(String[] args) throws Exception {
    ConfigurableApplicationContext ctx = SpringApplication.run(App.class, args);
    Map<String, Object> report = new LinkedHashMap<>();
    int code = 0;
    try {
      report.put("calls", calls(ctx.getBean(ChatModel.class)));
    } catch (Exception e) {
      e.printStackTrace();
      code = 1;
    }
    Recorded recorded = ctx.getBean(Recorded.class);
    // A streamed call's observation stops on a Reactor thread after block() has returned: closing before
    // its spans have ended would drop them from the export (but not from the report). Wait for them.
    recorded.awaitEnded(10_000);
    ctx.close(); // shuts the tracer provider down: its batch processor exports what is left
    report.put("spans", recorded.spans);
    System.out.println(new ObjectMapper().writeValueAsString(report));
    System.out.flush();
    System.exit(code);
  }

  static List<Map<String, Object>> calls(ChatModel model) {
    List<Map<String, Object>> calls = new ArrayList<>();
    Map<String, Object> failed = call(calls, "springai-fails");
    try {
      model.call(new Prompt("Is shipping refunded?"));
      failed.put("failed", false);
    } catch (RuntimeException e) {
      failed.put("failed", true);
      failed.put("error", e.getClass().getName());
    }
    for (int i = 0; i < 2; i++) {
      Map<String, Object> c = call(calls, "springai-cached-" + i);
      ChatResponse r = model.call(cached("Question " + i + ": can I return a damaged item?"));
      c.put("failed", false);
      c.put("responseId", r.getMetadata().getId());
      c.put("usage", usage(r.getMetadata().getUsage()));
    }
    Map<String, Object> streamed = call(calls, "springai-streamed");
    List<ChatResponse> chunks = model.stream(cached("Streamed: how long do refunds take?")).collectList().block();
    ChatResponse last = chunks.get(chunks.size() - 1);
    streamed.put("failed", false);
    streamed.put("responseId", last.getMetadata().getId());
    streamed.put("usage", usage(last.getMetadata().getUsage()));
    streamed.put("chunks", chunks.size());
    return calls;
  }

  static Prompt cached(String question) {
    return new Prompt(List.of(new SystemMessage(SYSTEM), new UserMessage(question)),
        AnthropicChatOptions.builder()
            .cacheOptions(AnthropicCacheOptions.builder().strategy(AnthropicCacheStrategy.SYSTEM_ONLY).build())
            .build());
  }

  static Map<String, Object> call(List<Map<String, Object>> calls, String name) {
    Map<String, Object> c = new LinkedHashMap<>();
    c.put("name", name);
    c.put("api", "anthropic");
    calls.add(c);
    return c;
  }

  static Map<String, Object> usage(Usage u) {
    Map<String, Object> m = new LinkedHashMap<>();
    m.put("prompt_tokens", u.getPromptTokens());
    m.put("completion_tokens", u.getCompletionTokens());
    m.put("cache_read_input_tokens", u.getCacheReadInputTokens());
    m.put("cache_creation_input_tokens", u.getCacheWriteInputTokens());
    m.put("native", String.valueOf(u.getNativeUsage()));
    return m;
  }

  /** Every span the app ends, for the report. */
  @Bean
  Recorded recorded() {
    return new Recorded();
  }

  /**
   * Adds {@link Recorded} after Spring Boot's batch processor. Spring Boot adds SpanProcessor beans first and
   * customizers after, and a tracer provider calls its processors' onEnd in the order added. As a bean of its
   * own, Recorded came first: a streamed span's onEnd on a Reactor thread woke main(), which closed the tracer
   * provider before the batch processor's onEnd had queued that span (reported, never exported).
   */
  @Bean
  SdkTracerProviderBuilderCustomizer recordedLast(Recorded recorded) {
    return builder -> builder.addSpanProcessor(recorded.processor);
  }

  /** Not a SpanProcessor bean itself (Spring Boot would add it first): see {@link #recordedLast}. */
  static final class Recorded {
    final List<Map<String, Object>> spans = Collections.synchronizedList(new ArrayList<>());
    private int open;
    final SpanProcessor processor = new SpanProcessor() {
      @Override
      public void onStart(Context parentContext, ReadWriteSpan span) {
        started();
      }

      @Override
      public boolean isStartRequired() {
        return true;
      }

      @Override
      public void onEnd(ReadableSpan span) {
        ended(span);
      }

      @Override
      public boolean isEndRequired() {
        return true;
      }
    };

    synchronized void started() {
      open++;
    }

    /** Until every span started has ended (or {@code timeoutMs} passed). */
    synchronized void awaitEnded(long timeoutMs) throws InterruptedException {
      long deadline = System.currentTimeMillis() + timeoutMs;
      while (open > 0 && System.currentTimeMillis() < deadline) {
        wait(Math.max(1, deadline - System.currentTimeMillis()));
      }
    }

    void ended(ReadableSpan span) {
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
      synchronized (this) {
        open--;
        notifyAll();
      }
    }

    static Map<String, Object> attributes(Attributes attributes) {
      Map<String, Object> out = new TreeMap<>();
      attributes.forEach((k, v) -> {
        if (!k.getKey().equals("exception.stacktrace")) {
          out.put(k.getKey(), v);
        }
      });
      return out;
    }
  }
}
