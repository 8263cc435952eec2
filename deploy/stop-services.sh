#!/usr/bin/env bash
# stop-services.sh: stop the lltrade services.  The daemon stops gracefully on SIGTERM: it
# tells every session, cancels what cancel-on-disconnect asks for and writes a snapshot, so
# the next start recovers quickly.
# shellcheck source-path=SCRIPTDIR

set -euo pipefail

KIT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$KIT/lib.sh"

usage() {
	cat <<'EOF_USAGE'
Usage: stop-services.sh [--daemon-only]

Stops trading-system.service, then telemetry.service.

  --daemon-only      leave the telemetry exporter running (it reports the daemon
                     as absent until it starts again)
  -h, --help         this text
EOF_USAGE
}

UNITS=(trading-system.service telemetry.service)
while (($#)); do
	case $1 in
	--daemon-only) UNITS=(trading-system.service) ;;
	-h | --help)
		usage
		exit 0
		;;
	*) usage_error "unknown argument: $1" ;;
	esac
	shift
done
command -v systemctl >/dev/null || die "systemctl not found: the services run under systemd"

status=0
for unit in "${UNITS[@]}"; do
	if ! systemctl stop "$unit"; then
		warn "$unit did not stop cleanly; see journalctl -u $unit"
		status=1
	fi
done
for unit in trading-system.service telemetry.service; do
	say "stop-services.sh: $unit: $(systemctl is-active "$unit" 2>/dev/null || true)"
done
exit "$status"
