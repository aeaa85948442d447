#!/usr/bin/env bash
# The load-test platform: a `serena up` of its own, started from a FRESH database every time,
# so two `serena load` runs are comparable (issue #7: a platform left with ~7,900 paid orders
# from earlier runs made the planner's CPU per purchase several times what a fresh one costs).
#
#   scripts/load-platform.sh up            stop the previous load platform, drop and re-create its
#                                          database, clear its Redis keys and broker state, start its
#                                          own Mosquitto and in-memory localstripe, migrate, seed the
#                                          shop, create the admin, start `serena up` in the background
#   scripts/load-platform.sh load ARGS...  `serena load ARGS...` against it (admin, broker, localstripe
#                                          and --host set), e.g. `load --profile checkout:25`
#   scripts/load-platform.sh fresh ARGS... `up`, then `load ARGS...`, then `down` (one comparable run)
#   scripts/load-platform.sh down          stop it (the platform, its broker, its localstripe)
#   scripts/load-platform.sh env           print its environment (to run other commands against it)
#
# Everything is its own, so the development platform (8000, database serena, broker 1884,
# localstripe 8420) and the tests are untouched: API 8300, database serena_load, Redis prefix
# serena-load:, Mosquitto 1891, localstripe 8421, data under var/load-platform/. Each can be
# overridden by the LOAD_* variables below. The shop is `serena commerce seed --products 200` with
# every stocked variant raised to LOAD_STOCK units, so a run never sells out.
# Timing runs: wrap in `flock /tmp/serena-bench.lock`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${LOAD_BIN:-$ROOT/.venv/bin}"  # another checkout (e.g. a git worktree of an older commit) may use this venv

PG="${LOAD_PG:-postgresql://postgres@127.0.0.1:5432}"
DB="${LOAD_DB:-serena_load}"
API_PORT="${LOAD_API_PORT:-8300}"
MQTT_PORT="${LOAD_MQTT_PORT:-1891}"
STRIPE_PORT="${LOAD_STRIPE_PORT:-8421}"
REDIS_URL="${LOAD_REDIS_URL:-redis://127.0.0.1:6379/0}"
PREFIX="${LOAD_REDIS_PREFIX:-serena-load:}"
DATA="${LOAD_DATA_DIR:-var/load-platform}"
PRODUCTS="${LOAD_PRODUCTS:-200}"
STOCK="${LOAD_STOCK:-1000000}"  # units of each stocked variant at each depot: a run must never sell out
WORKERS="${LOAD_API_WORKERS:-2}"
ADMIN_EMAIL="${LOAD_ADMIN_EMAIL:-admin@serena.local}"
ADMIN_PASSWORD="${LOAD_ADMIN_PASSWORD:-serena-load-admin}"
TOTP_SECRET="${LOAD_TOTP_SECRET:-SERENADEMOTOTPSECRETDEVONLY23456}"  # development-only, as `make demo`'s

case "$DB" in *[!a-z0-9_]*|"") echo "error: LOAD_DB must be [a-z0-9_]+" >&2; exit 2;; esac
case "$DB" in serena|postgres|template*) echo "error: refusing to drop database $DB" >&2; exit 2;; esac

export SERENA_DATABASE_URL="$PG/$DB"
export SERENA_API_PORT="$API_PORT"
export SERENA_API_WORKERS="$WORKERS"
export SERENA_REDIS_URL="$REDIS_URL"
export SERENA_REDIS_PREFIX="$PREFIX"
export SERENA_MQTT_URL="mqtt://127.0.0.1:$MQTT_PORT"
export SERENA_STRIPE_API_BASE="http://127.0.0.1:$STRIPE_PORT"
export SERENA_DATA_DIR="$DATA"
export SERENA_MOSQUITTO_DIR="$DATA/mosquitto"
export SERENA_NOTIFICATIONS_PUBLIC_URL="http://127.0.0.1:$API_PORT"
export SERENA_SIM_ADMIN_EMAIL="$ADMIN_EMAIL"
export SERENA_SIM_ADMIN_PASSWORD="$ADMIN_PASSWORD"
export SERENA_SIM_ADMIN_TOTP_SECRET="$TOTP_SECRET"
HOST="http://127.0.0.1:$API_PORT"
PIDFILE="$DATA/run/serena-up.pid"

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q "serena up"; }

stop_platform() {
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  if alive "$pid"; then
    echo "stopping the load platform (serena up, pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid"; fi
  fi
  rm -f "$PIDFILE"
  # Its broker and localstripe (pid files under $DATA/run and $DATA/mosquitto; never the machine's services).
  [ -d "$DATA" ] && "$BIN/serena" services down >/dev/null || true
}

fresh_state() {
  echo "database $DB: dropped and re-created"
  PGOPTIONS="--client-min-messages=warning" psql "$PG/postgres" -v ON_ERROR_STOP=1 -qAt \
    -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\"" >/dev/null
  local n
  n="$(redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" | wc -l)"
  redis-cli -u "$REDIS_URL" --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null
  echo "redis: $n keys under $PREFIX deleted"
  rm -rf "$DATA/mosquitto" "$DATA/outbox" "$DATA/run"  # broker persistence (retained task lists, sessions), mail files
  mkdir -p "$DATA/log" "$DATA/run"
}

up() {
  stop_platform
  fresh_state
  "$BIN/serena" services up            # PostGIS in $DB, our broker on $MQTT_PORT, a new in-memory localstripe on $STRIPE_PORT
  "$BIN/serena" migrate
  "$BIN/serena" commerce seed --products "$PRODUCTS" >/dev/null
  # The seeded shop has 0-60 units a depot; at tens of purchases a second the hot variants sold out
  # within a minute and checkouts failed with 409 (cheap, so they flattered the figures). The same
  # variants stay in stock (quantity > 0), with enough units for any run.
  psql "$SERENA_DATABASE_URL" -qAt -c "UPDATE stock SET quantity = $STOCK WHERE quantity > 0" >/dev/null
  "$BIN/serena" users create-admin --email "$ADMIN_EMAIL" --password "$ADMIN_PASSWORD" --totp-secret "$TOTP_SECRET" >/dev/null
  local log="$DATA/log/serena-up.log"
  setsid "$BIN/serena" up >"$log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 600); do
    if curl -fsS "$HOST/health" >/dev/null 2>&1; then
      echo "load platform up: $HOST (pid $(cat "$PIDFILE"), log $log), database $DB, Redis prefix $PREFIX," \
           "broker :$MQTT_PORT, localstripe :$STRIPE_PORT, $PRODUCTS products, $WORKERS API workers"
      return 0
    fi
    alive "$(cat "$PIDFILE")" || { tail -30 "$log" >&2; echo "error: serena up exited" >&2; exit 1; }
    sleep 0.2
  done
  tail -30 "$log" >&2
  echo "error: the platform did not answer $HOST/health within 120 s" >&2
  exit 1
}

load() {
  curl -fsS "$HOST/health" >/dev/null || { echo "error: no load platform at $HOST (scripts/load-platform.sh up)" >&2; exit 1; }
  "$BIN/serena" load --host "$HOST" "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  up) up ;;
  down) stop_platform; echo "load platform stopped" ;;
  load) load "$@" ;;
  fresh) up; status=0; load "$@" || status=$?; stop_platform; exit $status ;;
  env) env | grep -E '^SERENA_' | sort | sed 's/^/export /' ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
