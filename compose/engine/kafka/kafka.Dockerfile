# Stand-in for apache/kafka (no image registry is reachable where
# `make compose-test` runs): the same layout as the official image
# (/opt/kafka/{bin,libs,config}, /etc/kafka/docker, /var/lib/kafka/data, user
# appuser) and the same entrypoint class, kafka.docker.KafkaDockerWrapper, which
# turns KAFKA_* variables into server.properties and formats the storage.
# Built by compose/engine/engine.sh from the Maven jars (ops/stack/kafka-pom.xml).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --home-dir /home/appuser --shell /bin/bash appuser \
 && mkdir -p /opt/kafka/config /var/lib/kafka/data /etc/kafka/secrets /usr/logs /mnt/shared/config
COPY libs /opt/kafka/libs
COPY bin /opt/kafka/bin
COPY docker /etc/kafka/docker
RUN chmod +x /opt/kafka/bin/* /etc/kafka/docker/run \
 && chown -R appuser:appuser /usr/logs /opt/kafka /mnt/shared/config \
 && chown -R appuser:root /var/lib/kafka /etc/kafka \
 && chmod -R ug+w /etc/kafka /var/lib/kafka
USER appuser
EXPOSE 9092
VOLUME ["/etc/kafka/secrets", "/var/lib/kafka/data", "/mnt/shared/config"]
CMD ["/etc/kafka/docker/run"]
