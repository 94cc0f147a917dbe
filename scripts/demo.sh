#!/usr/bin/env bash
# make demo: the founding article's story on the local stack, each step checked. The
# Makefile starts the stack, builds bin/ and exports the stack's endpoints first.
#
#   1. history: 100,000 events of the example domain in the log (written once)
#   2. a new read model replays them from offset zero while live users register
#   3. the projector is SIGKILLed mid-replay (checked: between 10% and 90% of the log
#      applied) and restarted: nothing lost, nothing twice
#   4. part of the history is published again (a producer's retries gone wild): every
#      copy is skipped: dropped as a proven duplicate (its id among its aggregate's
#      last 32 applied), or parked with its reason when it lands too far behind to prove
#   5. welcome mails: one per live user, none for the old history (the horizon)
#   6. a snapshot is taken
#   7. a new service bootstraps from it into its own database and catches up: the same
#      read model, and not one mail sent again
#   8. a point-in-time replay rebuilds the read model as it was before the live users
#   9. GDPR: a live user is forgotten (their key deleted, SubjectForgotten published):
#      their email is gone from both read models, the snapshots and the log's bytes,
#      with no operator step: the running services rewrite the snapshots themselves
#  10. status, the query API, where to look next, and the commands that start the two
#      services again (the demo stops them as it exits; the stack keeps running)
#
# Every check folds the log independently (internal/democheck) or counts mails in
# Mailpit; the demo exits non-zero when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."

TOPIC=${DEMO_TOPIC:-demo.users}
EVENTS=${DEMO_EVENTS:-100000}
LISTEN=${DEMO_LISTEN:-127.0.0.1:18080}
LISTEN2=${DEMO_LISTEN2:-127.0.0.1:18082}
SERVICE2_DB=demo_service2
WORK=$(mktemp -d)
SNAPS=$WORK/snapshots
NS="demo$(date +%s)" # the ledger namespace of this run: both services share it
PROJ=(--topic "$TOPIC" --projection demo --log-level warn)
RUN=(--session-timeout 6s --heartbeat 500ms --ledger-namespace "$NS" --snapshot-dir "$SNAPS" --progress=false)
URL2=$(python3 -c 'import sys,urllib.parse as u; p=u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/'$SERVICE2_DB'")))' "$DATABASE_URL")
PIDS=()

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# psql without its NOTICEs ("… does not exist, skipping"): warnings and errors only.
psql() { PGOPTIONS="-c client_min_messages=warning" command psql "$@"; }
proves() { printf '   \033[32m✓ %s\033[0m\n' "$*"; }
cleanup() {
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" && wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT
get() { python3 -c 'import sys,urllib.request
try: print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode().strip())
except Exception as e: print(getattr(e, "read", lambda: str(e).encode())().decode().strip())' "http://$1"; }
check() { go run ./internal/democheck --topic "$TOPIC" "$@"; }
log_end() { # the events in the topic (0 when it does not exist), from the log itself
  { bin/producer topic describe "$TOPIC" --json 2>/dev/null || true; } |
    python3 -c "import json,sys
try: print(sum(p['end'] for p in json.load(sys.stdin)['partitions']))
except Exception: print(0)"
}
stored_position() { # the read model's stored positions, summed over the partitions
  psql -qtA "$DATABASE_URL" -c "SELECT coalesce(sum(next_offset), 0) FROM projector.offsets
    WHERE projection = 'demo' AND version = 1 AND topic = '$TOPIC'" 2>/dev/null || echo 0
}
user_fields() { # $1: listen address, $2: user id. The user's fields, as GET /v1/users/ID answers
  get "$1/v1/users/$2" | python3 -c 'import json,sys
u = json.load(sys.stdin)["user"]
print("user_id %s  email %s  name %s  articles %d" % (u["user_id"], json.dumps(u["email"]), json.dumps(u["name"]), u["article_count"]))'
}
wait_live() { # wait until the read model and its effect reached the log end
  for _ in $(seq 1 900); do
    if bin/projector status "$@" --interval 0 --ready-lag 0 >/dev/null 2>&1; then
      lag=$(bin/projector status "$@" --json --interval 0 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin).get("effect_lag",{}).get("welcome_email",0))' || echo 1)
      [ "$lag" = 0 ] && return 0
    fi
    sleep 0.2
  done
  echo "demo: the projector did not catch up within 3 minutes; its log:" >&2
  tail -n 30 "$WORK"/*.log >&2
  exit 1
}
reset_projection() { # $1: database URL
  psql -q "$1" -c "DROP SCHEMA IF EXISTS demo_v1 CASCADE; DROP SCHEMA IF EXISTS demo_pitr CASCADE; DROP SCHEMA IF EXISTS demo_pitr_projector CASCADE" 2>/dev/null || true
  for table in offsets aggregates migrations parked event_ids effect_starts parked_effects; do
    psql -q "$1" -c "DELETE FROM projector.$table WHERE projection = 'demo' OR projection LIKE 'demo/%'" 2>/dev/null || true
  done
}
drop_old_ledgers() { # the ledger keys of earlier demo runs: their read models were reset, so nothing can resume them
  command -v redis-cli >/dev/null 2>&1 || { echo "demo: no redis-cli; earlier runs' ledger keys stay until their retention ends" >&2; return 0; }
  local pattern="demo[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]:*" n
  n=$(redis-cli -u "$REDIS_URL" --scan --pattern "$pattern" | grep -v "^$NS:" |
    xargs -r -n 1000 redis-cli -u "$REDIS_URL" unlink | awk '{n += $1} END {print n + 0}') || n=0
  [ "$n" -gt 0 ] && echo "removed $n ledger keys of earlier demo runs (each run uses a namespace of its own)"
  return 0
}
start_projector() { # $1: name, then extra flags
  local name=$1; shift
  bin/projector run "${PROJ[@]}" "${RUN[@]}" "$@" >>"$WORK/$name.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
}

step "1. the log: $EVENTS events of the example domain in $TOPIC (deterministic: seed 1, dated January 2026)"
have=$(log_end)
if [ "$have" -lt "$EVENTS" ]; then
  bin/producer generate --topic "$TOPIC" --events "$EVENTS" --users 5000 --seed 1 --log-level warn
else
  echo "$TOPIC already holds $have events"
fi
sleep 1.1
BEFORE_LIVE=$(date -u +%Y-%m-%dT%H:%M:%SZ) # the point the time-travel step goes back to
sleep 1.1

step "2. a new read model (schema demo_v1) replays from offset zero while live users register"
reset_projection "$DATABASE_URL"
drop_old_ledgers
END=$(log_end)
start_projector service1 --listen "$LISTEN"
LIVE="live$(date +%s)"
bin/producer generate --topic "$TOPIC" --events 4000 --rate 2000 --prefix "$LIVE" --start now --seed "$RANDOM" --log-level warn >"$WORK/live.json" &
GEN=$!

step "3. SIGKILL the projector mid-replay, then restart it"
# Kill once a fifth of the log is applied (polled every 0.1 s: a poll sees a few
# thousand events more at most), then check independently where it landed: strictly
# between 10% and 90% of the log, or the kill proved nothing and the demo fails.
for _ in $(seq 1 600); do
  [ "$(stored_position)" -ge $((END / 5)) ] && break
  sleep 0.1
done
kill -KILL "$LAST_PID"; wait "$LAST_PID" 2>/dev/null || true
check --killed-at demo --between 10,90
echo "restarting: it resumes from the offsets committed with the read model"
start_projector service1 --listen "$LISTEN"
wait "$GEN"
echo "live traffic: $(cat "$WORK/live.json")"
wait_live "${PROJ[@]}"
bin/projector status "${PROJ[@]}" --interval 0 | sed -n 1p
check --schema demo_v1
proves "nothing lost and nothing applied twice across the kill"

step "4. the first 10,000 events published again (a producer's retries gone wild)"
bin/producer generate --topic "$TOPIC" --events 10000 --users 5000 --seed 1 --log-level warn
wait_live "${PROJ[@]}"
get "$LISTEN/metrics" | grep -E '^projector_events_total\{outcome="(applied|duplicate|parked)"' || true
check --schema demo_v1
proves "no copy applied twice: proven duplicates dropped, copies too far behind their aggregate to prove parked with a reason (docs/ordering.md); the read model still equals the fold of the log"

step "5. side effects: welcome mails"
get "$LISTEN/metrics" | grep -E '^projector_effects_total.*(fired|suppressed)' || true
check --mails-for "$LIVE"
proves "one welcome mail per live user (the same Message-ID on any re-send); none for the old history: the horizon"

step "6. a snapshot"
bin/projector snapshot create "${PROJ[@]}" --snapshot-dir "$SNAPS"
proves "consistent: one REPEATABLE READ transaction, tables and offsets together, checksummed"

step "7. a new service bootstraps from the snapshot into its own database ($SERVICE2_DB)"
psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $SERVICE2_DB WITH (FORCE)" -c "CREATE DATABASE $SERVICE2_DB"
LIVE2="new$(date +%s)" # users who register while the new service bootstraps
bin/producer generate --topic "$TOPIC" --events 1000 --rate 1000 --prefix "$LIVE2" --start now --seed "$RANDOM" --log-level warn >/dev/null
start_projector service2 --database-url "$URL2" --key-database-url "$DATABASE_URL" --group demo.service2 --bootstrap latest --listen "$LISTEN2" --log-level info
wait_live "${PROJ[@]}" --database-url "$URL2" --key-database-url "$DATABASE_URL"
grep -h "bootstrapped" "$WORK/service2.log" | python3 -c 'import json,sys
for l in sys.stdin: d=json.loads(l); print("bootstrapped from", d["id"], "(%d events) in %.2fs" % (d["events"], d["took"]))' || true
check --schema demo_v1 --database-url "$URL2"
wait_live "${PROJ[@]}"
check --mails-for "$LIVE"
check --mails-for "$LIVE2"
proves "the new service's read model equals the fold, and no mail went out twice: the ledger holds across services"

step "8. time travel: the read model as it was at $BEFORE_LIVE, before the live users"
bin/projector replay "${PROJ[@]}" --snapshot-dir "$SNAPS" --until "$BEFORE_LIVE" --into demo_pitr
UNTIL=$(psql -qtA "$DATABASE_URL" -c "SELECT string_agg(partition || ':' || next_offset, ',') FROM demo_pitr_projector.offsets WHERE projection = 'demo'")
check --schema demo_pitr --until "$UNTIL"
proves "the replay up to that point equals the fold of the events before it, beside the live read model"

step "9. GDPR: a live user asks to be forgotten; the log stays immutable, their key does not"
VICTIM=$(psql -qtA "$DATABASE_URL" -c "SELECT user_id FROM demo_v1.users WHERE user_id LIKE '$LIVE%' ORDER BY user_id LIMIT 1")
VICTIM_EMAIL=$(psql -qtA "$DATABASE_URL" -c "SELECT email FROM demo_v1.users WHERE user_id = '$VICTIM'")
echo "before: GET /v1/users/$VICTIM → $(user_fields "$LISTEN" "$VICTIM")"
FORGOTTEN=$(bin/producer forget "$VICTIM" --topic "$TOPIC" --reason "asked by email" --log-level warn)
FORGOT_AT=$(date +%s.%N)
echo "$FORGOTTEN"
wait_live "${PROJ[@]}"
wait_live "${PROJ[@]}" --database-url "$URL2" --key-database-url "$DATABASE_URL"
AFTER=$(user_fields "$LISTEN" "$VICTIM")
AFTER2=$(user_fields "$LISTEN2" "$VICTIM")
echo "after:  GET /v1/users/$VICTIM → $AFTER"
echo "        the new service's      → $AFTER2"
for a in "$AFTER" "$AFTER2"; do
  if [[ "$a" != *'email "[forgotten]"  name "[forgotten]"'* ]]; then
    echo "demo: the forgotten user's fields still read: $a" >&2
    exit 1
  fi
done
proves "both services answer \"[forgotten]\" for the email and the name; the counts, not personal, stay"
# No operator step: every running 'projector run --snapshot-dir' rewrites the snapshots
# that may hold a forgotten subject's data by itself. Wait, bounded, until every
# snapshot is scrubbed through this forgetting.
deadline=$(($(date +%s) + 30))
while :; do
  pending=$(bin/projector snapshot list "${PROJ[@]}" --snapshot-dir "$SNAPS" --json 2>/dev/null |
    python3 -c 'import json,sys
from datetime import datetime as t
at = t.fromisoformat(json.loads(sys.argv[1])["forgotten_at"])
print(sum(1 for m in json.load(sys.stdin) if t.fromisoformat(m.get("scrubbed_through") or "0001-01-01T00:00:00Z") < at))' "$FORGOTTEN" || echo 1)
  [ "$pending" = 0 ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "demo: the snapshots were not rewritten within 30 s of the forgetting:" >&2
    bin/projector snapshot list "${PROJ[@]}" --snapshot-dir "$SNAPS" >&2
    tail -n 30 "$WORK"/*.log >&2
    exit 1
  fi
  sleep 0.2
done
printf 'the running services rewrote the snapshots by themselves; seen %.1fs after the forgetting:\n' "$(python3 -c "import time; print(time.time() - $FORGOT_AT)")"
bin/projector snapshot list "${PROJ[@]}" --snapshot-dir "$SNAPS"
check --schema demo_v1 --no-trace "$VICTIM_EMAIL" --snapshot-dir "$SNAPS"
check --schema demo_v1 --database-url "$URL2" --no-trace "$VICTIM_EMAIL"
proves "the user's email is in neither service's read model, nor any snapshot (rewritten with no operator step), nor the log's bytes (only ciphertext, now unreadable); both read models still equal the fold"

step "10. where to look"
echo "GET /v1/stats:   $(get "$LISTEN/v1/stats")"
echo "GET /readyz:     $(get "$LISTEN/readyz")"
echo "mails:           $MAILPIT_URL"
echo "the read model:  psql '$DATABASE_URL' -c 'SELECT * FROM demo_v1.users LIMIT 5'"
echo "next:            make test proves these guarantees against the same stack"
echo
echo "The two services stop with the demo; the stack keeps running. To start them again, from $(pwd):"
echo "  eval \"\$(scripts/stack.sh env)\""
echo "  bin/projector run --topic $TOPIC --projection demo --ledger-namespace $NS --listen $LISTEN &"
echo "      # status page http://$LISTEN/"
echo "  bin/projector run --topic $TOPIC --projection demo --ledger-namespace $NS --listen $LISTEN2 \\"
echo "      --database-url '$URL2' --key-database-url \"\$DATABASE_URL\" --group demo.service2 &"
echo "      # the new service's status page http://$LISTEN2/"
