#!/usr/bin/env bash
# Runs a real single-node Apache Kafka broker (KRaft, broker+controller) on loopback,
# from Maven Central's jars: no tarball, no Docker.
#
#   scripts/kafka.sh start   # idempotent; returns once an AdminClient metadata call answers
#   scripts/kafka.sh stop    # stops it (SIGTERM, then SIGKILL after 30 s)
#   scripts/kafka.sh status
#   scripts/kafka.sh jars    # fetches the jars if needed and prints their folder
#
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093),
# FACESTREAM_RUN_DIR (<repo>/.run: logs, data, pid), FACESTREAM_CACHE (~/.cache/facestream:
# the downloaded jars, shared by every checkout on this machine), PYTHON (<repo>/.venv/bin/python).
#
# Optional authenticated listener: KAFKA_SASL_SSL_PORT adds SASL_SSL (TLS + SASL/PLAIN or
# SCRAM-SHA-512) on that port, with KAFKA_TLS_KEYSTORE (a PEM file: certificate chain, then
# an unencrypted PKCS#8 private key) and one PLAIN user, KAFKA_SASL_USERNAME /
# KAFKA_SASL_PASSWORD. SCRAM users are added at run time (AdminClient
# alter_user_scram_credentials). The PLAINTEXT listener stays on loopback for the
# broker's own use and the readiness check.
#
# KAFKA_AUTHORIZER=1 (with KAFKA_SASL_SSL_PORT) turns on ACLs: KRaft's StandardAuthorizer,
# nothing allowed without an ACL, and two super users: the PLAIN user above (the
# administrator, who applies ACLs: python -m common.kafka_access apply) and ANONYMOUS,
# the principal of the loopback PLAINTEXT and controller listeners (the broker itself).
set -euo pipefail

cmd=${1:-start}
root=$(cd "$(dirname "$0")/.." && pwd)
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-9093}
sasl_port=${KAFKA_SASL_SSL_PORT:-}
run_dir=${FACESTREAM_RUN_DIR:-$root/.run}
cache=${FACESTREAM_CACHE:-$HOME/.cache/facestream}
python=${PYTHON:-$root/.venv/bin/python}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$root/scripts/kafka/pom.xml")
# Keyed by the pom too: a new dependency there means a new classpath.
libs=$cache/kafka-$version-$(md5sum "$root/scripts/kafka/pom.xml" | cut -c1-8)/libs
dir=$run_dir/kafka-$port
pidfile=$dir/kafka.pid

log() { echo "[kafka:$port] $*" >&2; }

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

ready() {
  "$python" - "$port" <<'PY' >/dev/null 2>&1
import sys
from confluent_kafka.admin import AdminClient
AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"}).list_topics(timeout=3)
PY
}

fetch_jars() {
  [ -f "$libs/.complete" ] && return 0
  command -v mvn >/dev/null || { log "Maven is needed to fetch Kafka's jars (apt-get install maven)"; exit 1; }
  command -v java >/dev/null || { log "Java 17+ is needed to run Kafka (apt-get install openjdk-17-jre-headless)"; exit 1; }
  log "fetching Apache Kafka $version and its classpath from Maven Central into $libs"
  rm -rf "$libs"; mkdir -p "$libs"
  mvn -q -B -f "$root/scripts/kafka/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs"
  touch "$libs/.complete"
}

start() {
  if running; then
    if ready; then log "already running (pid $(cat "$pidfile"))"; return 0; fi
  else
    fetch_jars
    mkdir -p "$dir/data"
    cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport${sasl_port:+,SASL_SSL://127.0.0.1:$sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:$port${sasl_port:+,SASL_SSL://127.0.0.1:$sasl_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
message.max.bytes=16777216
replica.fetch.max.bytes=16777216
PROPS
    if [ -n "$sasl_port" ]; then
      : "${KAFKA_TLS_KEYSTORE:?KAFKA_SASL_SSL_PORT needs KAFKA_TLS_KEYSTORE}"
      : "${KAFKA_SASL_USERNAME:?KAFKA_SASL_SSL_PORT needs KAFKA_SASL_USERNAME}"
      : "${KAFKA_SASL_PASSWORD:?KAFKA_SASL_SSL_PORT needs KAFKA_SASL_PASSWORD}"
      cat >> "$dir/server.properties" <<PROPS
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_${KAFKA_SASL_USERNAME}="${KAFKA_SASL_PASSWORD}";
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PEM
listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_TLS_KEYSTORE
PROPS
    fi
    if [ "${KAFKA_AUTHORIZER:-0}" = 1 ]; then
      [ -n "$sasl_port" ] || { log "KAFKA_AUTHORIZER=1 needs KAFKA_SASL_SSL_PORT (a listener with users)"; exit 2; }
      cat >> "$dir/server.properties" <<PROPS
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:ANONYMOUS;User:${KAFKA_SASL_USERNAME}
PROPS
    fi
    cat > "$dir/log4j2.properties" <<'L4J'
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
L4J
    local cp="$libs/*"
    if [ ! -f "$dir/data/meta.properties" ]; then
      local id
      id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
      java -Dlog4j2.configurationFile="$dir/log4j2.properties" -Dkafka.logs.dir="$dir" \
        -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >"$dir/format.log" 2>&1
    fi
    log "starting (logs: $dir/server.log)"
    nohup java -Xms256m -Xmx${KAFKA_HEAP:-512m} -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      -Dkafka.logs.dir="$dir" -cp "$cp" kafka.Kafka "$dir/server.properties" \
      >"$dir/stdout.log" 2>&1 &
    echo $! > "$pidfile"
  fi
  for _ in $(seq 1 120); do
    if ready; then log "ready on 127.0.0.1:$port"; return 0; fi
    running || { log "exited during start-up; see $dir/stdout.log and $dir/server.log"; tail -n 20 "$dir/stdout.log" >&2; exit 1; }
    sleep 1
  done
  log "did not answer within 120 s"; exit 1
}

stop() {
  if ! running; then log "not running"; rm -f "$pidfile"; return 0; fi
  local pid; pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; log "stopped"; return 0; }; sleep 1; done
  kill -9 "$pid" 2>/dev/null || true; rm -f "$pidfile"; log "killed after 30 s"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  jars) fetch_jars >&2; echo "$libs" ;; # the classpath's folder (deploy/local/kafka copies it)
  status) if running && ready; then log "running"; else log "not running"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status|jars" >&2; exit 2 ;;
esac
