#!/usr/bin/env bash
# The local stack without Docker: Apache Kafka (KRaft, from Maven Central's jars),
# Redis 7, PostgreSQL and Mailpit, each on loopback at a non-default port.
#
#   scripts/stack.sh up       install what is missing, start what is not running, wait
#   scripts/stack.sh down     stop exactly the processes this script started, by pid
#   scripts/stack.sh status   say what runs, with pids and endpoints
#   scripts/stack.sh env      print the endpoints as shell exports
#   scripts/stack.sh logs     print the tail of each server's log
#
# Settings (environment, with defaults):
#   PROJECTOR_CACHE_DIR  downloads: Kafka's jars, Mailpit  ($HOME/.cache/projector)
#   PROJECTOR_STATE_DIR  data, logs, pids, env file        (/tmp/projector-stack-UID)
#   KAFKA_VERSION 4.1.1  KAFKA_PORT 19092  KAFKA_CONTROLLER_PORT 19093  KAFKA_HEAP 512m
#   REDIS_PORT 16379  PG_PORT 15432  SMTP_PORT 11025  MAILPIT_HTTP_PORT 18025
#   MAILPIT_VERSION v1.33.1  PG_USER_OS projector-pg (the OS user PostgreSQL runs as when root)
#   PROJECTOR_NO_BROWSER=1   skip installing Chromium (used by the status page's test)
#
# `up` is idempotent: a server already running under this state folder is left alone.
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${PROJECTOR_CACHE_DIR:-$HOME/.cache/projector}
STATE_DIR=${PROJECTOR_STATE_DIR:-/tmp/projector-stack-$(id -u)}
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-19093}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
REDIS_PORT=${REDIS_PORT:-16379}
PG_PORT=${PG_PORT:-15432}
SMTP_PORT=${SMTP_PORT:-11025}
MAILPIT_HTTP_PORT=${MAILPIT_HTTP_PORT:-18025}
MAILPIT_VERSION=${MAILPIT_VERSION:-v1.33.1}
PG_USER_OS=${PG_USER_OS:-projector-pg}
# Kafka 4.1 depends on slf4j-api 1.7, so its log4j2 binding is log4j-slf4j-impl (not -slf4j2-).
LOG4J_VERSION=2.24.3

KAFKA_LIB=$CACHE_DIR/kafka-$KAFKA_VERSION/lib
BIN_DIR=$CACHE_DIR/bin
ENV_FILE=$STATE_DIR/env

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $* (install it yourself, or run as root)"
  fi
}

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* yourself"
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  # Keep Debian's maintainer scripts from starting system-wide services: this stack
  # runs its own servers on its own ports, and must own every process it starts.
  local policy=/usr/sbin/policy-rc.d placed=0
  if [ ! -e $policy ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    placed=1
  fi
  log "apt-get install $*"
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 || rc=$?
  [ $placed -eq 1 ] && as_root rm -f $policy
  [ $rc -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

# pid_alive FILE PATTERN: the pid in FILE runs and its command line contains PATTERN
# (so a pid reused by another program is never mistaken for ours).
pid_alive() {
  local file=$1 pattern=$2 pid
  [ -s "$file" ] || return 1
  pid=$(head -n1 "$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null | grep -q -- "$pattern"
}

port_open() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

wait_port() {
  local name=$1 port=$2 secs=$3 pidfile=$4 pattern=$5 i
  for ((i = 0; i < secs * 10; i++)); do
    port_open "$port" && return 0
    pid_alive "$pidfile" "$pattern" || die "$name exited while starting; see its log: $(logfile_of "$name")"
    sleep 0.1
  done
  die "$name did not open port $port within ${secs}s; see its log: $(logfile_of "$name")"
}

logfile_of() { echo "$STATE_DIR/$1/$1.log"; }

# start_bg NAME CMD...: start a server detached, in its own session, logging to a file.
start_bg() {
  local name=$1; shift
  mkdir -p "$STATE_DIR/$name"
  setsid "$@" >>"$(logfile_of "$name")" 2>&1 </dev/null &
  echo $! >"$STATE_DIR/$name/pid"
}

# stop_pid NAME PATTERN: TERM the recorded pid, wait up to 30 s, then KILL.
stop_pid() {
  local name=$1 pattern=$2 file=$STATE_DIR/$1/pid pid i
  if ! pid_alive "$file" "$pattern"; then rm -f "$file"; return 0; fi
  pid=$(head -n1 "$file")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$file"; return 0; }
    sleep 0.1
  done
  log "$name (pid $pid) ignored TERM for 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$file"
}

# ---------------------------------------------------------------- Kafka

ensure_java() {
  local v
  if command -v java >/dev/null 2>&1; then
    v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
    [ -n "$v" ] && [ "$v" -ge 17 ] && return 0
  fi
  apt_install openjdk-17-jre-headless
}

ensure_kafka_jars() {
  # The stamp names what the folder holds, so a change of versions resolves again.
  local stamp="kafka_2.13:$KAFKA_VERSION log4j-slf4j-impl:$LOG4J_VERSION"
  [ "$(cat "$KAFKA_LIB/.complete" 2>/dev/null)" = "$stamp" ] && return 0
  command -v mvn >/dev/null 2>&1 || apt_install maven
  local work=$CACHE_DIR/kafka-$KAFKA_VERSION
  mkdir -p "$work"
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.projector</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  log "resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION and its runtime dependencies with mvn"
  rm -rf "$KAFKA_LIB"
  if ! mvn -q -B -f "$work/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIB" >"$work/mvn.log" 2>&1; then
    tail -n 30 "$work/mvn.log" >&2
    die "mvn could not resolve Kafka $KAFKA_VERSION (full log: $work/mvn.log)"
  fi
  echo "$stamp" >"$KAFKA_LIB/.complete"
}

kafka_up() {
  local dir=$STATE_DIR/kafka
  if pid_alive "$dir/pid" kafka.Kafka; then log "kafka already running (pid $(cat "$dir/pid"))"; return 0; fi
  ensure_java
  ensure_kafka_jars
  mkdir -p "$dir/data"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=12
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF
  cat >"$dir/log4j2.xml" <<EOF
<Configuration status="warn">
  <Appenders><Console name="out" target="SYSTEM_OUT"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers>
    <Logger name="kafka" level="info"/><Logger name="org.apache.kafka" level="info"/>
    <Logger name="kafka.request.logger" level="warn"/><Logger name="state.change.logger" level="warn"/>
    <Root level="warn"><AppenderRef ref="out"/></Root>
  </Loggers>
</Configuration>
EOF
  local jvm=(-Xms128m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    "-Dlog4j2.configurationFile=$dir/log4j2.xml" "-Dkafka.logs.dir=$dir" -cp "$KAFKA_LIB/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    local id
    id=$(java "${jvm[@]}" kafka.tools.StorageTool random-uuid 2>>"$dir/format.log" | tail -n1)
    [ -n "$id" ] || die "kafka StorageTool random-uuid failed; see $dir/format.log"
    if ! java "${jvm[@]}" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" >>"$dir/format.log" 2>&1; then
      tail -n 20 "$dir/format.log" >&2
      die "kafka storage format failed; see $dir/format.log"
    fi
  fi
  log "starting kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT"
  start_bg kafka java "${jvm[@]}" kafka.Kafka "$dir/server.properties"
  wait_port kafka "$KAFKA_PORT" 120 "$dir/pid" kafka.Kafka
}

# ---------------------------------------------------------------- Redis

redis_up() {
  local dir=$STATE_DIR/redis
  if pid_alive "$dir/pid" redis-server; then log "redis already running (pid $(cat "$dir/pid"))"; return 0; fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  local major
  major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\).*/\1/p')
  [ "${major:-0}" -ge 7 ] || die "redis-server $(redis-server --version) is older than 7"
  mkdir -p "$dir"
  log "starting redis on 127.0.0.1:$REDIS_PORT"
  start_bg redis redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
    --appendonly yes --appendfsync everysec --save "" --protected-mode yes --daemonize no
  wait_port redis "$REDIS_PORT" 30 "$dir/pid" redis-server
}

# ---------------------------------------------------------------- PostgreSQL

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  return 1
}

pg_run() { # run a PostgreSQL binary as the non-root OS user
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER_OS" -- "$@"; else "$@"; fi
}

pg_up() {
  local dir=$STATE_DIR/postgres bin
  if pid_alive "$dir/pid" postgres; then log "postgres already running (pid $(cat "$dir/pid"))"; return 0; fi
  bin=$(pg_bindir) || { apt_install postgresql; bin=$(pg_bindir) || die "no PostgreSQL binaries after install"; }
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    id -u "$PG_USER_OS" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_OS"
    chmod 755 "$STATE_DIR"
    chown -R "$PG_USER_OS" "$dir"
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    log "initdb $dir/data"
    pg_run "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed; see $dir/initdb.log"; }
  fi
  log "starting postgres ($("$bin/postgres" --version)) on 127.0.0.1:$PG_PORT"
  rm -f "$dir/postgres.log"
  pg_run "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $dir -c max_connections=200 -c fsync=on -c shared_buffers=128MB" >&2 ||
    { tail -n 20 "$dir/postgres.log" >&2; die "postgres did not start; see $dir/postgres.log"; }
  head -n1 "$dir/data/postmaster.pid" >"$dir/pid"
  wait_port postgres "$PG_PORT" 30 "$dir/pid" postgres
}

pg_down() {
  local dir=$STATE_DIR/postgres bin
  pid_alive "$dir/pid" postgres || { rm -f "$dir/pid"; return 0; }
  if bin=$(pg_bindir); then
    log "stopping postgres (pid $(cat "$dir/pid"))"
    pg_run "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 && { rm -f "$dir/pid"; return 0; }
  fi
  stop_pid postgres postgres
}

# ---------------------------------------------------------------- Mailpit

mailpit_up() {
  local dir=$STATE_DIR/mailpit bin=$BIN_DIR/mailpit
  if pid_alive "$dir/pid" mailpit; then log "mailpit already running (pid $(cat "$dir/pid"))"; return 0; fi
  # A stamp records the installed version: 'mailpit version' reports "dev" for a
  # go-installed build, and looks for newer releases over the network.
  if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$MAILPIT_VERSION" ]; then
    command -v go >/dev/null 2>&1 || die "go is needed to install mailpit"
    log "go install github.com/axllent/mailpit@$MAILPIT_VERSION"
    GOBIN=$BIN_DIR go install "github.com/axllent/mailpit@$MAILPIT_VERSION" >&2 || die "go install mailpit failed"
    echo "$MAILPIT_VERSION" >"$bin.version"
  fi
  mkdir -p "$dir"
  log "starting mailpit: smtp 127.0.0.1:$SMTP_PORT, http 127.0.0.1:$MAILPIT_HTTP_PORT"
  start_bg mailpit "$bin" --smtp "127.0.0.1:$SMTP_PORT" --listen "127.0.0.1:$MAILPIT_HTTP_PORT" \
    --database "$dir/mailpit.db" --max 0 --disable-version-check --smtp-disable-rdns
  wait_port mailpit "$MAILPIT_HTTP_PORT" 30 "$dir/pid" mailpit
  wait_port mailpit "$SMTP_PORT" 30 "$dir/pid" mailpit
}

# ---------------------------------------------------------------- the whole

# The development master key of the personal-data key store (crypto-shredding): made
# once, kept beside the PostgreSQL data it protects (a new database gets a new key).
master_key() {
  local f=$STATE_DIR/postgres/master.key
  if [ ! -s "$f" ]; then
    (umask 077 && head -c 32 /dev/urandom | base64 >"$f")
  fi
  cat "$f"
}

write_env() {
  local key
  key=$(master_key)
  cat >"$ENV_FILE" <<EOF
export KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT
export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export SMTP_ADDR=127.0.0.1:$SMTP_PORT
export MAILPIT_URL=http://127.0.0.1:$MAILPIT_HTTP_PORT
export PROJECTOR_MASTER_KEY=$key
EOF
}

probe() {
  # The real check: Kafka metadata and a topic created, PostgreSQL answers a query,
  # Redis answers PING, Mailpit's API answers. Done in Go with the project's own clients.
  # shellcheck disable=SC1090
  (. "$ENV_FILE" && cd "$here" && go run ./internal/stackprobe)
}

# The status page's test loads it in headless Chromium (Debian's package).
ensure_browser() {
  [ "${PROJECTOR_NO_BROWSER:-0}" = 1 ] && return 0
  command -v chromium >/dev/null 2>&1 || apt_install chromium fonts-dejavu-core
}

# The reliability suite (make chaos) cuts the network with ip netns and veth pairs.
ensure_iproute() {
  command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || apt_install iproute2
}

# kcat (librdkafka's command line) writes to the log as a non-Go producer would:
# the tests of docs/producing.md's settings run it.
ensure_kcat() {
  command -v kcat >/dev/null 2>&1 || apt_install kcat
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$STATE_DIR" "$CACHE_DIR"
  # Prepare installs first (they may prompt apt once), then start the servers.
  kafka_up
  redis_up
  pg_up
  mailpit_up
  ensure_browser
  ensure_iproute
  ensure_kcat
  write_env
  probe || die "the stack started but did not answer the probe (scripts/stack.sh logs)"
  log "up in $((SECONDS - t0))s; endpoints in $ENV_FILE"
}

cmd_down() {
  stop_pid mailpit mailpit
  pg_down
  stop_pid redis redis-server
  stop_pid kafka kafka.Kafka
}

cmd_status() {
  local name pattern rc=0
  for pair in kafka:kafka.Kafka redis:redis-server postgres:postgres mailpit:mailpit; do
    name=${pair%%:*} pattern=${pair#*:}
    if pid_alive "$STATE_DIR/$name/pid" "$pattern"; then
      printf '%-9s running  pid %s\n' "$name" "$(head -n1 "$STATE_DIR/$name/pid")"
    else
      printf '%-9s stopped\n' "$name"; rc=1
    fi
  done
  [ -f "$ENV_FILE" ] && cat "$ENV_FILE"
  return $rc
}

cmd_env() {
  [ -f "$ENV_FILE" ] || die "no env file at $ENV_FILE: run scripts/stack.sh up first"
  cat "$ENV_FILE"
}

cmd_logs() {
  local name
  for name in kafka redis postgres mailpit; do
    local f=$STATE_DIR/$name/$name.log
    [ -f "$f" ] && { echo "== $f"; tail -n "${LINES_TAIL:-30}" "$f"; }
  done
  return 0
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  logs) cmd_logs ;;
  probe) probe ;;
  *) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
