#!/usr/bin/env bash
# Minimal kafka-run-class.sh: the jars under /opt/kafka/libs, log4j from /opt/kafka/config.
log4j=${KAFKA_LOG4J_OPTS:--Dlog4j.configuration=file:/opt/kafka/config/tools-log4j.properties}
# shellcheck disable=SC2086  # the *_OPTS variables are word lists, as in Kafka's own script
exec java ${KAFKA_HEAP_OPTS:-} ${KAFKA_JVM_PERFORMANCE_OPTS:--XX:+UseG1GC} $log4j ${KAFKA_OPTS:-} \
  -cp '/opt/kafka/libs/*' "$@"
