# Stand-in for jaegertracing/jaeger (v2): the same program, built from the Go
# module proxy (github.com/jaegertracing/jaeger cmd/jaeger), without the UI's
# JavaScript bundle (no npm build here: the query API on :16686 serves).
# No --config: the built-in all-in-one (OTLP on 4317/4318, memory store, query on 16686).
FROM debian:bookworm-slim
COPY jaeger /cmd/jaeger/jaeger-linux
COPY sampling-strategies.json /cmd/jaeger/sampling-strategies.json
WORKDIR /
# As in the official image: its built-in config listens on ${JAEGER_LISTEN_HOST}, else localhost only.
ENV JAEGER_LISTEN_HOST=0.0.0.0
USER 10001
EXPOSE 4317 4318 16686
ENTRYPOINT ["/cmd/jaeger/jaeger-linux"]
