#!/usr/bin/env bash
# Load-tests a local Keyfob with wrk and prints one table of results.
#
#   bench/run.sh [--postgres] [--no-build] [--records-only]
#
# It builds the release binary, makes a throw-away data directory with one account and one API
# key, starts `keyfob serve` on a free loopback port and runs sixteen scenarios against it:
#
#   1. GET /healthz                         the bare HTTP stack: the baseline for the ratios
#   2. GET /auth/whoami, API key            SHA-256 of the key + in-memory lookup
#   3. GET /auth/whoami, one JWT repeated   verified-token cache hit (SHA-256 of the token)
#   4. GET /auth/whoami, a new JWT each time  a full Ed25519 signature check per request
#   5. POST /auth                           mint a JWT: sign + record it in the database
#   6. POST /auth/token, authorization_code  exchange a code: start a user session, sign, store
#   7. POST /auth/token, refresh_token       rotate a session's refresh token
#   8. GET /auth/whoami, API key, while a second wrk (1 thread, FLOOD_CONNECTIONS connections)
#      posts wrong-password logins, each with a new email; 400 = a password was checked,
#      429 = the rate limit refused it first (both expected, counted apart)
#   9. POST /api/plainRecords               create a record without sensitive fields
#  10. POST /api/vaultRecords               the same document with an SSN and a card number in
#                                           sensitive fields: checked, encrypted (AES-256-GCM)
#  11. GET /api/plainRecords/{id}           read a record without sensitive fields
#  12. GET /api/vaultRecords/{id}           read it with both values decrypted and masked
#  13. POST /auth/token, client_credentials  a confidential application gets a token for itself
#                                           (HTTP Basic, scope=deals.read): secret check, sign,
#                                           record the token in the database, audit
#  14. POST /auth/token, authorization_code with `openid email` granted: scenario 6 plus an
#                                           id_token (the user read, a second signature); the
#                                           report gives 14/6 (target: at least 0.80)
#  15. GET /auth/whoami, restricted API key  scenario 2 with a key limited to deals.read,services.write
#  16. GET /auth/whoami, rate-limited key   scenario 2 with a key limited to 1000000/s (never
#                                           reached: the cost of counting and of the RateLimit
#                                           headers on every answer); target for 15 and 16: 0.80x
#                                           /healthz, as scenario 2
#
# Scenarios 15 and 16 run right after scenario 2 (also with --records-only).
#
# Scenarios 9-12 run right after scenario 2, with the API key; the documents have the same shape
# and size (the plain one keeps the same values in fields that are not sensitive). The report
# gives 10/9 and 12/11: the vault's target is at least 0.85 (encryption costs at most 15%).
#
# Scenario 6 needs codes: an application and an end user are made with the CLI, the user logs in
# and allows the application once over HTTP (curl and a cookie jar), and then codes are harvested
# (unmeasured) with GET /auth and the user's cookie, which answers 302 with a new code. Codes live
# 60 s, so they are harvested right before scenario 6. Scenario 6 saves the refresh tokens it gets;
# scenario 7 uses each once, and goes on with the rotated ones it receives if they run out.
#
# Scenario 13 runs right after scenario 7, with the same application (client_secret_basic); every
# request is the same and every answer a new token (bench/wrk/client_credentials.lua).
#
# Scenario 14 runs right after 13: the user allowed `openid email deals.read` at the start, so the
# grant covers both requests; codes asking for `scope=openid email deals.read` with a nonce are
# harvested the same way, and every answer must carry an id_token.
#
# Scenario 5 runs before 4 and saves the tokens it receives; more are minted (unmeasured) if
# scenario 4 needs more, so every request of scenario 4 carries a token never seen before.
#
# Settings (environment variables):
#   DURATION=10        seconds per scenario
#   CONNECTIONS=64     wrk connections
#   THREADS=2          wrk threads
#   WARMUP=2           seconds of unmeasured /healthz load before scenario 1
#   FRESH_TOKENS=      tokens to have for scenario 4 (default: enough for half the /healthz rate)
#   MINT_MAX_SECONDS=60  longest time spent minting extra tokens for scenario 4
#   CODES=             codes to harvest for scenario 6 (default: 5,000 per second of DURATION)
#   FLOOD_CONNECTIONS=16  connections of the login flood in scenario 8
#   PG_URL=postgres://postgres@127.0.0.1:5432/test   the database --postgres uses (a new schema
#                      is created in it and dropped afterwards)
#   KEYFOB_BIN=        run this binary instead of building target/release/keyfob
#   VERBOSE=1          also print wrk's own report for each scenario
#   RSS_LIMIT_MB=100   the server's peak resident memory allowed (VmHWM); above it the run fails
#
# --postgres  store in PostgreSQL (needs psql and a running server at PG_URL) instead of SQLite.
# --no-build  skip `cargo build --release -p keyfob` and use the existing binary.
# --records-only  run scenarios 1, 2 and 9-12 only.
#
# The wrk scripts are in bench/wrk/. Every response outside 200-299 is counted; the command exits
# non-zero if any scenario had one, or a socket error. It also reports the server's CPU time per
# request and how much of the machine other programs used meanwhile (a scenario where that was
# 10% or more is starred: its figures are unreliable), and the server's memory: resident (VmRSS)
# when idle and after each scenario, and the peak so far (VmHWM); the command exits non-zero if the
# peak passed RSS_LIMIT_MB.
#
# Everything it creates lives in one temporary directory (and, with --postgres, one schema) that
# is removed on exit, including on failure or Ctrl-C. The server is stopped on exit too.

set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Settings

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2}
FRESH_TOKENS=${FRESH_TOKENS:-}
MINT_MAX_SECONDS=${MINT_MAX_SECONDS:-60}
CODES=${CODES:-}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-16}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/test}
VERBOSE=${VERBOSE:-0}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-100}

USE_POSTGRES=0
BUILD=1
RECORDS_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --postgres) USE_POSTGRES=1 ;;
        --no-build) BUILD=0 ;;
        --records-only) RECORDS_ONLY=1 ;;
        -h | --help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *)
            echo "bench/run.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

die() {
    echo "bench/run.sh: error: $*" >&2
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for name in DURATION CONNECTIONS THREADS WARMUP MINT_MAX_SECONDS FLOOD_CONNECTIONS RSS_LIMIT_MB; do
    is_uint "${!name}" || die "$name must be a whole number, not '${!name}'"
done
((DURATION > 0)) || die "DURATION must be at least 1"
((THREADS > 0 && CONNECTIONS >= THREADS)) || die "need THREADS >= 1 and CONNECTIONS >= THREADS"
[[ -z $FRESH_TOKENS ]] || is_uint "$FRESH_TOKENS" || die "FRESH_TOKENS must be a whole number"
[[ -z $CODES ]] || is_uint "$CODES" || die "CODES must be a whole number"
((DURATION <= 40)) || die "DURATION must be at most 40 (the codes of scenario 6 live 60 s)"
((FLOOD_CONNECTIONS > 0)) || die "FLOOD_CONNECTIONS must be at least 1"

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
WRK_DIR="$BENCH_DIR/wrk"

command -v wrk >/dev/null || die "wrk is not installed (Debian/Ubuntu: apt-get install -y wrk)"
command -v curl >/dev/null || die "curl is not installed"
if ((USE_POSTGRES)); then
    command -v psql >/dev/null || die "--postgres needs psql (apt-get install -y postgresql-client)"
fi

log() { printf '==> %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# Clean-up: stop what we started, remove what we made.

WORK=""
SERVER_PID=""
WRK_PID=""
FLOOD_PID=""
PG_SCHEMA=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pid
    for pid in "$WRK_PID" "$FLOOD_PID"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_SCHEMA ]]; then
        psql "$PG_URL" -qAt -v ON_ERROR_STOP=1 -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" \
            >/dev/null 2>&1 || echo "bench/run.sh: could not drop schema $PG_SCHEMA" >&2
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keyfob-bench.XXXXXX")
DATA="$WORK/data"
mkdir -p "$DATA"

# ---------------------------------------------------------------------------------------------
# Build

if [[ -n ${KEYFOB_BIN:-} ]]; then
    BIN=$KEYFOB_BIN
elif ((BUILD)); then
    log "building: cargo build --release -p keyfob"
    (cd "$ROOT" && cargo build --release -p keyfob) || die "the release build failed"
    BIN="$ROOT/target/release/keyfob"
else
    BIN="$ROOT/target/release/keyfob"
fi
[[ -x $BIN ]] || die "no keyfob binary at $BIN"

# ---------------------------------------------------------------------------------------------
# Storage, account, API key

if ((USE_POSTGRES)); then
    PG_SCHEMA="kfbench_$$_$RANDOM"
    psql "$PG_URL" -qAt -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $PG_SCHEMA" >/dev/null ||
        die "cannot create schema $PG_SCHEMA at $PG_URL"
    sep='?'
    [[ $PG_URL == *\?* ]] && sep='&'
    export KEYFOB_DATABASE_URL="${PG_URL}${sep}options=-c%20search_path%3D${PG_SCHEMA}"
    BACKEND="PostgreSQL (schema $PG_SCHEMA)"
else
    unset KEYFOB_DATABASE_URL
    BACKEND="SQLite ($DATA/keyfob.db)"
fi
unset KEYFOB_CONFIG KEYFOB_MASTER_KEY KEYFOB_LISTEN KEYFOB_PUBLIC_URL KEYFOB_DATA_DIR

kf() { "$BIN" --data-dir "$DATA" "$@"; }

EMAIL="bench@example.com"
log "creating an account and an API key in $BACKEND"
printf '%s' "bench-password-$RANDOM$RANDOM" | kf accounts create --email "$EMAIL" >/dev/null ||
    die "keyfob accounts create failed"
API_KEY=$(kf keys create --account "$EMAIL" --name bench) || die "keyfob keys create failed"
[[ $API_KEY == kf_* ]] || die "keyfob keys create printed something that is not a key"
RESTRICTED_KEY=$(kf keys create --account "$EMAIL" --name bench-restricted \
    --permissions deals.read,services.write) || die "keyfob keys create --permissions failed"
LIMITED_KEY=$(kf keys create --account "$EMAIL" --name bench-limited --rate-limit 1000000/s) ||
    die "keyfob keys create --rate-limit failed"

# An application and an end user for the user-session scenarios (6-7).
REDIRECT_URI="http://localhost:9/cb"
USER_EMAIL="bench-user@example.com"
USER_PASSWORD="Kf-bench-user-$RANDOM$RANDOM"
app=$(kf apps create --account "$EMAIL" --name bench --redirect-uri "$REDIRECT_URI" \
    --max-permissions deals.read,deals.write) || die "keyfob apps create failed"
CLIENT_ID=$(sed -n 's/.*"client_id" *: *"\([^"]*\)".*/\1/p' <<<"$app")
CLIENT_SECRET=$(sed -n 's/.*"client_secret" *: *"\([^"]*\)".*/\1/p' <<<"$app")
[[ -n $CLIENT_ID && -n $CLIENT_SECRET ]] || die "keyfob apps create printed no client_id/secret: $app"
printf '%s' "$USER_PASSWORD" | kf users create --email "$USER_EMAIL" >/dev/null ||
    die "keyfob users create failed"

# ---------------------------------------------------------------------------------------------
# Server

free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

http_code() { # METHOD PATH [curl args...] -> prints the status code
    local method=$1 path=$2
    shift 2
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X "$method" "$@" "$BASE$path" || true
}

# The server's memory now (VmRSS) and its peak since it started (VmHWM), in MB.
server_memory() { # FIELD -> MB with one decimal, or "?"
    awk -v f="$1:" '$1 == f { printf "%.1f", $2 / 1024; found = 1 } END { if (!found) print "?" }' \
        "/proc/$SERVER_PID/status" 2>/dev/null || echo "?"
}

start_server() {
    local attempt
    for attempt in 1 2 3; do
        PORT=$(free_port)
        BASE="http://127.0.0.1:$PORT"
        # Started directly (not through kf) so that $! is the server itself.
        "$BIN" --data-dir "$DATA" serve --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
        SERVER_PID=$!
        for _ in $(seq 1 300); do
            if ! kill -0 "$SERVER_PID" 2>/dev/null; then
                break
            fi
            if [[ $(http_code GET /healthz) == 200 ]]; then
                return 0
            fi
            sleep 0.1
        done
        if kill -0 "$SERVER_PID" 2>/dev/null; then
            cat "$WORK/server.log" >&2
            die "the server did not answer /healthz within 30 s"
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
        log "the server exited on start (attempt $attempt):"
        sed 's/^/    /' "$WORK/server.log" >&2
    done
    die "could not start the server"
}

log "starting keyfob serve"
start_server
log "listening on $BASE (pid $SERVER_PID)"

AUTH_KEY=(-H "Authorization: Bearer $API_KEY")
# A key made while a server runs is picked up within a second; this one predates the server,
# but wait for it all the same.
for _ in $(seq 1 100); do
    [[ $(http_code GET /auth/whoami "${AUTH_KEY[@]}") == 200 ]] && break
    sleep 0.1
done
code=$(http_code GET /auth/whoami "${AUTH_KEY[@]}")
[[ $code == 200 ]] || die "GET /auth/whoami with the API key answered $code, not 200"
IDLE_RSS_MB=$(server_memory VmRSS)
log "server resident memory before any load: $IDLE_RSS_MB MB"

mint_one() {
    curl -s --max-time 5 -X POST "${AUTH_KEY[@]}" -H 'Content-Type: application/json' \
        -d '{"permissions":["deals.read"]}' -w '\n%{http_code}' "$BASE/auth"
}
reply=$(mint_one)
[[ $(tail -n1 <<<"$reply") == 201 ]] || die "POST /auth answered: $reply"
JWT=$(head -n1 <<<"$reply" | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
[[ -n $JWT ]] || die "POST /auth returned no token: $reply"
code=$(http_code GET /auth/whoami -H "Authorization: Bearer $JWT")
[[ $code == 200 ]] || die "GET /auth/whoami with a JWT answered $code, not 200"

# Log the end user in and allow the application once, as a browser would.
JAR="$WORK/cookies"
AUTH_QUERY="client_id=$CLIENT_ID&redirect_uri=http%3A%2F%2Flocalhost%3A9%2Fcb&permissions=deals.read&state=x"
# The same with OpenID Connect's scopes and a nonce (scenario 14); the user allows this one, whose
# grant covers the other too.
OIDC_QUERY="client_id=$CLIENT_ID&redirect_uri=http%3A%2F%2Flocalhost%3A9%2Fcb&scope=openid+email+deals.read&response_type=code&nonce=n-0S6&state=x"
browse() { # METHOD-ARGS... URL -> prints the headers (body in $WORK/page)
    curl -s --max-time 5 -c "$JAR" -b "$JAR" -D - -o "$WORK/page" "$@"
}
location() { sed -n 's/^[Ll]ocation: *//p' | tr -d '\r'; }
unescape() { sed 's/&#38;/\&/g; s/&amp;/\&/g; s/&#34;/"/g; s/&quot;/"/g; s/&lt;/</g; s/&gt;/>/g'; }
hidden_fields() { # FORM-ACTION -> curl --data-urlencode arguments, one per line, from $WORK/page
    sed -n "/action=\"${1//\//\\/}\"/,/<\/form>/p" "$WORK/page" |
        sed -n 's/.*<input type="hidden" name="\([^"]*\)" value="\([^"]*\)".*/\1=\2/p' | unescape
}
to_login=$(browse "$BASE/auth?$OIDC_QUERY" | location)
[[ $to_login == /auth/login* ]] || die "GET /auth did not redirect to the login page: '$to_login'"
browse "$BASE$to_login" >/dev/null
mapfile -t form < <(hidden_fields /auth/login)
args=()
for f in "${form[@]}"; do args+=(--data-urlencode "$f"); done
back=$(browse "${args[@]}" --data-urlencode "email=$USER_EMAIL" \
    --data-urlencode "password=$USER_PASSWORD" "$BASE/auth/login" | location)
[[ $back == /auth\?* ]] || die "logging in did not lead back to /auth: '$back'"
browse "$BASE$back" >/dev/null
mapfile -t form < <(hidden_fields /auth/consent)
((${#form[@]} > 0)) || die "no consent page after logging in"
args=()
for f in "${form[@]}"; do args+=(--data-urlencode "$f"); done
granted=$(browse "${args[@]}" --data-urlencode permission=deals.read --data-urlencode decision=allow \
    "$BASE/auth/consent" | location)
[[ $granted == "$REDIRECT_URI?code="* ]] || die "allowing the application did not give a code: '$granted'"
USER_COOKIE=$(awk -F'\t' 'NF >= 7 && $6 ~ /^kf_user/ { printf "%s%s=%s", sep, $6, $7; sep = "; " }' "$JAR")
LOGIN_CSRF=$(awk -F'\t' 'NF >= 7 && $6 == "kf_user_form" { print $7 }' "$JAR")
[[ -n $LOGIN_CSRF ]] || die "no kf_user_form cookie after the login page"
again=$(curl -s --max-time 5 -o /dev/null -w '%{http_code} %{redirect_url}' -H "Cookie: $USER_COOKIE" "$BASE/auth?$AUTH_QUERY")
[[ $again == "302 $REDIRECT_URI?code="* ]] || die "GET /auth with the user's cookie answered '$again', not a 302 with a code"

# ---------------------------------------------------------------------------------------------
# Load

declare -A RPS P99 REQS NON2XX ERRORS REUSED BUSY CPU_US OTHER RSS_MB PEAK_MB

# CPU time the server has used so far (user + system), in clock ticks. Divided by the requests
# served it gives a cost per request, which a busy machine distorts less than requests/s.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat" 2>/dev/null || echo 0; }

# CPU time the whole machine has been busy, in ticks: user, nice, system and steal. Interrupt time
# is left out: loopback traffic is mostly handled in softirq, charged to no process.
box_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $9; exit }' /proc/stat; }
# CPU time of this script's finished children (wrk), in ticks, from the `times` builtin. It runs
# in this shell (a subshell would report its own children), so the result goes to a variable.
children_ticks() { # VAR
    times >"$WORK/times"
    printf -v "$1" '%s' "$(awk -v hz="$CLK_TCK" 'NR == 2 {
        t = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); t += p[1] * 60 + p[2] }
        printf "%d", t * hz }' "$WORK/times")"
}
NCPU=$(nproc)

# Whether a compiler is running: on a 2-core machine it takes CPU from both server and wrk.
compiler_running() { pgrep -x rustc >/dev/null || pgrep -x cargo >/dev/null; }

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# One row of the report table, and the table's heading.
row() { # NAME LABEL TARGET-KIND
    local name=$1 label=$2 target=$3 verdict="-"
    local rps=${RPS[$name]} ratio
    ratio=$(awk -v a="$rps" -v b="$base" 'BEGIN{printf "%.2f", a/b}')
    case $target in
        ratio80) verdict=$(awk -v a="$rps" -v b="$base" 'BEGIN{print (a / b >= 0.8) ? ">= 0.80x: met" : ">= 0.80x: MISSED"}') ;;
        mint5k) ((USE_POSTGRES)) || verdict=$(awk -v r="$rps" 'BEGIN{print (r >= 5000) ? ">= 5000/s: met" : ">= 5000/s: MISSED"}') ;;
        refresh2k) ((USE_POSTGRES)) || verdict=$(awk -v r="$rps" 'BEGIN{print (r >= 2000) ? ">= 2000/s: met" : ">= 2000/s: MISSED"}') ;;
    esac
    printf '| %-34s | %9.0f | %8.2f | %6sx | %-18s | %10s | %5s%% | %7s | %6s | %6s | %7s |\n' \
        "$label${BUSY[$name]}" "$rps" "$(awk -v u="${P99[$name]}" 'BEGIN{print u/1000}')" "$ratio" \
        "$verdict" "${CPU_US[$name]}" "${OTHER[$name]}" "${NON2XX[$name]}" "${ERRORS[$name]}" \
        "${RSS_MB[$name]}" "${PEAK_MB[$name]}"
}

report_header() {
    echo
    echo "Keyfob load test: $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' + local changes')"
    echo "machine: $(nproc) cores, ${cpu_model:-unknown CPU}; load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "storage: ${BACKEND%% (*}; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s per scenario, on loopback"
    echo
    printf '| %-34s | %9s | %8s | %7s | %-18s | %10s | %6s | %7s | %6s | %6s | %7s |\n' "scenario" "req/s" \
        "p99 ms" "vs hz" "target" "CPU us/req" "other" "non-2xx" "errors" "RSS MB" "peak MB"
    printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' "------------------------------------" "----------:" \
        "---------:" "--------:" "--------------------" "-----------:" "-------:" "--------:" "-------:" \
        "-------:" "--------:"
}

# run_wrk NAME SCRIPT SECONDS [VAR=value ...]: runs wrk, stores its summary under NAME.
run_wrk() {
    local name=$1 script=$2 seconds=$3
    shift 3
    local out="$WORK/wrk-$name.log"
    local ticks_before box_before wrk_before
    ticks_before=$(server_ticks)
    box_before=$(box_ticks)
    children_ticks wrk_before
    # In the background, so that Ctrl-C or SIGTERM reaches the clean-up at once.
    env KF_WRK_DIR="$WRK_DIR" KF_THREADS="$THREADS" "$@" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${seconds}s" --latency -s "$WRK_DIR/$script" "$BASE" \
        >"$out" 2>&1 &
    WRK_PID=$!
    if ! wait "$WRK_PID"; then
        WRK_PID=""
        cat "$out" >&2
        die "wrk failed in scenario '$name'"
    fi
    WRK_PID=""
    local ticks_after box_after wrk_after
    ticks_after=$(server_ticks)
    box_after=$(box_ticks)
    children_ticks wrk_after
    # Share of the machine used by anything but the server and wrk during the scenario.
    OTHER[$name]=$(awk -v box=$((box_after - box_before)) -v srv=$((ticks_after - ticks_before)) \
        -v wrk=$((wrk_after - wrk_before)) -v cap="$((NCPU * CLK_TCK * seconds))" \
        'BEGIN{ o = (box - srv - wrk) / cap * 100; if (o < 0) o = 0; printf "%.0f", o }')
    BUSY[$name]=""
    ((OTHER[$name] < 10)) || BUSY[$name]="*"
    ((VERBOSE)) && sed 's/^/    /' "$out" >&2
    local line
    line=$(grep '^KFBENCH ' "$out") || {
        cat "$out" >&2
        die "wrk printed no summary in scenario '$name'"
    }
    RPS[$name]=$(field rps "$line")
    P99[$name]=$(field p99_us "$line")
    REQS[$name]=$(field requests "$line")
    NON2XX[$name]=$(field non2xx "$line")
    ERRORS[$name]=$(field errors "$line")
    REUSED[$name]=$(field reused "$line")
    RSS_MB[$name]=$(server_memory VmRSS)
    PEAK_MB[$name]=$(server_memory VmHWM)
    CPU_US[$name]=$(awk -v t=$((ticks_after - ticks_before)) -v hz="$CLK_TCK" -v n="${REQS[$name]}" \
        'BEGIN{ if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }')
    log "$(printf '%-18s %8.0f req/s   p99 %7.2f ms   server CPU %6s us/req   other load %3s%%   non-2xx %s   errors %s   RSS %s MB (peak %s)' \
        "$name" "${RPS[$name]}" "$(awk -v u="${P99[$name]}" 'BEGIN{print u/1000}')" \
        "${CPU_US[$name]}" "${OTHER[$name]}" "${NON2XX[$name]}" "${ERRORS[$name]}" \
        "${RSS_MB[$name]}" "${PEAK_MB[$name]}")"
}

count_tokens() { # files... -> number of complete tokens in them
    cat "$@" 2>/dev/null | grep -cE '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' || true
}

if compiler_running; then
    log "WARNING: cargo/rustc is running on this machine; results will be noisy"
fi

START=$SECONDS
log "$DURATION s per scenario, wrk -t$THREADS -c$CONNECTIONS; warming up for $WARMUP s"
if ((WARMUP > 0)); then
    run_wrk warmup get.lua "$WARMUP" KF_PATH=/healthz
fi

run_wrk healthz get.lua "$DURATION" KF_PATH=/healthz
run_wrk whoami_key get.lua "$DURATION" KF_PATH=/auth/whoami KF_BEARER="$API_KEY"
run_wrk whoami_restricted get.lua "$DURATION" KF_PATH=/auth/whoami KF_BEARER="$RESTRICTED_KEY"
run_wrk whoami_limited get.lua "$DURATION" KF_PATH=/auth/whoami KF_BEARER="$LIMITED_KEY"

# Scenarios 9-12: records without and with sensitive fields.
PLAIN_DOC='{"amount":25000,"primaryApplicant":{"name":"Ann Example","reference":"123-45-6789"},"payment":{"reference":"4242424242424242"}}'
VAULT_DOC='{"amount":25000,"primaryApplicant":{"name":"Ann Example","ssn":"123-45-6789"},"payment":{"cardNumber":"4242424242424242"}}'
create_record() { # RESOURCE DOC -> prints the new record's id
    local reply
    reply=$(curl -s --max-time 5 -X POST "${AUTH_KEY[@]}" -H 'Content-Type: application/json' \
        -d "$2" -w '\n%{http_code}' "$BASE/api/$1")
    [[ $(tail -n1 <<<"$reply") == 201 ]] || die "POST /api/$1 answered: $reply"
    head -n1 <<<"$reply" | sed -n 's/.*"id" *: *"\([^"]*\)".*/\1/p'
}
PLAIN_ID=$(create_record plainRecords "$PLAIN_DOC")
VAULT_ID=$(create_record vaultRecords "$VAULT_DOC")
[[ -n $PLAIN_ID && -n $VAULT_ID ]] || die "creating the records to read gave no ids"
reply=$(curl -s --max-time 5 "${AUTH_KEY[@]}" "$BASE/api/vaultRecords/$VAULT_ID")
[[ $reply == *'"***-**-6789"'* && $reply != *123-45-6789* ]] ||
    die "the sensitive record does not read back masked: $reply"
run_wrk record_read_plain get.lua "$DURATION" KF_PATH="/api/plainRecords/$PLAIN_ID" KF_BEARER="$API_KEY"
run_wrk record_read_vault get.lua "$DURATION" KF_PATH="/api/vaultRecords/$VAULT_ID" KF_BEARER="$API_KEY"
run_wrk record_create_plain post.lua "$DURATION" KF_PATH=/api/plainRecords KF_BODY="$PLAIN_DOC" KF_BEARER="$API_KEY"
run_wrk record_create_vault post.lua "$DURATION" KF_PATH=/api/vaultRecords KF_BODY="$VAULT_DOC" KF_BEARER="$API_KEY"

# The server's memory: idle, after the last scenario, and its peak against RSS_LIMIT_MB. Sets
# MEMORY_OK=0 when the peak passed the limit.
MEMORY_OK=1
memory_report() {
    local now peak verdict="met"
    now=$(server_memory VmRSS)
    peak=$(server_memory VmHWM)
    if [[ $peak == "?" ]] || awk -v p="$peak" -v l="$RSS_LIMIT_MB" 'BEGIN{exit !(p >= l)}'; then
        verdict="EXCEEDED"
        MEMORY_OK=0
    fi
    echo "server memory: $IDLE_RSS_MB MB resident when idle, $now MB after the last scenario, peak"
    echo "  $peak MB (VmHWM; limit $RSS_LIMIT_MB MB: $verdict). RSS MB and peak MB in the table are read right"
    echo "  after each scenario."
}

vault_ratio() { # VAULT-SCENARIO PLAIN-SCENARIO -> "0.97 (target >= 0.85: met)"
    awk -v v="${RPS[$1]}" -v p="${RPS[$2]}" \
        'BEGIN{ r = v / p; printf "%.2f (target >= 0.85: %s)", r, (r >= 0.85) ? "met" : "MISSED" }'
}
record_rows() {
    row record_create_plain "9. POST /api/plainRecords" none
    row record_create_vault "10. POST /api/vaultRecords" none
    row record_read_plain "11. GET /api/plainRecords/{id}" none
    row record_read_vault "12. GET /api/vaultRecords/{id}" none
}
key_policy_rows() {
    row whoami_restricted "15. whoami, restricted key" ratio80
    row whoami_limited "16. whoami, rate-limited key" ratio80
}
record_notes() {
    echo "vault cost: create with sensitive fields / without = $(vault_ratio record_create_vault record_create_plain);"
    echo "  read (masked) with sensitive fields / without = $(vault_ratio record_read_vault record_read_plain)."
}

if ((RECORDS_ONLY)); then
    cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1)
    base=${RPS[healthz]}
    report_header
    row healthz "1. GET /healthz" none
    row whoami_key "2. GET /auth/whoami, API key" ratio80
    key_policy_rows
    record_rows
    echo
    record_notes
    memory_report
    status=0
    ((MEMORY_OK)) || status=1
    for name in healthz whoami_key whoami_restricted whoami_limited record_read_plain record_read_vault record_create_plain record_create_vault; do
        if ((${NON2XX[$name]} > 0 || ${ERRORS[$name]} > 0)); then
            echo "WARNING: scenario '$name' had ${NON2XX[$name]} non-2xx answers and ${ERRORS[$name]} socket errors." >&2
            status=1
        fi
    done
    exit "$status"
fi

run_wrk whoami_jwt get.lua "$DURATION" KF_PATH=/auth/whoami KF_BEARER="$JWT"
run_wrk mint mint.lua "$DURATION" KF_BEARER="$API_KEY" KF_TOKENS_OUT="$WORK/minted"

# Tokens for the fresh-JWT scenario: a full signature check costs about as much as a whole bare
# request, so that scenario should not exceed half the /healthz rate; have 10% more than that.
if [[ -z $FRESH_TOKENS ]]; then
    FRESH_TOKENS=$(awk -v r="${RPS[healthz]}" -v d="$DURATION" \
        'BEGIN{n=int(r/2*d*1.1); if (n<20000) n=20000; print n}')
fi
HAVE=$(count_tokens "$WORK"/minted.*)
if ((HAVE < FRESH_TOKENS)); then
    log "minting $((FRESH_TOKENS - HAVE)) more tokens for the fresh-JWT scenario (unmeasured, at most ${MINT_MAX_SECONDS} s)"
    env KF_WRK_DIR="$WRK_DIR" KF_THREADS="$THREADS" KF_BEARER="$API_KEY" KF_TOKENS_OUT="$WORK/topup" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${MINT_MAX_SECONDS}s" -s "$WRK_DIR/mint.lua" "$BASE" \
        >"$WORK/wrk-topup.log" 2>&1 &
    WRK_PID=$!
    while kill -0 "$WRK_PID" 2>/dev/null; do
        sleep 0.5
        if (($(cat "$WORK"/topup.* 2>/dev/null | wc -l) + HAVE >= FRESH_TOKENS)); then
            kill -INT "$WRK_PID" 2>/dev/null || true
            break
        fi
    done
    wait "$WRK_PID" || die "minting extra tokens failed: $(cat "$WORK/wrk-topup.log")"
    WRK_PID=""
    line=$(grep '^KFBENCH ' "$WORK/wrk-topup.log" || true)
    [[ $(field non2xx "$line") == 0 ]] || die "minting extra tokens got non-2xx answers: $line"
fi
cat "$WORK"/minted.* "$WORK"/topup.* 2>/dev/null |
    grep -E '^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' >"$WORK/tokens" || true
TOKENS=$(wc -l <"$WORK/tokens")
DISTINCT=$(sort -u "$WORK/tokens" | wc -l)
((DISTINCT == TOKENS)) || die "the minted tokens are not all distinct ($DISTINCT of $TOKENS)"
((TOKENS >= THREADS)) || die "no tokens were minted"
log "$TOKENS distinct tokens for the fresh-JWT scenario"

run_wrk whoami_fresh_jwt fresh_jwt.lua "$DURATION" KF_TOKENS_FILE="$WORK/tokens"

# Codes for scenarios 6 and 14, harvested just before each (they live 60 s): GET /auth with the
# user's cookie. Sets HARVESTED.
if [[ -z $CODES ]]; then
    CODES=$((DURATION * 5000 > 5000 ? DURATION * 5000 : 5000))
fi
HARVEST_MAX=$((55 - DURATION))
harvest_codes() { # QUERY OUT-FILE
    local query=$1 list=$2 harvest_start line
    rm -f "$WORK"/codes.*
    log "harvesting $CODES authorization codes (unmeasured, at most ${HARVEST_MAX} s)"
    env KF_WRK_DIR="$WRK_DIR" KF_THREADS="$THREADS" KF_QUERY="$query" KF_COOKIE="$USER_COOKIE" \
        KF_CODES_OUT="$WORK/codes" \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${HARVEST_MAX}s" -s "$WRK_DIR/harvest_codes.lua" "$BASE" \
        >"$WORK/wrk-harvest.log" 2>&1 &
    WRK_PID=$!
    harvest_start=$SECONDS
    while kill -0 "$WRK_PID" 2>/dev/null; do
        sleep 0.5
        if (($(cat "$WORK"/codes.* 2>/dev/null | wc -l) >= CODES)); then
            kill -INT "$WRK_PID" 2>/dev/null || true
            break
        fi
    done
    wait "$WRK_PID" || die "harvesting codes failed: $(cat "$WORK/wrk-harvest.log")"
    WRK_PID=""
    line=$(grep '^KFBENCH ' "$WORK/wrk-harvest.log" || true)
    [[ $(field non2xx "$line") == 0 ]] || die "harvesting codes got answers other than a 302 with a code: $line"
    cat "$WORK"/codes.* | grep -E '^[A-Za-z0-9_-]+$' >"$list" || true
    HARVESTED=$(wc -l <"$list")
    (($(sort -u "$list" | wc -l) == HARVESTED)) || die "the harvested codes are not all distinct"
    ((HARVESTED >= THREADS)) || die "no codes were harvested"
    log "$HARVESTED distinct codes in $((SECONDS - harvest_start)) s ($(field rps "$line") req/s)"
}
harvest_codes "$AUTH_QUERY" "$WORK/code-list"

run_wrk code_exchange token_grant.lua "$DURATION" KF_GRANT=authorization_code \
    KF_GRANTS_FILE="$WORK/code-list" KF_REDIRECT_URI="$REDIRECT_URI" KF_CLIENT_ID="$CLIENT_ID" \
    KF_CLIENT_SECRET="$CLIENT_SECRET" KF_REFRESH_OUT="$WORK/refresh"
cat "$WORK"/refresh.* 2>/dev/null | grep -E '^kfr_[A-Za-z0-9_-]+$' >"$WORK/refresh-list" || true
REFRESH_TOKENS=$(wc -l <"$WORK/refresh-list")
((REFRESH_TOKENS >= THREADS)) || die "scenario 6 gave no refresh tokens"
log "$REFRESH_TOKENS refresh tokens for the refresh scenario"

run_wrk refresh token_grant.lua "$DURATION" KF_GRANT=refresh_token \
    KF_GRANTS_FILE="$WORK/refresh-list" KF_CLIENT_ID="$CLIENT_ID" KF_CLIENT_SECRET="$CLIENT_SECRET"

run_wrk client_credentials client_credentials.lua "$DURATION" KF_CLIENT_ID="$CLIENT_ID" \
    KF_CLIENT_SECRET="$CLIENT_SECRET"

PLAIN_HARVESTED=$HARVESTED
harvest_codes "$OIDC_QUERY" "$WORK/oidc-code-list"
run_wrk code_exchange_openid token_grant.lua "$DURATION" KF_GRANT=authorization_code \
    KF_GRANTS_FILE="$WORK/oidc-code-list" KF_REDIRECT_URI="$REDIRECT_URI" KF_CLIENT_ID="$CLIENT_ID" \
    KF_CLIENT_SECRET="$CLIENT_SECRET" KF_EXPECT_ID_TOKEN=1

# Scenario 8: scenario 2 again, with a login flood running for the same time.
env KF_WRK_DIR="$WRK_DIR" KF_CSRF="$LOGIN_CSRF" \
    wrk -t1 -c"$FLOOD_CONNECTIONS" -d"${DURATION}s" -s "$WRK_DIR/login_flood.lua" "$BASE" \
    >"$WORK/wrk-flood.log" 2>&1 &
FLOOD_PID=$!
run_wrk whoami_flood get.lua "$DURATION" KF_PATH=/auth/whoami KF_BEARER="$API_KEY"
wait "$FLOOD_PID" || die "the login flood failed: $(cat "$WORK/wrk-flood.log")"
FLOOD_PID=""
line=$(grep '^KFBENCH ' "$WORK/wrk-flood.log") || die "the login flood printed no summary: $(cat "$WORK/wrk-flood.log")"
FLOOD_REQS=$(field requests "$line")
FLOOD_SECONDS=$(field seconds "$line")
FLOOD_OTHER=$(field non2xx "$line")
FLOOD_ERRORS=$(field errors "$line")
line=$(grep '^KFFLOOD ' "$WORK/wrk-flood.log") || die "the login flood printed no counts"
FLOOD_CHECKED=$(field checked "$line")
FLOOD_LIMITED=$(field limited "$line")

ELAPSED=$((SECONDS - START))

# ---------------------------------------------------------------------------------------------
# Report

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n1)
base=${RPS[healthz]}


report_header
row healthz "1. GET /healthz" none
row whoami_key "2. GET /auth/whoami, API key" ratio80
row whoami_jwt "3. GET /auth/whoami, same JWT" ratio80
row whoami_fresh_jwt "4. GET /auth/whoami, new JWT each" none
row mint "5. POST /auth (mint)" mint5k
row code_exchange "6. POST /auth/token, code" none
row refresh "7. POST /auth/token, refresh" refresh2k
row whoami_flood "8. whoami, API key, login flood" none
record_rows
row client_credentials "13. POST /auth/token, client_cred." none
row code_exchange_openid "14. POST /auth/token, code, openid" none
key_policy_rows
echo
echo "vs hz = requests/s relative to GET /healthz in this run; CPU us/req = server CPU time (user +"
echo "system) per request; other = share of all $NCPU cores used by anything but the server and wrk"
echo "(other programs, steal); errors = wrk socket errors and timeouts."
((USE_POSTGRES)) && echo "With --postgres, PostgreSQL's own CPU time counts as other."
ALL_SCENARIOS=(healthz whoami_key whoami_jwt whoami_fresh_jwt mint code_exchange refresh whoami_flood
    record_create_plain record_create_vault record_read_plain record_read_vault client_credentials
    code_exchange_openid whoami_restricted whoami_limited)
record_notes
for name in "${ALL_SCENARIOS[@]}"; do
    if [[ -n ${BUSY[$name]} ]]; then
        echo "* other load of 10% or more during this scenario: its figures are unreliable."
        break
    fi
done
echo "scenario 4 used $TOKENS distinct tokens; requests that reused one: ${REUSED[whoami_fresh_jwt]}."
echo "scenario 6 had $PLAIN_HARVESTED distinct codes, each sent once; requests after they ran out: ${REUSED[code_exchange]}."
echo "scenario 14 had $HARVESTED distinct codes; requests after they ran out: ${REUSED[code_exchange_openid]}."
echo "14/6 (a code exchange with an id_token against one without): $(awk -v a="${RPS[code_exchange_openid]}" -v b="${RPS[code_exchange]}" 'BEGIN{r = a / b; printf "%.2f (%s)", r, (r >= 0.8) ? "target 0.80: met" : "target 0.80: MISSED"}')"
echo "scenario 7 had $REFRESH_TOKENS refresh tokens from scenario 6, each sent once; requests that used a"
echo "token rotated during scenario 7 instead (also each once): ${REUSED[refresh]}."
echo "scenario 8: whoami ${RPS[whoami_flood]%.*} req/s, p99 $(awk -v u="${P99[whoami_flood]}" 'BEGIN{print u/1000}') ms under the flood, against ${RPS[whoami_key]%.*} req/s, p99 $(awk -v u="${P99[whoami_key]}" 'BEGIN{print u/1000}') ms alone (scenario 2);"
echo "  the flood (wrk -t1 -c$FLOOD_CONNECTIONS) sent $FLOOD_REQS wrong-password logins in ${FLOOD_SECONDS} s: $FLOOD_CHECKED had their password"
echo "  checked (400, $(awk -v c="$FLOOD_CHECKED" -v t="$FLOOD_SECONDS" 'BEGIN{printf "%.1f", c/t}')/s), $FLOOD_LIMITED were refused by the rate limit (429), $FLOOD_OTHER other answers, $FLOOD_ERRORS socket errors."
echo "  Row 8's CPU us/req divides all the server's CPU time, the flood's share included, by the whoami"
echo "  requests alone."
memory_report
echo "load phase took ${ELAPSED} s."

status=0
if ((!MEMORY_OK)); then
    echo "WARNING: the server's resident memory passed RSS_LIMIT_MB=$RSS_LIMIT_MB." >&2
    status=1
fi
if ((${REUSED[whoami_fresh_jwt]} > 0)); then
    echo "WARNING: scenario 4 ran out of fresh tokens and reused some (cache hits); raise FRESH_TOKENS." >&2
fi
if ((${REUSED[code_exchange]} > 0 || ${REUSED[code_exchange_openid]} > 0)); then
    echo "WARNING: scenario 6 or 14 ran out of codes (a thread stopped early, so its req/s is understated); raise CODES." >&2
fi
if ((${REUSED[refresh]} > 0)); then
    echo "NOTE: scenario 7 had too few refresh tokens from scenario 6 and used ${REUSED[refresh]} rotated ones." >&2
fi
if ((FLOOD_OTHER > 0 || FLOOD_ERRORS > 0)); then
    echo "WARNING: the login flood had $FLOOD_OTHER answers other than 400/429 and $FLOOD_ERRORS socket errors." >&2
    status=1
fi
for name in "${ALL_SCENARIOS[@]}"; do
    if ((${NON2XX[$name]} > 0 || ${ERRORS[$name]} > 0)); then
        echo "WARNING: scenario '$name' had ${NON2XX[$name]} non-2xx answers and ${ERRORS[$name]} socket errors." >&2
        status=1
    fi
done
exit "$status"
