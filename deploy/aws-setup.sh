#!/usr/bin/env bash
# aws-setup.sh: from a bare EC2 host to a running, tuned lltrade, in one command.
#
# Installs the packages, creates the service users and directories, builds lltrade into a
# virtual environment under the install root, installs the configuration and the systemd
# units, tunes the host, loads the firewall, then starts the services and checks their
# health.  Safe to run again: an upgrade is `git pull` followed by this script.
# shellcheck source-path=SCRIPTDIR

set -euo pipefail

KIT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$KIT/lib.sh"

usage() {
	cat <<'EOF'
Usage: sudo aws-setup.sh [--plan] [options]

Installs and starts lltrade on this host: packages, users, a virtual environment
built from this checkout, /etc/lltrade/lltrade.toml with new account secrets,
the systemd units, host tuning, the firewall; then starts the services and
waits until they are healthy.  Running it again upgrades in place.

Supported: Amazon Linux 2023, Ubuntu 24.04 and 26.04 LTS, Debian 12 and 13.

Options:
  --plan                   print every step; change nothing
  --install-root DIR       default /opt/lltrade (DIR/venv, DIR/deploy, DIR/src)
  --source DIR             the lltrade checkout to build (default: the one holding
                           this script)
  --cpu N                  the daemon's core (default: as installed, else the last CPU)
  --busy-poll              the daemon never sleeps (default on c5/c6g and other
  --no-busy-poll           non-burstable types; off on t3 and when the type is unknown)
  --instance-type T        default: from DMI, else IMDSv2
  --isolate                also isolate the daemon's core on the kernel command line
                           (tune-host.sh --isolate; active after a reboot)
  --no-tune                leave the host's tuning alone
  --no-firewall            leave the firewall alone
  --ssh-from CIDR, --telemetry-from CIDR, --order-entry-from CIDR
                           passed to firewall.sh (repeatable)
  --no-start               install everything but do not (re)start the services
  --os-release FILE        default /etc/os-release
  -h, --help               this text
EOF
}

# -- arguments ------------------------------------------------------------------------------------

INSTALL_ROOT=/opt/lltrade SOURCE="" CPU="" BUSY_POLL="" INSTANCE_TYPE="" ISOLATE=0
TUNE=1 FIREWALL=1 START=1 OS_RELEASE=/etc/os-release
FIREWALL_ARGS=()
while (($#)); do
	case $1 in
	--plan) PLAN=1 ;;
	--install-root)
		need_value "$@"
		[[ $2 == /* ]] || usage_error "--install-root $2: must be an absolute path"
		INSTALL_ROOT=${2%/}
		shift
		;;
	--source)
		need_value "$@"
		[[ -f $2/pyproject.toml ]] || usage_error "--source $2: not an lltrade checkout (no pyproject.toml)"
		SOURCE=$(cd -- "$2" && pwd)
		shift
		;;
	--cpu)
		need_value "$@"
		is_uint "$2" || usage_error "--cpu $2: not a CPU number"
		CPU=$((10#$2))
		shift
		;;
	--busy-poll) BUSY_POLL=1 ;;
	--no-busy-poll) BUSY_POLL=0 ;;
	--instance-type)
		need_value "$@"
		[[ $2 =~ ^[a-z][a-z0-9-]*\.[a-z0-9-]+$ ]] || usage_error "--instance-type $2: not an instance type like c5.xlarge"
		INSTANCE_TYPE=$2
		shift
		;;
	--isolate) ISOLATE=1 ;;
	--no-tune) TUNE=0 ;;
	--no-firewall) FIREWALL=0 ;;
	--ssh-from | --telemetry-from | --order-entry-from)
		need_value "$@"
		is_cidr "$2" || usage_error "$1 $2: not a network like 10.0.0.0/16"
		FIREWALL_ARGS+=("$1" "$2")
		shift
		;;
	--no-start) START=0 ;;
	--os-release)
		need_value "$@"
		OS_RELEASE=$2
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
SOURCE=${SOURCE:-$(cd -- "$KIT/.." && pwd)}
[[ -f $SOURCE/pyproject.toml ]] || die "$SOURCE is not an lltrade checkout: pass --source DIR"
VENV=$INSTALL_ROOT/venv
CONF_DIR=/etc/lltrade
CONFIG=$CONF_DIR/lltrade.toml
ENV_FILE=$CONF_DIR/lltrade.env
UNIT_DIR=/etc/systemd/system

# -- the operating system ---------------------------------------------------------------------------

[[ -r $OS_RELEASE ]] || die "cannot read $OS_RELEASE: is this Linux? (--os-release FILE)"
OS_ID=$(os_release_value "$OS_RELEASE" ID || true)
OS_VERSION=$(os_release_value "$OS_RELEASE" VERSION_ID || true)
OS_NAME=$(os_release_value "$OS_RELEASE" PRETTY_NAME || echo "$OS_ID $OS_VERSION")
TODAY=${LLTRADE_SETUP_TODAY:-$(date -u +%F)} # tests pin the date

SUPPORTED="Amazon Linux 2023, Ubuntu 24.04 or 26.04 LTS, Debian 12 or 13"
refuse() { die "$OS_NAME is not supported: $1. Use $SUPPORTED."; }

# End of support: the vendor's last day of security updates (Debian: the LTS end).
case "$OS_ID:$OS_VERSION" in
amzn:2023) EOL=2029-06-30 PKG=dnf PYTHON=python3.11 ;;
ubuntu:24.04) EOL=2029-05-31 PKG=apt PYTHON=python3 ;;
ubuntu:26.04) EOL=2031-05-31 PKG=apt PYTHON=python3 ;;
debian:12) EOL=2028-06-30 PKG=apt PYTHON=python3 ;;
debian:13) EOL=2030-06-30 PKG=apt PYTHON=python3 ;;
amzn:2) refuse "Amazon Linux 2 reached its end of life on 2026-06-30 and has no Python 3.11" ;;
ubuntu:20.04 | ubuntu:18.04 | ubuntu:16.04) refuse "Ubuntu $OS_VERSION is past its end of standard support" ;;
ubuntu:22.04) refuse "Ubuntu 22.04 ships Python 3.10 and lltrade needs 3.11 or later" ;;
ubuntu:*) refuse "Ubuntu $OS_VERSION is not a long-term support release" ;;
debian:11 | debian:10 | debian:9) refuse "Debian $OS_VERSION is past its end of life" ;;
debian:*) refuse "Debian '$OS_VERSION' (testing or unstable) is not a release" ;;
*) refuse "${OS_ID:-an unknown system} ${OS_VERSION} is not one of the supported systems" ;;
esac
[[ $TODAY < "$EOL" || $TODAY == "$EOL" ]] || refuse "its support ended on $EOL"

((PLAN)) || require_root "aws-setup.sh"

# -- the host: instance type, CPUs --------------------------------------------------------------------

if [[ -z $INSTANCE_TYPE ]]; then
	INSTANCE_TYPE=$(tr -d '[:space:]' 2>/dev/null </sys/devices/virtual/dmi/id/product_name || true)
	if ! [[ $INSTANCE_TYPE =~ ^[a-z][a-z0-9-]*\.[a-z0-9-]+$ ]]; then
		INSTANCE_TYPE=""
		if [[ ${LLTRADE_NO_IMDS:-0} != 1 ]] && command -v curl >/dev/null; then
			token=$(curl -fsS --connect-timeout 1 -m 2 -X PUT \
				-H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
				http://169.254.169.254/latest/api/token 2>/dev/null) &&
				INSTANCE_TYPE=$(curl -fsS --connect-timeout 1 -m 2 \
					-H "X-aws-ec2-metadata-token: $token" \
					http://169.254.169.254/latest/meta-data/instance-type 2>/dev/null) || INSTANCE_TYPE=""
		fi
	fi
fi
if [[ -z $BUSY_POLL ]]; then
	# Busy polling burns a whole vCPU: right on compute instances, ruinous on burstable ones.
	case $INSTANCE_TYPE in
	t[0-9]* | "") BUSY_POLL=0 ;;
	*) BUSY_POLL=1 ;;
	esac
fi

ONLINE=$(cpu_list_expand "$(cat /sys/devices/system/cpu/online 2>/dev/null || echo 0)")
read -r -a ONLINE_CPUS <<<"$ONLINE"
installed_cpu=$(sed -n 's/^LLTRADE_CPU=\([0-9][0-9]*\)$/\1/p' "$ENV_FILE" 2>/dev/null || true)
CPU=${CPU:-${installed_cpu:-${ONLINE_CPUS[${#ONLINE_CPUS[@]} - 1]}}}
[[ " $ONLINE " == *" $CPU "* ]] || usage_error "--cpu $CPU: not an online CPU (online: $(cpu_list_compress "$ONLINE"))"
# The telemetry exporter and everything else keep off the daemon's core (and its SMT
# sibling when there are CPUs enough).
DAEMON_CORES=$CPU
siblings=/sys/devices/system/cpu/cpu$CPU/topology/thread_siblings_list
if ((${#ONLINE_CPUS[@]} >= 4)) && [[ -r $siblings ]]; then
	DAEMON_CORES=$(cpu_list_expand "$(<"$siblings")")
fi
OTHERS=""
for c in "${ONLINE_CPUS[@]}"; do [[ " $DAEMON_CORES " == *" $c "* ]] || OTHERS+="$c "; done
OTHERS=$(cpu_list_compress "${OTHERS:-$CPU}")

say "aws-setup.sh$( ((PLAN)) && echo " --plan"): $OS_NAME ($PKG), ${INSTANCE_TYPE:-unknown instance type};" \
	"install root $INSTALL_ROOT, source $SOURCE; daemon CPU $CPU, other work on CPU $OTHERS," \
	"busy polling $( ((BUSY_POLL)) && echo on || echo off)"

step() { say "== $*"; }

# -- 1. packages -------------------------------------------------------------------------------------

step "packages"
if [[ $PKG == dnf ]]; then
	# curl comes as curl-minimal on Amazon Linux 2023: asking for curl would conflict with it.
	run dnf install -y -q python3.11 python3.11-devel python3.11-pip gcc make libdeflate-devel git tar jq \
		logrotate irqbalance nftables
else
	run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		python3 python3-venv python3-dev build-essential libdeflate-dev git ca-certificates curl jq \
		logrotate irqbalance nftables
fi

# -- 2. users and directories ---------------------------------------------------------------------------

step "users and directories"
NOLOGIN=/usr/sbin/nologin
if ! getent passwd lltrade >/dev/null; then
	run useradd --system --user-group --no-create-home --home-dir /var/lib/lltrade \
		--shell "$NOLOGIN" --comment "lltrade trading daemon" lltrade
fi
if ! getent passwd lltrade-telemetry >/dev/null; then
	run useradd --system --user-group --no-create-home --home-dir / --shell "$NOLOGIN" \
		--groups lltrade --comment "lltrade telemetry exporter" lltrade-telemetry
else
	run usermod --append --groups lltrade lltrade-telemetry
fi
run install -d -m 0755 -o root -g root "$INSTALL_ROOT"
run install -d -m 0750 -o root -g lltrade "$CONF_DIR"

# -- 3. lltrade in a virtual environment -------------------------------------------------------------

step "lltrade into $VENV"
SRC=$INSTALL_ROOT/src
if [[ $SOURCE != "$SRC" ]]; then
	# A clean copy: no virtual environment, build tree or compiled module of the checkout's.
	run rm -rf "$SRC.new"
	run install -d -m 0755 "$SRC.new"
	if ((PLAN)); then
		say "+ copy the checkout's files (git ls-files, or all but build output) from $SOURCE to $SRC.new"
	elif git -C "$SOURCE" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git -C "$SOURCE" ls-files -z --cached --others --exclude-standard |
			tar -C "$SOURCE" --null --files-from=- --ignore-failed-read -cf - |
			tar -C "$SRC.new" -xf -
	else
		tar -C "$SOURCE" --exclude=./.venv --exclude=./build --exclude=./.git --exclude='*.so' \
			--exclude=__pycache__ --exclude='./.*_cache' --exclude=./.hypothesis \
			--exclude=./.benchmarks --exclude=./journal --exclude=./results --exclude=./artifacts \
			-cf - . | tar -C "$SRC.new" -xf -
	fi
	run rm -rf "$SRC"
	run mv "$SRC.new" "$SRC"
fi
if [[ ! -x $VENV/bin/python ]]; then
	run "$PYTHON" -m venv "$VENV"
fi
run "$VENV/bin/python" -m pip install -q --upgrade pip
run rm -rf "$INSTALL_ROOT/wheels"
run "$VENV/bin/python" -m pip wheel -q --no-deps --wheel-dir "$INSTALL_ROOT/wheels" "$SRC"
WHEEL="$INSTALL_ROOT/wheels/lltrade-*.whl"
if ((PLAN)); then
	say "+ $VENV/bin/python -m pip install -q $WHEEL   # and its dependencies"
	say "+ $VENV/bin/python -m pip install -q --force-reinstall --no-deps $WHEEL   # this build, even at the same version"
else
	wheels=("$INSTALL_ROOT"/wheels/lltrade-*.whl)
	[[ -f ${wheels[0]} ]] || die "the build made no wheel in $INSTALL_ROOT/wheels"
	"$VENV/bin/python" -m pip install -q "${wheels[0]}"
	"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "${wheels[0]}"
fi
run "$VENV/bin/python" -c 'import lltrade._book, lltrade._telemetry, telemetry.exporter'

# The kit itself: tune-host.sh runs from here at boot (lltrade-tune.service).
run rm -rf "$INSTALL_ROOT/deploy.new"
run cp -R "$SRC/deploy" "$INSTALL_ROOT/deploy.new"
run rm -rf "$INSTALL_ROOT/deploy"
run mv "$INSTALL_ROOT/deploy.new" "$INSTALL_ROOT/deploy"

# -- 4. configuration -----------------------------------------------------------------------------------

step "configuration in $CONF_DIR"
if [[ -f $CONFIG ]]; then
	say "keeping $CONFIG (checking that it loads)"
	run "$VENV/bin/python" -c 'import sys; from lltrade.config import load_config; load_config(sys.argv[1])' \
		"$CONFIG" || die "$CONFIG does not load (above); fix it, then run aws-setup.sh again"
else
	run "$VENV/bin/python" "$INSTALL_ROOT/deploy/init-config.py" --template "$INSTALL_ROOT/deploy/lltrade.toml" \
		--config "$CONFIG" --secrets "$CONF_DIR/initial-secrets"
	run chgrp lltrade "$CONFIG"
fi
# The environment file: the values this script owns are rewritten, anything you add stays.
if [[ -f $ENV_FILE ]]; then
	ENV_CONTENT=$(<"$ENV_FILE")
else
	ENV_CONTENT="# Environment of the lltrade units; aws-setup.sh owns LLTRADE_CPU and LLTRADE_RUN_FLAGS.
# Where lltrade-telemetry listens (order entry: [server] in lltrade.toml).
LLTRADE_TELEMETRY_HOST=0.0.0.0
LLTRADE_TELEMETRY_PORT=8000"
fi
set_env() { # key value
	local key=$1 value=$2 out="" line found=0
	while IFS= read -r line; do
		if [[ $line == "$key="* ]]; then
			line="$key=$value"
			found=1
		fi
		out+=$line$'\n'
	done <<<"$ENV_CONTENT"
	((found)) || out+="$key=$value"$'\n'
	ENV_CONTENT=${out%$'\n'}
}
set_env LLTRADE_CPU "$CPU"
set_env LLTRADE_RUN_FLAGS "$( ((BUSY_POLL)) && echo --busy-poll)"
printf '%s' "$ENV_CONTENT" | write_file "$ENV_FILE" 0640
run chgrp lltrade "$ENV_FILE"

# -- 5. systemd units ------------------------------------------------------------------------------------

step "systemd units"
# The units name /opt/lltrade; another install root is written into them.
install_unit() { # file in the kit, destination
	if [[ $INSTALL_ROOT == /opt/lltrade ]]; then
		run install -m 0644 "$1" "$2"
	elif ((PLAN)); then
		say "+ sed 's|/opt/lltrade|$INSTALL_ROOT|g' $1 > $2"
	else
		sed "s|/opt/lltrade|$INSTALL_ROOT|g" "$1" | write_file "$2" 0644
	fi
}
for unit in trading-system.service telemetry.service lltrade-tune.service; do
	install_unit "$SRC/deploy/$unit" "$UNIT_DIR/$unit"
done
run install -d -m 0755 "$UNIT_DIR/trading-system.service.d" "$UNIT_DIR/telemetry.service.d"
HELPERS=${OTHERS//,/ }
[[ $OTHERS == "$CPU" ]] && HELPERS=""
write_file "$UNIT_DIR/trading-system.service.d/10-host.conf" 0644 <<EOF
# Written by aws-setup.sh for this host: the daemon's core (LLTRADE_CPU in $ENV_FILE), where
# its event loop pins itself, then the CPUs its helper threads may use (every CPU but the
# daemon's core and its SMT sibling).
[Service]
CPUAffinity=
CPUAffinity=$CPU${HELPERS:+ $HELPERS}
EOF
write_file "$UNIT_DIR/telemetry.service.d/10-host.conf" 0644 <<EOF
# Written by aws-setup.sh for this host: every CPU but the daemon's.
[Service]
CPUAffinity=
CPUAffinity=${OTHERS//,/ }
EOF
run install -m 0644 "$SRC/deploy/logrotate-telemetry" /etc/logrotate.d/lltrade-telemetry
run systemctl daemon-reload
run systemctl enable --quiet trading-system.service telemetry.service lltrade-tune.service

# -- 6. host tuning and firewall -------------------------------------------------------------------------

if ((TUNE)); then
	step "host tuning"
	tune_args=(--apply --daemon-cpu "$CPU")
	((ISOLATE)) && tune_args+=(--isolate)
	[[ -n $INSTANCE_TYPE ]] && tune_args+=(--instance-type "$INSTANCE_TYPE")
	run "$INSTALL_ROOT/deploy/tune-host.sh" "${tune_args[@]}"
fi
if ((FIREWALL)); then
	step "firewall"
	run "$INSTALL_ROOT/deploy/firewall.sh" --apply "${FIREWALL_ARGS[@]}"
fi

# -- 7. start and check ------------------------------------------------------------------------------------

if ((START)); then
	step "start"
	run "$INSTALL_ROOT/deploy/start-services.sh" --restart
fi
if ((PLAN)); then
	say "plan: nothing was changed (run without --plan, as root)"
else
	say "aws-setup.sh: done.  Watch it: $INSTALL_ROOT/deploy/monitor.sh"
	[[ -f $CONF_DIR/initial-secrets ]] &&
		say "The accounts' secrets are in $CONF_DIR/initial-secrets: hand them out, then delete the file."
fi
exit 0
