#!/usr/bin/env bash
# firewall.sh: the host firewall of an lltrade host.  Inbound, only SSH, the telemetry port
# and (when asked) order entry from the given networks; everything else is dropped
# (replies to outbound traffic, loopback, ICMP and DHCP replies stay allowed).  nftables
# (one table, inet lltrade) or iptables (one chain, LLTRADE-INPUT, per IP family), replaced
# as a whole on every run, so running it again changes nothing.
# shellcheck source-path=SCRIPTDIR

set -euo pipefail

KIT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$KIT/lib.sh"

usage() {
	cat <<'EOF'
Usage: firewall.sh [--plan | --apply | --remove] [options]

Opens only SSH, the telemetry port and, when asked, order entry from the given
networks; drops every other inbound connection.

Actions (default --plan):
  --plan                   print the rules and commands; changes nothing
  --apply                  load the rules (replacing this script's earlier ones) and
                           keep them across reboots (nftables); needs root
  --remove                 delete this script's rules; needs root

Options:
  --backend nft|iptables   default: nft when the nft command exists, else iptables
  --ssh-port N             default 22
  --ssh-from CIDR          networks allowed to SSH (repeatable; default 0.0.0.0/0 and ::/0)
  --telemetry-port N       default 8000 (lltrade-telemetry)
  --telemetry-from CIDR    networks allowed to the telemetry port (repeatable; default the
                           private ranges 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)
  --order-entry-port N     default 9000 (the daemon's [server] port)
  --order-entry-from CIDR  networks allowed to enter orders (repeatable; default none:
                           order entry stays closed)
  --no-persist             with --apply: do not keep the rules across reboots
  -h, --help               this text
EOF
}

ACTION="" BACKEND="" PERSIST=1
SSH_PORT=22 TELEMETRY_PORT=8000 ORDER_PORT=9000
SSH_FROM=() TELEMETRY_FROM=() ORDER_FROM=()
cidr_arg() { # option value
	need_value "$@"
	is_cidr "$2" || usage_error "$1 $2: not a network like 10.0.0.0/16 or 2001:db8::/32"
}
port_arg() {
	need_value "$@"
	is_port "$2" || usage_error "$1 $2: not a port number (1-65535)"
}
while (($#)); do
	case $1 in
	--plan | --apply | --remove)
		[[ -z $ACTION || $ACTION == "${1#--}" ]] || usage_error "choose one of --plan, --apply, --remove"
		ACTION=${1#--}
		;;
	--backend)
		need_value "$@"
		[[ $2 == nft || $2 == iptables ]] || usage_error "--backend $2: use nft or iptables"
		BACKEND=$2
		shift
		;;
	--ssh-port) port_arg "$@" && SSH_PORT=$((10#$2)) && shift ;;
	--telemetry-port) port_arg "$@" && TELEMETRY_PORT=$((10#$2)) && shift ;;
	--order-entry-port) port_arg "$@" && ORDER_PORT=$((10#$2)) && shift ;;
	--ssh-from) cidr_arg "$@" && SSH_FROM+=("$2") && shift ;;
	--telemetry-from) cidr_arg "$@" && TELEMETRY_FROM+=("$2") && shift ;;
	--order-entry-from) cidr_arg "$@" && ORDER_FROM+=("$2") && shift ;;
	--no-persist) PERSIST=0 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) usage_error "unknown argument: $1" ;;
	esac
	shift
done
ACTION=${ACTION:-plan}
((${#SSH_FROM[@]})) || SSH_FROM=(0.0.0.0/0 ::/0)
((${#TELEMETRY_FROM[@]})) || TELEMETRY_FROM=(10.0.0.0/8 172.16.0.0/12 192.168.0.0/16)
ports=("$SSH_PORT" "$TELEMETRY_PORT" "$ORDER_PORT")
[[ $(printf '%s\n' "${ports[@]}" | sort -u | wc -l) -eq 3 ]] ||
	usage_error "the SSH, telemetry and order-entry ports must differ (got ${ports[*]})"
if [[ -z $BACKEND ]]; then
	if command -v nft >/dev/null; then BACKEND=nft; else BACKEND=iptables; fi
fi
[[ $ACTION == plan ]] && PLAN=1
((PLAN)) || require_root "firewall.sh --$ACTION"

# The networks of one IP family (4 or 6) from a list.
family() {
	local want=$1 net
	shift
	for net in "$@"; do
		if is_ipv6 "$net"; then [[ $want == 6 ]] && printf '%s\n' "$net"; else [[ $want == 4 ]] && printf '%s\n' "$net"; fi
	done
	return 0
}

# The allowed (port, networks, what) triples.
SERVICES=(
	"$SSH_PORT|${SSH_FROM[*]}|SSH"
	"$TELEMETRY_PORT|${TELEMETRY_FROM[*]}|telemetry"
)
((${#ORDER_FROM[@]})) && SERVICES+=("$ORDER_PORT|${ORDER_FROM[*]}|order entry")

NFT_TABLE="inet lltrade"
NFT_FILE=/etc/lltrade/firewall.nft

nft_ruleset() {
	local svc port nets what net
	cat <<EOF
# lltrade host firewall (deploy/firewall.sh): inbound only what is listed here.
# Declaring then deleting the table makes loading this file replace it as a whole.
table $NFT_TABLE
delete table $NFT_TABLE
table $NFT_TABLE {
	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid drop
		iifname "lo" accept
		meta l4proto icmp accept
		meta l4proto ipv6-icmp accept
		udp sport 67 udp dport 68 accept comment "DHCP replies"
		udp sport 547 udp dport 546 accept comment "DHCPv6 replies"
EOF
	for svc in "${SERVICES[@]}"; do
		IFS='|' read -r port nets what <<<"$svc"
		# One rule per network: overlapping networks would be an error in one set.
		for net in $nets; do
			printf '\t\ttcp dport %s %s saddr %s accept comment "%s"\n' \
				"$port" "$(is_ipv6 "$net" && echo ip6 || echo ip)" "$net" "$what"
		done
	done
	printf '\t}\n}\n'
}

IPT_CHAIN=LLTRADE-INPUT

ipt_rules() { # 4|6: iptables-restore input for that family
	local v=$1 svc port nets what net
	printf '*filter\n:%s - [0:0]\n' "$IPT_CHAIN"
	printf -- '-A %s -i lo -j ACCEPT\n' "$IPT_CHAIN"
	printf -- '-A %s -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n' "$IPT_CHAIN"
	printf -- '-A %s -m conntrack --ctstate INVALID -j DROP\n' "$IPT_CHAIN"
	if [[ $v == 4 ]]; then
		printf -- '-A %s -p icmp -j ACCEPT\n' "$IPT_CHAIN"
		printf -- '-A %s -p udp --sport 67 --dport 68 -j ACCEPT\n' "$IPT_CHAIN"
	else
		printf -- '-A %s -p ipv6-icmp -j ACCEPT\n' "$IPT_CHAIN"
		printf -- '-A %s -p udp --sport 547 --dport 546 -j ACCEPT\n' "$IPT_CHAIN"
	fi
	for svc in "${SERVICES[@]}"; do
		IFS='|' read -r port nets what <<<"$svc"
		# shellcheck disable=SC2086 # the networks are one word each
		for net in $(family "$v" $nets); do
			printf -- '-A %s -p tcp --dport %s -s %s -m comment --comment "%s" -j ACCEPT\n' \
				"$IPT_CHAIN" "$port" "$net" "$what"
		done
	done
	printf -- '-A %s -j DROP\nCOMMIT\n' "$IPT_CHAIN"
}

# Debian and Ubuntu load /etc/nftables.conf at boot, Amazon Linux /etc/sysconfig/nftables.conf.
nft_boot_conf() {
	if [[ -f /etc/sysconfig/nftables.conf || -d /etc/sysconfig ]]; then
		printf '/etc/sysconfig/nftables.conf'
	else
		printf '/etc/nftables.conf'
	fi
}

apply_nft() {
	local conf include
	if ! ((PLAN)); then
		command -v nft >/dev/null || die "nft not found: install nftables, or use --backend iptables"
	fi
	if ((!PERSIST)); then
		if ((PLAN)); then
			say "+ nft -f - <<'EOF'"
			nft_ruleset
			say "EOF"
		else
			nft_ruleset | nft -f - || die "nft refused the ruleset (firewall.sh --plan shows it)"
		fi
		return 0
	fi
	# Kept in a file that the boot-time nftables service includes, and loaded from there.
	[[ -d ${NFT_FILE%/*} ]] || run install -d -m 0750 "${NFT_FILE%/*}"
	nft_ruleset | write_file "$NFT_FILE" 0600
	run nft -f "$NFT_FILE" || die "nft refused the ruleset in $NFT_FILE"
	conf=$(nft_boot_conf)
	include="include \"$NFT_FILE\""
	if ((PLAN)); then
		say "+ grep -qxF '$include' $conf || echo '$include' >> $conf"
	elif ! grep -qxF -- "$include" "$conf" 2>/dev/null; then
		printf '%s\n' "$include" >>"$conf"
	fi
	run systemctl enable nftables.service
}

apply_iptables() {
	local v cmd rules
	for v in 4 6; do
		cmd=iptables
		[[ $v == 6 ]] && cmd=ip6tables
		rules=$(ipt_rules "$v")
		if ((PLAN)); then
			say "+ $cmd-restore --noflush <<'EOF'"
			printf '%s\n' "$rules"
			say "EOF"
			say "+ $cmd -C INPUT -j $IPT_CHAIN || $cmd -I INPUT 1 -j $IPT_CHAIN"
		else
			command -v "$cmd-restore" >/dev/null || die "$cmd-restore not found: install iptables"
			printf '%s\n' "$rules" | "$cmd-restore" --noflush || die "$cmd-restore refused the rules"
			"$cmd" -C INPUT -j "$IPT_CHAIN" 2>/dev/null || "$cmd" -I INPUT 1 -j "$IPT_CHAIN"
		fi
	done
	((PERSIST)) &&
		say "note: iptables rules last until reboot; keep them with your distribution's tool" \
			"(iptables-services on Amazon Linux, iptables-persistent on Debian/Ubuntu)"
	return 0
}

remove() {
	if [[ $BACKEND == nft ]]; then
		if nft list table inet lltrade >/dev/null 2>&1; then nft delete table inet lltrade; fi
		local conf
		conf=$(nft_boot_conf)
		if [[ -f $conf ]] && grep -qxF -- "include \"$NFT_FILE\"" "$conf"; then
			grep -vxF -- "include \"$NFT_FILE\"" "$conf" >"$conf.tmp" || true
			cat "$conf.tmp" >"$conf" && rm -f "$conf.tmp"
		fi
		rm -f "$NFT_FILE"
	else
		local cmd
		for cmd in iptables ip6tables; do
			while "$cmd" -D INPUT -j "$IPT_CHAIN" 2>/dev/null; do :; done
			"$cmd" -F "$IPT_CHAIN" 2>/dev/null || true
			"$cmd" -X "$IPT_CHAIN" 2>/dev/null || true
		done
	fi
	say "firewall.sh: removed the lltrade rules ($BACKEND)"
}

summary="SSH $SSH_PORT from ${SSH_FROM[*]}; telemetry $TELEMETRY_PORT from ${TELEMETRY_FROM[*]}; "
if ((${#ORDER_FROM[@]})); then
	summary+="order entry $ORDER_PORT from ${ORDER_FROM[*]}"
else
	summary+="order entry closed (no --order-entry-from)"
fi

case $ACTION in
remove) remove ;;
*)
	say "firewall.sh --$ACTION ($BACKEND): inbound allowed: $summary; everything else dropped"
	if [[ $BACKEND == nft ]]; then apply_nft; else apply_iptables; fi
	((PLAN)) || say "firewall.sh: rules loaded"
	;;
esac
