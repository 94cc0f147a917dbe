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
# Two at once take turns: installs hold a lock in the cache folder, and starting or
# stopping the servers one in the state folder (so a second `up` finds them running).
#
# This script installs the binaries. The servers' configuration — one description of
# each, shared with the tests' and the chaos suite's private servers — and starting,
# checking and stopping them live in internal/servers, run here as internal/stackctl.
set -euo pipefail

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${PROJECTOR_CACHE_DIR:-$HOME/.cache/projector}
STATE_DIR=${PROJECTOR_STATE_DIR:-/tmp/projector-stack-$(id -u)}
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
MAILPIT_VERSION=${MAILPIT_VERSION:-v1.33.1}
PG_USER_OS=${PG_USER_OS:-projector-pg}
# The ports and KAFKA_HEAP reach internal/stackctl as they are; its defaults are
# internal/servers' Stack…Default constants, the ones listed above.
export PROJECTOR_CACHE_DIR=$CACHE_DIR PROJECTOR_STATE_DIR=$STATE_DIR KAFKA_VERSION PG_USER_OS
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
  # Another stack's install (with another cache folder) may hold dpkg's lock: wait.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "$@" >&2 || rc=$?
  [ $placed -eq 1 ] && as_root rm -f $policy
  [ $rc -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

# with_lock FILE CMD...: run CMD holding an exclusive lock on FILE, waiting (and
# saying so) while another stack.sh holds it. CMD starts nothing long-lived, so
# no server ever inherits the lock's descriptor.
with_lock() {
  local file=$1; shift
  (
    exec 9>"$file"
    if ! flock -n 9; then
      log "waiting for another scripts/stack.sh (lock $file)"
      flock 9
    fi
    "$@"
  )
}

# stackctl CMD: the servers' side (internal/servers), built from this checkout into
# a folder of this call's own (go run would add "exit status 1" to `status`).
stackctl() {
  local bin rc=0
  bin=$(mktemp -d)
  (cd "$here" && go build -o "$bin/stackctl" ./internal/stackctl) || { rm -rf "$bin"; die "go build ./internal/stackctl failed"; }
  "$bin/stackctl" "$@" || rc=$?
  rm -rf "$bin"
  return $rc
}

# ---------------------------------------------------------------- installs

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

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  local major
  major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\).*/\1/p')
  [ "${major:-0}" -ge 7 ] || die "redis-server $(redis-server --version) is older than 7"
}

pg_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_postgres() {
  pg_bindir >/dev/null || { apt_install postgresql; pg_bindir >/dev/null || die "no PostgreSQL binaries after install"; }
  command -v psql >/dev/null 2>&1 || apt_install postgresql-client
  # PostgreSQL refuses to run as root: as root, the stack runs it as this user.
  if [ "$(id -u)" -eq 0 ] && ! id -u "$PG_USER_OS" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER_OS"
  fi
}

ensure_mailpit() {
  local bin=$BIN_DIR/mailpit
  # A stamp records the installed version: 'mailpit version' reports "dev" for a
  # go-installed build, and looks for newer releases over the network.
  if [ ! -x "$bin" ] || [ "$(cat "$bin.version" 2>/dev/null)" != "$MAILPIT_VERSION" ]; then
    command -v go >/dev/null 2>&1 || die "go is needed to install mailpit"
    log "go install github.com/axllent/mailpit@$MAILPIT_VERSION"
    GOBIN=$BIN_DIR go install "github.com/axllent/mailpit@$MAILPIT_VERSION" >&2 || die "go install mailpit failed"
    echo "$MAILPIT_VERSION" >"$bin.version"
  fi
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

install_all() {
  ensure_java
  ensure_kafka_jars
  ensure_redis
  ensure_postgres
  ensure_mailpit
  ensure_browser
  ensure_iproute
  ensure_kcat
}

# ---------------------------------------------------------------- the whole

probe() {
  # The real check: Kafka metadata and a topic created, PostgreSQL answers a query,
  # Redis answers PING, Mailpit's API answers. Done in Go with the project's own clients.
  # shellcheck disable=SC1090
  (. "$ENV_FILE" && cd "$here" && go run ./internal/stackprobe)
}

cmd_up() {
  local t0=$SECONDS
  mkdir -p "$STATE_DIR" "$CACHE_DIR"
  command -v flock >/dev/null 2>&1 || apt_install util-linux
  # Installs first (they may prompt apt once), one stack.sh at a time per cache folder;
  # then the servers, under the state folder's lock, which stackctl takes.
  with_lock "$CACHE_DIR/install.lock" install_all
  stackctl up || die "the stack did not start (scripts/stack.sh logs)"
  probe || die "the stack started but did not answer the probe (scripts/stack.sh logs)"
  log "up in $((SECONDS - t0))s; endpoints in $ENV_FILE"
}

cmd_env() {
  [ -f "$ENV_FILE" ] || die "no env file at $ENV_FILE: run scripts/stack.sh up first"
  cat "$ENV_FILE"
}

case "${1:-}" in
  up) cmd_up ;;
  down) stackctl down ;;
  status) stackctl status ;;
  env) cmd_env ;;
  logs) stackctl logs ;;
  probe) probe ;;
  *) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
