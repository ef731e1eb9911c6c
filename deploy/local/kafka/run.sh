#!/bin/sh
# Configures and starts a KRaft broker the way apache/kafka's image does: every KAFKA_X_Y
# variable becomes the property x.y (KAFKA_HEAP_OPTS and CLUSTER_ID excepted); the log
# directory is formatted with CLUSTER_ID on the first start.
set -eu
props=/tmp/server.properties
: > "$props"
env | grep '^KAFKA_' | grep -v -E '^KAFKA_(HEAP_OPTS|OPTS|JVM_PERFORMANCE_OPTS)=' | while IFS='=' read -r name value; do
  key=$(echo "${name#KAFKA_}" | tr 'A-Z' 'a-z' | sed -e 's/___/-/g' -e 's/__/@/g' -e 's/_/./g' -e 's/@/_/g')
  echo "$key=$value" >> "$props"
done
cat > /tmp/log4j2.properties <<'L4J'
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
L4J
cp="/opt/kafka/libs/*"
java -Xmx256m -Dlog4j2.configurationFile=/tmp/log4j2.properties -cp "$cp" kafka.tools.StorageTool \
  format --ignore-formatted -t "${CLUSTER_ID:?set CLUSTER_ID (a base64 UUID)}" -c "$props"
# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several options
exec java ${KAFKA_HEAP_OPTS:--Xmx1g -Xms1g} -server -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlog4j2.configurationFile=/tmp/log4j2.properties -cp "$cp" kafka.Kafka "$props"
