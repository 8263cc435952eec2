#!/usr/bin/env bash
# tune-host.sh: tune an EC2 host for the lltrade daemon, with a profile per instance family.
#
# What it manages: the CPU governor (where cpufreq exists), C-states, transparent hugepages,
# explicit hugepages, swap (also in fstab), vm and network sysctls, irqbalance and IRQ
# affinity away from the daemon's core, and, on request, kernel boot arguments for core
# isolation.  --apply saves every previous value under /var/lib/lltrade-tune before changing
# it; --revert puts them back.  docs/deploy.md describes each setting and profile.
# shellcheck source-path=SCRIPTDIR

set -euo pipefail
shopt -s nullglob

KIT=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$KIT/lib.sh"

usage() {
	cat <<'EOF'
Usage: tune-host.sh [--plan | --apply | --check | --revert] [options]

Tunes this host for the lltrade daemon: CPU governor, C-states, transparent
hugepages, explicit hugepages, swap, vm and network sysctls, irqbalance and IRQ
affinity away from the daemon's core, and (with --isolate) the kernel boot
arguments isolcpus, nohz_full and rcu_nocbs.  The profile follows the instance
family: t3 (burstable), c6g (Graviton, arm64), c5 (Intel).

Actions (default --plan):
  --plan              show what would change; changes nothing
  --apply             apply; every previous value is saved first (needs root)
  --check             report drift; exit status 1 when the host is not tuned
  --revert            restore the values saved by the first --apply (needs root)

Options:
  --instance-type T   the instance type, e.g. c5.xlarge (default: from DMI, then IMDSv2)
  --daemon-cpu N      the daemon's core (default: LLTRADE_CPU in /etc/lltrade/lltrade.env,
                      else the value of the last --apply, else the last CPU)
  --isolate           also put core isolation (and the profile's C-state limit) on the
                      kernel command line; active after the next reboot
  --no-isolate        leave the kernel command line alone (the default)
  --hugepages N       reserve N hugepages of the default size (default: leave as is)
  --no-imds           never ask the instance metadata service (also LLTRADE_NO_IMDS=1)
  --root DIR          work on DIR as the root file system (a fake /proc and /sys in tests,
                      an image): implies --no-imds; commands run only from DIR's own
                      sbin/bin directories
  -q, --quiet         print changes, drift, failures and notes only
  -h, --help          this text

Exit status: 0 tuned (or done), 1 drift or a failed step, 2 a usage mistake.
EOF
}

# -- arguments --------------------------------------------------------------------------------

ACTION="" ROOT=/ INSTANCE_TYPE="" USE_IMDS=1 DAEMON_CPU="" ISOLATE="" HUGEPAGES="" QUIET=0
while (($#)); do
	case $1 in
	--plan | --apply | --check | --revert)
		[[ -z $ACTION || $ACTION == "${1#--}" ]] ||
			usage_error "choose one of --plan, --apply, --check, --revert"
		ACTION=${1#--}
		;;
	--root)
		need_value "$@"
		ROOT=$2
		shift
		;;
	--instance-type)
		need_value "$@"
		[[ $2 =~ ^[a-z][a-z0-9-]*\.[a-z0-9-]+$ ]] ||
			usage_error "--instance-type $2: not an instance type like c5.xlarge"
		INSTANCE_TYPE=$2
		shift
		;;
	--daemon-cpu)
		need_value "$@"
		is_uint "$2" || usage_error "--daemon-cpu $2: not a CPU number"
		DAEMON_CPU=$((10#$2))
		shift
		;;
	--hugepages)
		need_value "$@"
		is_uint "$2" || usage_error "--hugepages $2: not a count"
		HUGEPAGES=$((10#$2))
		shift
		;;
	--isolate) ISOLATE=1 ;;
	--no-isolate) ISOLATE=0 ;;
	--no-imds) USE_IMDS=0 ;;
	-q | --quiet) QUIET=1 ;;
	-h | --help)
		usage
		exit 0
		;;
	*) usage_error "unknown argument: $1" ;;
	esac
	shift
done
ACTION=${ACTION:-plan}
[[ -d $ROOT ]] || usage_error "--root $ROOT: no such directory"
ROOT=$(cd -- "$ROOT" && pwd -P)
R=${ROOT%/}                        # prefix of every path: empty for the real root
[[ -z $R ]] || USE_IMDS=0          # another root is not this machine
[[ ${LLTRADE_NO_IMDS:-0} == 1 ]] && USE_IMDS=0
if [[ -z $R && ($ACTION == apply || $ACTION == revert) ]]; then
	require_root "tune-host.sh --$ACTION"
fi

STATE=$R/var/lib/lltrade-tune # settings, the saved originals, swaps turned off
SAVED=$STATE/saved
CPU_SYS=$R/sys/devices/system/cpu
MARK="#lltrade-tune# " # prefix of the fstab lines --apply comments out

# -- output -----------------------------------------------------------------------------------

CHANGES=0 DRIFT=0 FAILED=0
NOTES=()

report() { # status text: one line per setting
	((QUIET)) && [[ $1 == ok ]] && return 0
	printf '  %-9s %s\n' "$1" "$2"
}
note() { NOTES+=("$*"); }
failed() {
	report FAILED "$*"
	FAILED=$((FAILED + 1))
}

# -- files and commands under the root ------------------------------------------------------------

# A command from the root's own directories (a fake tree brings its stand-ins), or from PATH
# on the real root.
find_cmd() {
	local dir
	if [[ -z $R ]]; then
		command -v "$1" 2>/dev/null
		return
	fi
	for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
		if [[ -x $R$dir/$1 ]]; then
			printf '%s' "$R$dir/$1"
			return 0
		fi
	done
	return 1
}

# Run a command found by find_cmd; a missing one is a failed step naming what to do by hand.
run_cmd() {
	local cmd
	if ! cmd=$(find_cmd "$1"); then
		failed "$1 not found: run '$(quoted "$@")' yourself"
		return 1
	fi
	shift
	if ! "$cmd" "$@"; then
		failed "$(quoted "${cmd##*/}" "$@") failed"
		return 1
	fi
}

# The value a kernel knob holds: the [selected] word of a choice file, else its words.
knob_value() {
	local content words
	content=$(<"$1") || return 1
	if [[ $content =~ \[([^]]+)\] ]]; then
		printf '%s' "${BASH_REMATCH[1]}"
	else
		read -r -a words <<<"$content" || true
		printf '%s' "${words[*]}"
	fi
}

# Write a kernel knob.  A real choice file shows "a [b] c" after "b" is written; under
# another root nothing does that for us, so the bracket moves here.
write_knob() {
	local path=$1 value=$2
	if [[ -n $R ]]; then
		local content w out=""
		content=$(<"$path")
		if [[ $content == *\[*\]* ]]; then
			local -a words
			read -r -a words <<<"${content//[\[\]]/}"
			for w in "${words[@]}"; do
				if [[ $w == "$value" ]]; then out+="[$w] "; else out+="$w "; fi
			done
			value=${out% }
		fi
	fi
	{ printf '%s\n' "$value" >"$path"; } 2>/dev/null
}

# -- saved originals ------------------------------------------------------------------------------
# manifest: "kind<TAB>path" per saved thing, in the order saved; kinds: knob (a kernel value),
# file (a copy kept under files/), absent (did not exist), newdir (created by us).

declare -A SAVED_KIND=()
if [[ -f $SAVED/manifest ]]; then
	while IFS=$'\t' read -r kind rel; do SAVED_KIND[$rel]=$kind; done <"$SAVED/manifest"
fi

save() { # kind path: keep the original once; the first --apply's values are what revert restores
	local kind=$1 path=$2 rel=${2#"$R"}
	[[ -n ${SAVED_KIND[$rel]:-} ]] && return 0
	mkdir -p "$SAVED/files${rel%/*}"
	if [[ $kind == newdir ]]; then
		:
	elif [[ -e $path ]]; then
		if [[ $kind == knob ]]; then cat -- "$path" >"$SAVED/files$rel"; else cp -p -- "$path" "$SAVED/files$rel"; fi
	else
		kind=absent
	fi
	printf '%s\t%s\n' "$kind" "$rel" >>"$SAVED/manifest"
	SAVED_KIND[$rel]=$kind
}

ensure_dir() { # create a directory (and its missing parents), remembering what we created
	local dir=$1 missing=()
	while [[ ! -d $dir ]]; do
		missing=("$dir" "${missing[@]}")
		dir=${dir%/*}
	done
	for dir in "${missing[@]}"; do
		mkdir "$dir"
		save newdir "$dir"
	done
}

# -- the host: instance type, family, CPUs ----------------------------------------------------------

dmi_instance_type() {
	local file value
	for file in product_name product_version; do
		[[ -r $R/sys/devices/virtual/dmi/id/$file ]] || continue
		value=$(<"$R/sys/devices/virtual/dmi/id/$file")
		value=${value//[[:space:]]/}
		if [[ $value =~ ^[a-z][a-z0-9-]*\.[a-z0-9-]+$ ]]; then
			printf '%s' "$value"
			return 0
		fi
	done
	return 1
}

imds_instance_type() { # IMDSv2: a session token first, one second at most for each call
	local token
	command -v curl >/dev/null || return 1
	token=$(curl -fsS --connect-timeout 1 -m 2 -X PUT \
		-H 'X-aws-ec2-metadata-token-ttl-seconds: 60' \
		http://169.254.169.254/latest/api/token 2>/dev/null) || return 1
	curl -fsS --connect-timeout 1 -m 2 -H "X-aws-ec2-metadata-token: $token" \
		http://169.254.169.254/latest/meta-data/instance-type 2>/dev/null
}

setting() { # key: a value saved by the last --apply
	local line
	[[ -f $STATE/settings ]] || return 1
	while IFS= read -r line; do
		[[ $line == "$1="* ]] && printf '%s' "${line#*=}" && return 0
	done <"$STATE/settings"
	return 1
}

TYPE_SOURCE="--instance-type"
if [[ -z $INSTANCE_TYPE ]]; then
	if INSTANCE_TYPE=$(dmi_instance_type); then
		TYPE_SOURCE=DMI
	elif ((USE_IMDS)) && INSTANCE_TYPE=$(imds_instance_type) &&
		[[ $INSTANCE_TYPE =~ ^[a-z][a-z0-9-]*\.[a-z0-9-]+$ ]]; then
		TYPE_SOURCE=IMDSv2
	elif INSTANCE_TYPE=$(setting instance_type); then
		TYPE_SOURCE="the last --apply"
	else
		INSTANCE_TYPE="" TYPE_SOURCE=none
	fi
fi
FAMILY=${INSTANCE_TYPE%%.*}

# Profile knobs: PROFILE, ARCH, GOVERNOR (1: set performance where cpufreq exists),
# CSTATE_MAX_US (disable idle states with a longer exit latency; empty: leave them),
# BOOT_EXTRA (added to the isolation boot arguments).
case $FAMILY in
t[0-9]*)
	PROFILE=t3 GOVERNOR=0 CSTATE_MAX_US="" BOOT_EXTRA=""
	if [[ $FAMILY =~ ^t[0-9]+g ]]; then ARCH=arm64; else ARCH=x86_64; fi
	note "$INSTANCE_TYPE is burstable: the daemon's core runs on CPU credits, and a busy-polling" \
		"daemon spends them all (100% of its vCPU); once they are gone the vCPU is held to its" \
		"baseline. Run it in unlimited mode: aws ec2 modify-instance-credit-specification" \
		"--instance-credit-specification 'InstanceId=<id>,CpuCredits=unlimited', and keep" \
		"busy polling off (the default for t3 in aws-setup.sh)"
	note "t3: the hypervisor owns frequency and C-states: no governor or C-state control"
	;;
[a-z]*[0-9]g*)
	PROFILE=c6g ARCH=arm64 GOVERNOR=1 CSTATE_MAX_US=2 BOOT_EXTRA=""
	note "c6g (Graviton2, arm64): one vCPU is one physical core (no SMT sibling to keep idle);" \
		"the clock is fixed (no cpufreq) and the only idle state is WFI"
	;;
[a-z]*[0-9]*)
	PROFILE=c5 ARCH=x86_64 GOVERNOR=1 CSTATE_MAX_US=2
	BOOT_EXTRA="intel_idle.max_cstate=1 processor.max_cstate=1"
	[[ $FAMILY == c5* ]] || note "$FAMILY: no profile of its own; using the c5 (x86 Nitro) profile"
	[[ $FAMILY =~ ^[a-z]+[0-9]+a ]] && BOOT_EXTRA="processor.max_cstate=1"
	;;
*)
	PROFILE=generic ARCH="" GOVERNOR=1 CSTATE_MAX_US=2 BOOT_EXTRA=""
	note "instance type unknown (no --instance-type, no EC2 product name in DMI$( ((USE_IMDS)) &&
		echo ", no IMDS answer")): generic settings only"
	;;
esac
if [[ -z $R && -n $ARCH ]]; then
	machine=$(uname -m)
	[[ $machine == aarch64 ]] && machine=arm64
	[[ $machine == "$ARCH" ]] ||
		warn "$INSTANCE_TYPE is $ARCH but this kernel runs on $machine: is --instance-type right?"
fi

ONLINE=""
if [[ -r $CPU_SYS/online ]]; then
	ONLINE=$(cpu_list_expand "$(<"$CPU_SYS/online")")
else
	for d in "$CPU_SYS"/cpu[0-9]*; do ONLINE+="${d##*cpu} "; done
	ONLINE=$(cpu_list_expand "$(cpu_list_compress "$ONLINE")")
fi
read -r -a ONLINE_CPUS <<<"$ONLINE"
NCPU=${#ONLINE_CPUS[@]}
((NCPU > 0)) || die "no CPUs found under $R/sys/devices/system/cpu: is --root right?"

env_cpu() { # LLTRADE_CPU from the installed daemon's environment file
	local line
	[[ -r $R/etc/lltrade/lltrade.env ]] || return 1
	while IFS= read -r line; do
		if [[ $line =~ ^[[:space:]]*LLTRADE_CPU=[\"\']?([0-9]+)[\"\']?[[:space:]]*$ ]]; then
			printf '%s' "${BASH_REMATCH[1]}"
			return 0
		fi
	done <"$R/etc/lltrade/lltrade.env"
	return 1
}
CPU_SOURCE=--daemon-cpu
if [[ -z $DAEMON_CPU ]]; then
	if DAEMON_CPU=$(env_cpu); then
		CPU_SOURCE=/etc/lltrade/lltrade.env
	elif DAEMON_CPU=$(setting daemon_cpu); then
		CPU_SOURCE="the last --apply"
	else
		DAEMON_CPU=${ONLINE_CPUS[NCPU - 1]} CPU_SOURCE="the last CPU"
	fi
fi
[[ " $ONLINE " == *" $DAEMON_CPU "* ]] ||
	usage_error "--daemon-cpu $DAEMON_CPU: not an online CPU (online: $(cpu_list_compress "$ONLINE"))"
[[ -n $ISOLATE ]] || ISOLATE=$(setting isolate || echo 0)
[[ -n $HUGEPAGES ]] || HUGEPAGES=$(setting hugepages || true)

# The daemon's cores: its CPU, plus its SMT siblings when there are enough CPUs left for the
# rest of the system (with 2 vCPUs the sibling is all the system has).
ISOLATED=$DAEMON_CPU
siblings=$CPU_SYS/cpu$DAEMON_CPU/topology/thread_siblings_list
if [[ -r $siblings ]]; then
	sib=$(cpu_list_expand "$(<"$siblings")")
	if [[ $sib != "$DAEMON_CPU" ]]; then
		if ((NCPU >= 4)); then
			ISOLATED=$sib
		else
			note "CPU $DAEMON_CPU shares its core with CPU(s) $(cpu_list_compress "$sib") (SMT):" \
				"too few CPUs to keep the sibling free"
		fi
	fi
fi
HOUSEKEEPING=""
for c in "${ONLINE_CPUS[@]}"; do [[ " $ISOLATED " == *" $c "* ]] || HOUSEKEEPING+="$c "; done
HOUSEKEEPING=${HOUSEKEEPING% }
ISOLATED_LIST=$(cpu_list_compress "$ISOLATED")
HOUSEKEEPING_LIST=$(cpu_list_compress "$HOUSEKEEPING")

# -- settings: kernel knobs ---------------------------------------------------------------------

# Normalise a value for comparison: CPU lists and masks compare as sets.
normal() { # kind value
	case $1 in
	cpulist) cpu_list_compress "$(cpu_list_expand "$2")" ;;
	cpumask) cpu_list_compress "$(cpu_mask_expand "$2")" ;;
	*) printf '%s' "$2" ;;
	esac
}

# One kernel value: report, check or set it.
knob() { # path want label [kind]
	local path=$1 want=$2 label=$3 kind=${4:-plain} have
	if ! have=$(knob_value "$path" 2>/dev/null); then
		failed "$label: cannot read ${path#"$R"}"
		return 0
	fi
	if [[ $(normal "$kind" "$have") == "$(normal "$kind" "$want")" ]]; then
		report ok "$label = $want"
		return 0
	fi
	case $ACTION in
	plan)
		report change "$label: $have -> $want"
		CHANGES=$((CHANGES + 1))
		;;
	check)
		if [[ $kind == cpulist && -f $STATE/unmovable && " $(<"$STATE/unmovable") " == *" ${path#"$R"} "* ]]; then
			report ok "$label = $have (the kernel does not let it move)"
		else
			report DRIFT "$label: $have (want $want)"
			DRIFT=$((DRIFT + 1))
		fi
		;;
	apply)
		save knob "$path"
		if write_knob "$path" "$want" &&
			[[ $(normal "$kind" "$(knob_value "$path")") == "$(normal "$kind" "$want")" ]]; then
			report set "$label: $have -> $want"
			CHANGES=$((CHANGES + 1))
		elif [[ $kind == cpulist && $path == */proc/irq/* ]]; then
			report ok "$label = $have (the kernel does not let it move)"
			printf '%s ' "${path#"$R"}" >>"$STATE/unmovable"
		else
			failed "$label: the kernel kept $(knob_value "$path") (wanted $want)"
		fi
		;;
	esac
}

governor() {
	local dirs=("$CPU_SYS"/cpu[0-9]*/cpufreq) dir avail cpu
	if ((!GOVERNOR)); then
		return 0
	fi
	if ((${#dirs[@]} == 0)); then
		note "no cpufreq: the hypervisor sets the clock, there is no governor to choose"
		return 0
	fi
	for dir in "${dirs[@]}"; do
		avail=$(<"$dir/scaling_available_governors") || avail=""
		if [[ " $avail " != *" performance "* ]]; then
			note "${dir#"$R"}: no performance governor (available: $avail)"
			continue
		fi
		cpu=${dir%/cpufreq}
		knob "$dir/scaling_governor" performance "CPU governor of ${cpu##*/}"
	done
}

cstates() {
	local states=("$CPU_SYS"/cpu[0-9]*/cpuidle/state[0-9]*) state latency name cpu
	[[ -n $CSTATE_MAX_US ]] || return 0
	if ((${#states[@]} == 0)); then
		note "no cpuidle states exposed: nothing to limit"
		return 0
	fi
	for state in "${states[@]}"; do
		[[ -r $state/latency && -e $state/disable ]] || continue
		latency=$(<"$state/latency")
		((latency > CSTATE_MAX_US)) || continue
		name=$(<"$state/name")
		cpu=${state%/cpuidle/*}
		knob "$state/disable" 1 "idle state $name (exit ${latency} us) on ${cpu##*/}"
	done
}

memory() {
	local thp=$R/sys/kernel/mm/transparent_hugepage size dir
	if [[ -f $thp/enabled ]]; then
		knob "$thp/enabled" never "transparent hugepages"
		[[ -f $thp/defrag ]] && knob "$thp/defrag" never "transparent hugepage defrag"
	else
		note "no transparent hugepage control in this kernel"
	fi
	[[ -n $HUGEPAGES ]] || return 0
	size=$(sed -n 's/^Hugepagesize:[[:space:]]*\([0-9]*\) kB$/\1/p' "$R/proc/meminfo" 2>/dev/null)
	dir=$R/sys/kernel/mm/hugepages/hugepages-${size}kB
	if [[ -z $size || ! -f $dir/nr_hugepages ]]; then
		failed "explicit hugepages: no default hugepage size in /proc/meminfo"
		return 0
	fi
	knob "$dir/nr_hugepages" "$HUGEPAGES" "hugepages of ${size} kB reserved"
}

SYSCTL_SRC=$KIT/sysctl/90-lltrade.conf
SYSCTL_DST=$R/etc/sysctl.d/90-lltrade.conf

sysctls() {
	local line key value path
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line =~ ^[[:space:]]*([a-z0-9_.]+)[[:space:]]*=[[:space:]]*(.*[^[:space:]])[[:space:]]*$ ]] ||
			continue
		key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
		read -r -a words <<<"$value"
		path=$R/proc/sys/${key//.//}
		if [[ -f $path ]]; then
			knob "$path" "${words[*]}" "$key"
		else
			note "sysctl $key does not exist in this kernel: skipped"
		fi
	done <"$SYSCTL_SRC"
	install_file "$SYSCTL_DST" "$(<"$SYSCTL_SRC")" "sysctl settings for boot"
}

# A whole file with the given content (a trailing newline is added).
install_file() { # path content label
	local path=$1 content=$2 label=$3 rel=${1#"$R"}
	if [[ -f $path && $(<"$path") == "$content" ]]; then
		report ok "$label: $rel"
		return 0
	fi
	case $ACTION in
	plan)
		report change "$label: write $rel"
		CHANGES=$((CHANGES + 1))
		;;
	check)
		report DRIFT "$label: $rel $([[ -f $path ]] && echo differs || echo missing)"
		DRIFT=$((DRIFT + 1))
		;;
	apply)
		ensure_dir "${path%/*}"
		save file "$path"
		printf '%s\n' "$content" >"$path"
		report set "$label: wrote $rel"
		CHANGES=$((CHANGES + 1))
		;;
	esac
}

# -- settings: swap ---------------------------------------------------------------------------------

active_swaps() { # devices in /proc/swaps
	local dev rest
	[[ -r $R/proc/swaps ]] || return 0
	{
		read -r _ || true
		while read -r dev rest; do [[ -n $dev ]] && printf '%s\n' "$dev"; done
	} <"$R/proc/swaps"
}

swap() {
	local dev fstab=$R/etc/fstab line fields out="" found=0
	while IFS= read -r dev; do
		[[ -n $dev ]] || continue
		case $ACTION in
		plan)
			report change "swap: swapoff $dev"
			CHANGES=$((CHANGES + 1))
			;;
		check)
			report DRIFT "swap: $dev is in use"
			DRIFT=$((DRIFT + 1))
			;;
		apply)
			mkdir -p "$STATE"
			grep -qxF -- "$dev" "$STATE/swaps" 2>/dev/null || printf '%s\n' "$dev" >>"$STATE/swaps"
			if run_cmd swapoff "$dev"; then
				report set "swap: swapoff $dev"
				CHANGES=$((CHANGES + 1))
			fi
			;;
		esac
	done < <(active_swaps)
	[[ -n $(active_swaps) ]] || report ok "swap: none in use"

	[[ -f $fstab ]] || return 0
	while IFS= read -r line || [[ -n $line ]]; do
		read -r -a fields <<<"$line" || true
		if [[ ${fields[0]:-#} != \#* && ${fields[2]:-} == swap ]]; then
			found=$((found + 1))
			case $ACTION in
			plan) report change "fstab: comment out '$line'" ;;
			check) report DRIFT "fstab: swap entry '$line'" ;;
			apply) report set "fstab: commented out '$line'" ;;
			esac
			line=$MARK$line
		fi
		out+=$line$'\n'
	done <"$fstab"
	if ((found == 0)); then
		report ok "fstab: no swap entry"
	elif [[ $ACTION == check ]]; then
		DRIFT=$((DRIFT + found))
	else
		CHANGES=$((CHANGES + found))
		if [[ $ACTION == apply ]]; then
			printf '%s' "$out" >"$fstab" # in place: mode and owner stay
		fi
	fi
}

# -- settings: interrupts ---------------------------------------------------------------------------

irqbalance_conf() {
	if [[ -d $R/etc/sysconfig ]]; then printf '%s' "$R/etc/sysconfig/irqbalance"; else printf '%s' "$R/etc/default/irqbalance"; fi
}

irqbalance() {
	local conf have="" line out=""
	conf=$(irqbalance_conf)
	if ! find_cmd irqbalance >/dev/null && [[ ! -f $conf ]]; then
		note "irqbalance is not installed: IRQ affinity is set directly only"
		return 0
	fi
	if [[ -f $conf ]]; then
		while IFS= read -r line || [[ -n $line ]]; do
			[[ $line =~ ^[[:space:]]*IRQBALANCE_BANNED_CPULIST=[\"\']?([^\"\']*)[\"\']?[[:space:]]*$ ]] &&
				have=${BASH_REMATCH[1]}
		done <"$conf"
	fi
	if [[ -n $have && $(normal cpulist "$have") == "$ISOLATED_LIST" ]]; then
		report ok "irqbalance keeps off CPU $ISOLATED_LIST"
		return 0
	fi
	case $ACTION in
	plan)
		report change "irqbalance: IRQBALANCE_BANNED_CPULIST=$ISOLATED_LIST in ${conf#"$R"}, restart it"
		CHANGES=$((CHANGES + 1))
		;;
	check)
		report DRIFT "irqbalance: banned CPUs '${have}' (want $ISOLATED_LIST)"
		DRIFT=$((DRIFT + 1))
		;;
	apply)
		ensure_dir "${conf%/*}"
		save file "$conf"
		if [[ -f $conf ]]; then
			while IFS= read -r line || [[ -n $line ]]; do
				[[ $line =~ ^[[:space:]]*IRQBALANCE_BANNED_CPULIST= ]] || out+=$line$'\n'
			done <"$conf"
		fi
		out+="# lltrade (tune-host.sh): no device interrupts on the daemon's core(s)"$'\n'
		out+="IRQBALANCE_BANNED_CPULIST=$ISOLATED_LIST"$'\n'
		printf '%s' "$out" >"$conf"
		report set "irqbalance: IRQBALANCE_BANNED_CPULIST=$ISOLATED_LIST"
		CHANGES=$((CHANGES + 1))
		restart_irqbalance
		;;
	esac
}

restart_irqbalance() {
	local systemctl
	if systemctl=$(find_cmd systemctl) && [[ -n $R || -d /run/systemd/system ]]; then
		"$systemctl" try-restart irqbalance.service || warn "could not restart irqbalance"
	else
		note "no systemd: restart irqbalance yourself to pick up its new configuration"
	fi
}

irqs() {
	local file irq have want c n=0
	if [[ -z $HOUSEKEEPING ]]; then
		note "one CPU only: there is no other core to move interrupts to"
		return 0
	fi
	if [[ -f $R/proc/irq/default_smp_affinity ]]; then
		knob "$R/proc/irq/default_smp_affinity" "$(cpu_mask_of "$HOUSEKEEPING")" \
			"default IRQ affinity (CPUs $HOUSEKEEPING_LIST)" cpumask
	fi
	for file in "$R"/proc/irq/[0-9]*/smp_affinity_list; do
		irq=${file%/smp_affinity_list}
		irq=${irq##*/}
		have=$(cpu_list_expand "$(<"$file")") || continue
		want=""
		for c in $have; do [[ " $ISOLATED " == *" $c "* ]] || want+="$c "; done
		[[ -n $want ]] || want=$HOUSEKEEPING
		want=$(cpu_list_compress "$want")
		if [[ $want == "$(cpu_list_compress "$have")" ]]; then
			n=$((n + 1))
			continue
		fi
		knob "$file" "$want" "IRQ $irq affinity" cpulist
	done
	((n == 0)) || report ok "IRQs already off CPU $ISOLATED_LIST: $n"
}

# -- settings: kernel command line --------------------------------------------------------------------

BOOT_ARGS="isolcpus=managed_irq,domain,$ISOLATED_LIST nohz_full=$ISOLATED_LIST rcu_nocbs=$ISOLATED_LIST"
BOOT_ARGS+=${BOOT_EXTRA:+ $BOOT_EXTRA}
GRUB_DROPIN=$R/etc/default/grub.d/99-lltrade.cfg

boot_args() {
	local cmdline="" arg missing=() method configured=0
	((ISOLATE)) || return 0
	[[ -r $R/proc/cmdline ]] && cmdline=" $(<"$R/proc/cmdline") "
	for arg in $BOOT_ARGS; do [[ $cmdline == *" $arg "* ]] || missing+=("$arg"); done
	if [[ -f $R/etc/default/grub || -d $R/etc/default/grub.d ]]; then
		method=grub.d
	elif find_cmd grubby >/dev/null; then
		method=grubby
	else
		method=none
	fi
	if [[ $method == grub.d ]]; then
		local content
		content="# lltrade (tune-host.sh --isolate): the daemon's core(s) to itself; --revert removes this"
		content+=$'\n'"GRUB_CMDLINE_LINUX_DEFAULT=\"\${GRUB_CMDLINE_LINUX_DEFAULT} $BOOT_ARGS\""
		local before=$CHANGES
		install_file "$GRUB_DROPIN" "$content" "boot arguments"
		if [[ $ACTION == apply ]] && ((CHANGES > before)); then
			if find_cmd update-grub >/dev/null; then
				run_cmd update-grub || true
			else
				run_cmd grub-mkconfig -o /boot/grub/grub.cfg || true
			fi
		fi
		[[ -f $GRUB_DROPIN && $(<"$GRUB_DROPIN") == "$content" ]] && configured=1
	elif [[ $method == grubby ]]; then
		[[ -f $STATE/bootargs && $(<"$STATE/bootargs") == "$BOOT_ARGS" ]] && configured=1
		if ((!configured)); then
			case $ACTION in
			plan)
				report change "boot arguments: grubby --update-kernel=ALL --args=\"$BOOT_ARGS\""
				CHANGES=$((CHANGES + 1))
				;;
			apply)
				if run_cmd grubby --update-kernel=ALL --args="$BOOT_ARGS"; then
					mkdir -p "$STATE"
					printf '%s\n' "$BOOT_ARGS" >"$STATE/bootargs"
					report set "boot arguments: $BOOT_ARGS (grubby)"
					CHANGES=$((CHANGES + 1))
					configured=1
				fi
				;;
			esac
		fi
	else
		failed "boot arguments: no GRUB configuration or grubby found; add to the kernel command line yourself: $BOOT_ARGS"
		return 0
	fi
	if ((${#missing[@]} == 0)); then
		report ok "kernel command line has: $BOOT_ARGS"
	elif [[ $ACTION == check ]]; then
		if ((configured)); then
			report DRIFT "kernel command line: ${missing[*]} set for the next boot: reboot to activate"
		else
			report DRIFT "kernel command line lacks: ${missing[*]}"
		fi
		DRIFT=$((DRIFT + 1))
	elif [[ $ACTION == apply ]] && ((configured)); then
		note "the boot arguments take effect after a reboot: sudo reboot, then tune-host.sh --check"
	fi
}

# -- revert -------------------------------------------------------------------------------------------

revert() {
	if [[ ! -f $SAVED/manifest ]]; then
		say "tune-host.sh: nothing to revert (no saved values in ${STATE#"$R"})"
		return 0
	fi
	local fstab=$R/etc/fstab line out="" n=0 i kind rel path
	if [[ -f $fstab ]] && grep -qF -- "$MARK" "$fstab"; then
		while IFS= read -r line || [[ -n $line ]]; do
			[[ $line == "$MARK"* ]] && line=${line#"$MARK"} && n=$((n + 1))
			out+=$line$'\n'
		done <"$fstab"
		printf '%s' "$out" >"$fstab"
		report restored "fstab: $n swap entr$( ((n == 1)) && echo y || echo ies) back"
	fi
	if [[ -f $STATE/swaps ]]; then
		while IFS= read -r line; do
			[[ -n $line ]] && run_cmd swapon "$line" && report restored "swap: swapon $line"
		done <"$STATE/swaps"
	fi

	local -a kinds=() rels=()
	while IFS=$'\t' read -r kind rel; do
		kinds+=("$kind")
		rels+=("$rel")
	done <"$SAVED/manifest"
	local irqbalance_touched=0 grub_touched=0 irqconf
	irqconf=$(irqbalance_conf)
	for ((i = ${#rels[@]} - 1; i >= 0; i--)); do
		kind=${kinds[i]} rel=${rels[i]} path=$R${rels[i]}
		case $kind in
		knob)
			local old
			old=$(knob_value "$SAVED/files$rel")
			if [[ $(<"$SAVED/files$rel") == *\[*\]* ]]; then
				write_knob "$path" "$old" || failed "${rel}: could not restore '$old'"
			else
				{ cat -- "$SAVED/files$rel" >"$path"; } 2>/dev/null || failed "${rel}: could not restore '$old'"
			fi
			report restored "$rel = $old"
			;;
		file)
			cp -p -- "$SAVED/files$rel" "$path"
			report restored "$rel"
			;;
		absent)
			rm -f -- "$path"
			report removed "$rel"
			;;
		newdir)
			rmdir -- "$path" 2>/dev/null || note "$rel: left in place (not empty)"
			;;
		esac
		[[ $rel == "${GRUB_DROPIN#"$R"}" ]] && grub_touched=1
		[[ $rel == "${irqconf#"$R"}" ]] && irqbalance_touched=1
	done
	if ((grub_touched)); then
		if find_cmd update-grub >/dev/null; then run_cmd update-grub || true; else run_cmd grub-mkconfig -o /boot/grub/grub.cfg || true; fi
		note "the kernel command line changes back after a reboot"
	fi
	if [[ -f $STATE/bootargs ]]; then
		run_cmd grubby --update-kernel=ALL --remove-args="$(<"$STATE/bootargs")" &&
			report restored "boot arguments removed (grubby); active after a reboot"
	fi
	((irqbalance_touched)) && restart_irqbalance
	rm -rf -- "$STATE"
}

# -- main ---------------------------------------------------------------------------------------------

say "tune-host.sh --$ACTION: ${INSTANCE_TYPE:-unknown instance type} (from $TYPE_SOURCE), profile $PROFILE;" \
	"daemon CPU $DAEMON_CPU (from $CPU_SOURCE), kept for it: $ISOLATED_LIST," \
	"housekeeping: ${HOUSEKEEPING_LIST:-none}${R:+; root $ROOT}"

if [[ $ACTION == revert ]]; then
	revert
else
	[[ $ACTION == apply ]] && mkdir -p "$STATE"
	governor
	cstates
	memory
	sysctls
	swap
	irqbalance
	irqs
	boot_args
	if [[ $ACTION == apply ]]; then
		{
			printf 'instance_type=%s\n' "$INSTANCE_TYPE"
			printf 'profile=%s\n' "$PROFILE"
			printf 'daemon_cpu=%s\n' "$DAEMON_CPU"
			printf 'isolate=%s\n' "$ISOLATE"
			printf 'hugepages=%s\n' "$HUGEPAGES"
		} >"$STATE/settings"
	fi
fi

if ((${#NOTES[@]})); then
	say "notes:"
	for n in "${NOTES[@]}"; do say "  - $n"; done
fi
case $ACTION in
plan) say "plan: $CHANGES change(s); nothing was changed (run with --apply)" ;;
apply) say "apply: $CHANGES change(s), $FAILED failed; previous values saved in ${STATE#"$R"} (--revert restores them)" ;;
check)
	if ((DRIFT + FAILED)); then
		say "check: $DRIFT setting(s) drifted, $FAILED unreadable: the host is not tuned (run --apply)"
	else
		say "check: the host is tuned"
	fi
	;;
revert) say "revert: done, $FAILED failed" ;;
esac
if ((FAILED)) || [[ $ACTION == check && $DRIFT -gt 0 ]]; then
	exit 1
fi
exit 0
