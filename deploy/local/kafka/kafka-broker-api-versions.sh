#!/bin/sh
# As in Apache Kafka's distribution: the compose healthcheck runs this.
exec java -Xmx128m -cp "/opt/kafka/libs/*" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
