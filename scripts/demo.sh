#!/usr/bin/env bash
# make demo: the main job on the local stack. The Makefile starts the stack, builds
# bin/ and exports the stack's endpoints before calling this.
#
#   1. history: 100,000 events of the example domain in the log (written once)
#   2. a new read model replays them from offset zero while live traffic arrives
#   3. the projector is SIGKILLed mid-replay and restarted: it resumes from the
#      offsets stored with the read model, applying nothing twice
#   4. part of the history is published again (a producer's retries gone wild):
#      every duplicate is recognised and dropped
#   5. side effects: the history is old, so the welcome-email horizon suppresses every
#      old mail; the live users registered now each get exactly one, in Mailpit
#   6. status, the query API, and a clean stop
set -euo pipefail
cd "$(dirname "$0")/.."

TOPIC=${DEMO_TOPIC:-demo.users}
EVENTS=${DEMO_EVENTS:-100000}
LISTEN=${DEMO_LISTEN:-127.0.0.1:18080}
PROJ=(--topic "$TOPIC" --projection demo --log-level warn)
RUN=(--session-timeout 6s --heartbeat 500ms)
WORK=$(mktemp -d)
PID=""

get() { python3 -c 'import sys,urllib.request
try: print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())
except Exception as e: print(getattr(e, "read", lambda: str(e).encode())().decode().strip())' "http://$LISTEN$1"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null && kill -TERM "$PID" && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

start_projector() {
  bin/projector run "${PROJ[@]}" "${RUN[@]}" --listen "$LISTEN" --progress=false >>"$WORK/projector.log" 2>&1 &
  PID=$!
}

status_sum() { # sum of one field over the partitions, from projector status --json
  { bin/projector status "${PROJ[@]}" --json --interval 0 2>/dev/null || true; } |
    python3 -c "import json,sys
try: print(sum(p['$1'] for p in json.load(sys.stdin)['partitions']))
except Exception: print(0)"
}

wait_live() {
  for _ in $(seq 1 600); do
    if bin/projector status "${PROJ[@]}" --interval 0 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "demo: the projector did not catch up within 2 minutes; its log:" >&2
  tail -n 30 "$WORK/projector.log" >&2
  exit 1
}

step "1. the log: $EVENTS events of the example domain in $TOPIC (written once, deterministic: seed 1)"
have=$(status_sum high_water)
if [ "$have" -lt "$EVENTS" ]; then
  bin/producer generate --topic "$TOPIC" --events "$EVENTS" --users 5000 --seed 1 --log-level warn
else
  echo "$TOPIC already holds $have events"
fi

step "2. a new read model (schema demo_v1) replays from offset zero, with live traffic arriving"
psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS demo_v1 CASCADE" 2>/dev/null || true
for table in offsets aggregates migrations parked event_ids effect_starts parked_effects; do
  psql -q "$DATABASE_URL" -c "DELETE FROM projector.$table WHERE projection = 'demo' OR projection LIKE 'demo/%'" 2>/dev/null || true
done
start_projector
LIVE_PREFIX="live$(date +%s)"
bin/producer generate --topic "$TOPIC" --events 4000 --rate 2000 --prefix "$LIVE_PREFIX" --start now --seed "$RANDOM" --log-level warn >"$WORK/live.json" &
LIVE=$!
sleep 1.5

step "3. SIGKILL the projector mid-replay (at $(status_sum next_offset) of $(status_sum high_water)), then restart it"
kill -KILL "$PID"; wait "$PID" 2>/dev/null || true
echo "killed pid $PID; restarting: it resumes from the offsets committed with the read model"
start_projector
wait "$LIVE"
echo "live traffic: $(cat "$WORK/live.json")"
wait_live
bin/projector status "${PROJ[@]}"

step "4. the first 20000 events published again (a producer's retries gone wild): duplicates at new offsets"
bin/producer generate --topic "$TOPIC" --events 20000 --users 5000 --seed 1 --log-level warn
wait_live
get /metrics | grep -E '^projector_events_total' || true

step "5. side effects: one welcome mail per live user, none for the old history"
for _ in $(seq 1 150); do # effects follow the read model: wait for them to drain
  lag=$(bin/projector status "${PROJ[@]}" --json --interval 0 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("effect_lag",{}).get("welcome_email",1))' || echo 1)
  [ "$lag" = 0 ] && break
  sleep 0.2
done
get /metrics | grep -E '^projector_effects_total' || true
mails=$(python3 -c 'import json,sys,urllib.request,urllib.parse
q=urllib.parse.quote("to:@"+sys.argv[2]+".example.test")
print(json.load(urllib.request.urlopen(sys.argv[1]+"/api/v1/search?limit=1&query="+q))["messages_count"])' "$MAILPIT_URL" "$LIVE_PREFIX")
echo "Mailpit holds $mails welcome mails for the live users ($MAILPIT_URL); the 100,000 old events sent none (horizon)"

step "6. the read model, through the query API"
echo "GET /v1/stats:          $(get /v1/stats)"
echo "GET /v1/users?limit=1:  $(get '/v1/users?limit=1')"
echo "GET /readyz:            $(get /readyz)"

step "7. done: stopping the projector (SIGTERM: it finishes its batch and leaves the group)"
kill -TERM "$PID"; wait "$PID" || true
PID=""
echo "Next: 'make test' proves these guarantees against the same stack; the README says how."
