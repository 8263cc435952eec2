#!/usr/bin/env bash
# monitor.sh: a live terminal view of an lltrade host, one frame a second: service state,
# throughput, latency percentiles, rejects, sessions, CPU and memory of the daemon.  It reads
# the telemetry exporter's /latest (docs/telemetry-log.md) with curl and jq, and works with
# or without systemd.
# shellcheck source-path=SCRIPTDIR

set -euo pipefail

KIT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$KIT/lib.sh"

usage() {
	cat <<'EOF'
Usage: monitor.sh [--once] [--url URL] [--interval SECONDS]

Shows the trading daemon's figures from the telemetry exporter, refreshed every
second (Ctrl-C quits).

  --once            print one frame and exit: status 0 when the daemon is up and
                    publishing, 1 when it is not, 2 when the exporter does not answer
  --url URL         the exporter (default $LLTRADE_TELEMETRY_URL, else
                    http://127.0.0.1:8000)
  --interval S      seconds between frames (default 1)
  -h, --help        this text
EOF
}

ONCE=0 URL=${LLTRADE_TELEMETRY_URL:-http://127.0.0.1:8000} INTERVAL=1
while (($#)); do
	case $1 in
	--once) ONCE=1 ;;
	--url)
		need_value "$@"
		[[ $2 =~ ^https?://[^/]+ ]] || usage_error "--url $2: not an http:// URL"
		URL=${2%/}
		shift
		;;
	--interval)
		need_value "$@"
		[[ $2 =~ ^[0-9]+(\.[0-9]+)?$ && $2 != 0 && $2 != 0.0 ]] || usage_error "--interval $2: not a number of seconds"
		INTERVAL=$2
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*) usage_error "unknown argument: $1" ;;
	esac
	shift
done
for tool in curl jq; do
	command -v "$tool" >/dev/null || die "$tool not found: install it (aws-setup.sh does)"
done

UNITS=(trading-system.service telemetry.service)

# One line per figure; every missing value shows as "-".
# shellcheck disable=SC2016 # jq's own $variables
RENDER='
def dash: if . == null then "-" else . end;
def r1: if . == null then null else (. * 10 | round) / 10 end;
def us: if . == null then "-"
  elif . >= 1000000 then ((. / 10000 | round) / 100 | tostring) + " ms"
  elif . >= 100000 then (. / 1000 | round | tostring) + " us"
  else (. / 1000 | r1 | tostring) + " us" end;
def pct: if . == null then "-" else (. * 100 | round | tostring) + "%" end;
def mib: if . == null then "-" else (. / 1048576 | r1 | tostring) + " MiB" end;
def gib: if . == null then "-" else (. / 1073741824 | r1 | tostring) end;
def dur: if . == null then "-" else (floor as $s
  | "\($s / 86400 | floor)d \($s % 86400 / 3600 | floor)h \($s % 3600 / 60 | floor)m \($s % 60)s") end;
def lat: "p50 \(.p50 | us)  p99 \(.p99 | us)  p99.9 \(.p99_9 | us)  max \(.max | us)";
def reason: sub("^orders_rejected(\\.|\\{reason=\")"; "") | sub("\"\\}$"; "");
(.counter_rates // {}) as $rates
| ([.counters // {} | to_entries[] | select(.key | startswith("orders_rejected") and . != "orders_rejected")]) as $by_reason
| ((.counters // {}).orders_rejected // ($by_reason | map(.value) | add)) as $rejects
| ($rates.orders_rejected // ([$by_reason[] | $rates[.key]] | add)) as $reject_rate
| if .schema == null then
    "daemon      \(.status): \(.reason)"
  else
    "daemon      pid \(.pid), up \(.uptime_s | dur), telemetry \(.status)\(if .status == "ok" then "" else " (\(.reason))" end), heartbeat \(.heartbeat_age_s | if . == null then "-" else . * 1000 | round | tostring end) ms ago, restarts seen \(.daemon_restarts)",
    "throughput  \(.orders_per_s | r1 | dash) orders/s now, \(.orders_per_s_since_start | r1 | dash) orders/s since start (\((.counters // {}).orders_in | dash) orders)",
    "latency     \(.latency_ns | lat)   last \(.interval_s | r1 | dash) s, \(.latency_ns.count | dash) orders",
    "            \(.latency_ns_since_start | lat)   since start, \(.latency_ns_since_start.count | dash) orders",
    "rejects     \($rejects | dash) since start, \($reject_rate | r1 | dash)/s now\(
        [$by_reason[] | select(.value > 0) | "\(.key | reason) \(.value)"] | if length > 0 then ": " + join(", ") else "" end)",
    "sessions    \(.gauges.sessions | dash) logged on, \(.gauges.open_orders | dash) open orders",
    "cpu         daemon \(.cpu.daemon_ratio | pct) of a core on CPU \(.cpu.daemon_cores // [] | map(tostring) | join(",")) \(if .cpu.daemon_pinned then "(pinned)" else "(not pinned)" end), load there \(.cpu.core_ratio // {} | to_entries | map("\(.key): \(.value | pct)") | join(" ")); host \(.cpu.host_ratio | pct) of \(.cpu.host_cpus | dash) CPUs",
    "memory      daemon \(.memory.daemon_rss_bytes | mib) resident; host \(.memory.host_used_bytes | gib) of \(.memory.host_total_bytes | gib) GiB used"
  end
'

have_systemd() { [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; }

services_line() { # the units' states, or without systemd whether the daemon's process lives
	local pid=$1 unit states=""
	if have_systemd; then
		for unit in "${UNITS[@]}"; do
			states+="$unit: $(systemctl is-active "$unit" 2>/dev/null || true)   "
		done
		printf 'services    %s' "${states%   }"
	elif [[ -n $pid ]]; then
		printf 'services    no systemd here; daemon pid %s %s, exporter answering' \
			"$pid" "$([[ -d /proc/$pid ]] && echo running || echo "not running")"
	else
		printf 'services    no systemd here; exporter answering, no daemon publishing'
	fi
}

# One frame on stdout; returns 0 (daemon ok), 1 (daemon not ok) or 2 (no exporter).
frame() {
	local body err status pid
	printf 'lltrade monitor  %s  %s\n' "$URL" "$(date -u '+%F %T UTC')"
	if ! body=$(curl -fsS -m 3 "$URL/latest" 2>&1); then
		err=${body##*curl: }
		if have_systemd; then
			printf 'services    %s: %s\n' "${UNITS[1]}" "$(systemctl is-active "${UNITS[1]}" 2>/dev/null || true)"
		fi
		printf 'exporter    not answering at %s: %s\n' "$URL" "$err"
		printf '            is telemetry.service running? (systemctl status telemetry.service)\n'
		return 2
	fi
	if ! status=$(jq -r '.status // "unknown"' <<<"$body" 2>/dev/null); then
		printf 'exporter    %s/latest did not return JSON: is this the lltrade exporter?\n' "$URL"
		return 2
	fi
	pid=$(jq -r '.pid // .service.daemon.pid // empty' <<<"$body")
	services_line "$pid"
	printf '\n'
	jq -r "$RENDER" <<<"$body"
	[[ $status == ok ]] && return 0
	return 1
}

if ((ONCE)); then
	frame
	exit $?
fi
trap 'printf "\n"; exit 0' INT TERM
clear_screen=""
[[ -t 1 ]] && clear_screen=$'\e[H\e[2J'
while :; do
	out=$(frame) || true
	printf '%s%s\n' "$clear_screen" "$out"
	[[ -n $clear_screen ]] || printf '\n'
	sleep "$INTERVAL"
done
