# Stand-in for otel/opentelemetry-collector-contrib: the collector this
# repository builds with ocb (`make collector`: otlp receiver, batch and
# memory_limiter processors, otlp and debug exporters, health_check), in the
# official image's paths. compose/otel-collector.yaml uses only those components.
FROM debian:bookworm-slim
COPY otelcol-contrib /otelcol-contrib
USER 10001
EXPOSE 4317 4318 13133
ENTRYPOINT ["/otelcol-contrib"]
CMD ["--config", "/etc/otelcol-contrib/config.yaml"]
