#!/usr/bin/env bash
# start-services.sh: start (or restart) the lltrade services and wait until they are healthy.
# systemctl start returns for trading-system.service once the daemon said READY=1, i.e.
# after journal recovery, listening; then the exporter's /health must report a fresh
# heartbeat.
# shellcheck source-path=SCRIPTDIR

set -euo pipefail

KIT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$KIT/lib.sh"

usage() {
	cat <<'EOF_USAGE'
Usage: start-services.sh [--restart] [--timeout SECONDS] [--url URL]

Starts telemetry.service and trading-system.service, then waits until the
telemetry exporter reports the daemon healthy.

  --restart          restart services that are running (after an upgrade)
  --timeout S        how long to wait for health (default 60)
  --url URL          the exporter (default $LLTRADE_TELEMETRY_URL, else
                     http://127.0.0.1:8000)
  -h, --help         this text
EOF_USAGE
}

ACTION=start TIMEOUT=60 URL=${LLTRADE_TELEMETRY_URL:-http://127.0.0.1:8000}
while (($#)); do
	case $1 in
	--restart) ACTION=restart ;;
	--timeout)
		need_value "$@"
		{ is_uint "$2" && ((10#$2 > 0)); } || usage_error "--timeout $2: not a number of seconds"
		TIMEOUT=$((10#$2))
		shift
		;;
	--url)
		need_value "$@"
		URL=${2%/}
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
command -v systemctl >/dev/null || die "systemctl not found: the services run under systemd"
command -v curl >/dev/null || die "curl not found: install it (aws-setup.sh does)"

explain() { # unit: why it is not running, from systemd and its journal
	systemctl status --no-pager --lines=0 "$1" >&2 || true
	journalctl --unit "$1" --no-pager --lines 20 --output cat >&2 2>/dev/null || true
}

# The exporter first: it waits for the daemon's telemetry file and reports its start.
for unit in telemetry.service trading-system.service; do
	if ! systemctl "$ACTION" "$unit"; then
		explain "$unit"
		die "$unit did not start (above); see journalctl -u $unit"
	fi
done

deadline=$((SECONDS + TIMEOUT))
while :; do
	health=$(curl -fsS -m 2 "$URL/health" 2>/dev/null) && break
	if ((SECONDS >= deadline)); then
		say "$(curl -sS -m 2 "$URL/health" 2>&1 || true)" >&2
		die "the daemon did not report healthy at $URL/health within ${TIMEOUT}s"
	fi
	sleep 1
done
say "start-services.sh: $(systemctl is-active trading-system.service) trading-system.service," \
	"$(systemctl is-active telemetry.service) telemetry.service; $URL/health: $health"
