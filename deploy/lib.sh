# shellcheck shell=bash
# Shared helpers of the lltrade deploy scripts (sourced, never run): messages, the plan/apply
# switch, argument checks, os-release and CPU-list parsing.

PROG=${PROG:-${0##*/}}
PLAN=${PLAN:-0} # 1: print what would be done instead of doing it

say() { printf '%s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
	printf '%s: %s\n' "$PROG" "$*" >&2
	exit 1
}
# A mistake in the command line: exit status 2, like the lltrade commands.
usage_error() {
	printf '%s: %s (see %s --help)\n' "$PROG" "$*" "$PROG" >&2
	exit 2
}

# The words of a command, quoted so that the printed line can be pasted into a shell.
quoted() {
	local out="" word
	for word in "$@"; do
		if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
			out+="$word "
		else
			out+="$(printf '%q' "$word") "
		fi
	done
	printf '%s' "${out% }"
}

# Run a command, or only print it in plan mode.
run() {
	if ((PLAN)); then
		printf '+ %s\n' "$(quoted "$@")"
	else
		"$@"
	fi
}

# Write stdin to a file (mode $2, default 0644), or only show it in plan mode.
write_file() {
	local path=$1 mode=${2:-0644} content
	content=$(cat)
	if ((PLAN)); then
		printf '+ write %s (mode %s):\n' "$path" "$mode"
		printf '%s\n' "$content" | sed 's/^/|   /'
		return
	fi
	local tmp
	tmp=$(mktemp "${path%/*}/.${path##*/}.XXXXXX")
	printf '%s\n' "$content" >"$tmp"
	chmod "$mode" "$tmp"
	mv -f "$tmp" "$path"
}

require_root() {
	((EUID == 0)) || die "$1 needs root: run it with sudo"
}

need_value() { # option value: the option's argument must be present
	[[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value"
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

is_port() { is_uint "$1" && ((10#$1 >= 1 && 10#$1 <= 65535)); }

# An IPv4 or IPv6 network in CIDR notation (a bare address counts as a /32 or /128).
is_cidr() {
	local addr=${1%/*} len="" octet
	[[ $1 == */* ]] && len=${1##*/}
	if [[ $addr =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]]; then
		for octet in ${addr//./ }; do
			((10#$octet <= 255)) || return 1
		done
		[[ -z $len ]] || { is_uint "$len" && ((10#$len <= 32)); }
	elif [[ $addr =~ ^[0-9A-Fa-f:]+$ && $addr == *:* ]]; then
		[[ -z $len ]] || { is_uint "$len" && ((10#$len <= 128)); }
	else
		return 1
	fi
}

is_ipv6() { [[ $1 == *:* ]]; }

# The value of KEY in an os-release file (shell-style KEY=value, value maybe quoted).
os_release_value() {
	local file=$1 key=$2 line value
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line == "$key="* ]] || continue
		value=${line#*=}
		value=${value#[\"\']}
		value=${value%[\"\']}
		printf '%s' "$value"
		return 0
	done <"$file"
	return 1
}

# "0-3,8,10-11" -> "0 1 2 3 8 10 11"
cpu_list_expand() {
	local -a parts cpus=()
	local part i
	IFS=, read -r -a parts <<<"${1//[[:space:]]/}" || true
	for part in "${parts[@]}"; do
		[[ -n $part ]] || continue
		if [[ $part == *-* ]]; then
			for ((i = 10#${part%-*}; i <= 10#${part#*-}; i++)); do cpus+=("$i"); done
		else
			cpus+=("$((10#$part))")
		fi
	done
	printf '%s' "${cpus[*]}"
}

# "3 0 1 2 8 10 11" (any order, repeats allowed) -> "0-3,8,10-11"
cpu_list_compress() {
	local -a seen=()
	local list="" start="" prev="" c
	for c in $1; do seen[10#$c]=1; done
	for c in "${!seen[@]}" ""; do # indices come in ascending order; "" flushes the last run
		if [[ -n $c && -n $prev ]] && ((c == prev + 1)); then
			prev=$c
			continue
		fi
		if [[ -n $start ]]; then
			list+=$start
			[[ $prev == "$start" ]] || list+=-$prev
			list+=,
		fi
		start=$c prev=$c
	done
	printf '%s' "${list%,}"
}

# The CPUs of a kernel hex mask ("ff,ffffffff" or "f"), as a space-separated list.
cpu_mask_expand() {
	local mask=${1//,/} bit=0 i b digit
	local -a cpus=()
	mask=${mask#0x}
	mask=${mask//[[:space:]]/}
	for ((i = ${#mask} - 1; i >= 0; i--)); do
		digit=$((16#${mask:i:1}))
		for ((b = 0; b < 4; b++)); do
			if ((digit >> b & 1)); then cpus+=("$((bit + b))"); fi
		done
		bit=$((bit + 4))
	done
	printf '%s' "${cpus[*]}"
}

# A space-separated CPU list as a kernel hex mask, 32-bit words separated by commas.
cpu_mask_of() {
	local -a words=()
	local c max=0 w
	for c in $1; do ((c > max)) && max=$c; done
	for ((w = 0; w <= max / 32; w++)); do words[w]=0; done
	for c in $1; do words[c / 32]=$((words[c / 32] | 1 << (c % 32))); done
	local out
	out=$(printf '%x' "${words[max / 32]}")
	for ((w = max / 32 - 1; w >= 0; w--)); do out+=$(printf ',%08x' "${words[w]}"); done
	printf '%s' "$out"
}
