"""deploy/tune-host.sh against fake /proc, /sys and /etc trees, one per instance family.

Each tree is what the script would see on the real host: DMI naming the instance type,
CPUs with their SMT siblings, cpufreq and cpuidle where the family has them, the THP and
hugepage knobs, every sysctl it sets, swap, IRQs, the boot loader's configuration.  The
commands it runs (swapoff, swapon, systemctl, update-grub, grubby) are stand-ins inside the
tree that log their arguments and act on the fake files, as the real ones act on the kernel.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TUNE = REPO / "deploy" / "tune-host.sh"
SYSCTL_CONF = REPO / "deploy" / "sysctl" / "90-lltrade.conf"

THP_ENABLED = "always [madvise] never\n"
THP_DEFRAG = "always defer defer+madvise [madvise] never\n"
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
C5_CSTATE_ARGS = "intel_idle.max_cstate=1 processor.max_cstate=1"
INTEL_IDLE = [("POLL", 0), ("C1", 2), ("C1E", 10), ("C6", 133)]

# Stand-ins for the commands the script runs: each logs "name args" to ../calls.log beside
# the tree, and swapoff/swapon move the device's line out of and back into proc/swaps.
STUB = """#!/usr/bin/env bash
root=$(cd "$(dirname "$0")/../.." && pwd)
printf '%s %s\\n' "${0##*/}" "$*" >>"$root/../calls.log"
stash=$root/../swap-stash
case ${0##*/} in
swapoff)
  mkdir -p "$stash"
  grep -F -- "$1" "$root/proc/swaps" | head -n1 >"$stash/$(printf %s "$1" | tr / _)"
  grep -vF -- "$1" "$root/proc/swaps" >"$stash/rest" && cat "$stash/rest" >"$root/proc/swaps"
  ;;
swapon)
  cat "$stash/$(printf %s "$1" | tr / _)" >>"$root/proc/swaps"
  ;;
esac
"""


def sysctl_defaults() -> dict[str, str]:
    """Every key tune-host.sh sets, with a stock kernel's value (tabs as the kernel prints)."""
    stock = {
        "vm.swappiness": "60",
        "kernel.numa_balancing": "1",
        "vm.stat_interval": "1",
        "net.core.rmem_max": "212992",
        "net.core.wmem_max": "212992",
        "net.core.rmem_default": "212992",
        "net.core.wmem_default": "212992",
        "net.ipv4.tcp_rmem": "4096\t131072\t6291456",
        "net.ipv4.tcp_wmem": "4096\t16384\t4194304",
        "net.core.busy_poll": "0",
        "net.core.busy_read": "0",
        "net.core.netdev_max_backlog": "1000",
        "net.core.somaxconn": "4096",
        "net.ipv4.tcp_max_syn_backlog": "512",
        "net.ipv4.tcp_autocorking": "1",
        "net.ipv4.tcp_slow_start_after_idle": "1",
        "net.ipv4.tcp_no_metrics_save": "0",
        "net.ipv4.tcp_fin_timeout": "60",
    }
    keys = re.findall(r"^([a-z0-9_.]+)\s*=", SYSCTL_CONF.read_text(), re.M)
    assert sorted(keys) == sorted(stock), "the fake kernel must know every key the kit sets"
    return stock


@dataclass
class Host:
    """What one fake host has."""

    instance_type: str
    cpus: int
    siblings: dict[int, str]  # cpu -> thread_siblings_list
    cpufreq: bool = False
    idle_states: list[tuple[str, int]] = field(default_factory=list)
    swaps: list[str] = field(default_factory=list)  # /proc/swaps lines
    fstab_swap: list[str] = field(default_factory=list)
    grub: str = "none"  # "grub.d" (Debian/Ubuntu), "grubby" (Amazon Linux), "none"
    irqbalance: str = ""  # its configuration file, "" when not installed
    env_cpu: int | None = None  # LLTRADE_CPU in /etc/lltrade/lltrade.env
    irqs: int = 6
    missing_sysctls: tuple[str, ...] = ()


HOSTS = {
    # t3.medium: x86, 2 vCPUs on one core, no cpufreq, no cpuidle, no swap, no irqbalance.
    "t3": Host("t3.medium", 2, {0: "0-1", 1: "0-1"}),
    # c6g.xlarge: arm64, 4 cores without SMT, WFI only; Ubuntu: a swap file, grub.d,
    # irqbalance; a kernel without tcp_autocorking.
    "c6g": Host(
        "c6g.xlarge",
        4,
        {c: str(c) for c in range(4)},
        idle_states=[("WFI", 1)],
        swaps=["/swapfile                               file\t\t1048572\t\t0\t\t-2"],
        fstab_swap=["/swapfile none swap sw 0 0"],
        grub="grub.d",
        irqbalance="etc/default/irqbalance",
        missing_sysctls=("net.ipv4.tcp_autocorking",),
    ),
    # c5.2xlarge: Intel, 8 vCPUs (siblings n and n+4), cpufreq and intel_idle; Amazon Linux:
    # a swap partition, grubby, irqbalance in /etc/sysconfig; the daemon's CPU set by aws-setup.
    "c5": Host(
        "c5.2xlarge",
        8,
        {c: f"{c % 4},{c % 4 + 4}" for c in range(8)},
        cpufreq=True,
        idle_states=INTEL_IDLE,
        swaps=["/dev/nvme1n1p1                          partition\t4194300\t\t0\t\t-2"],
        fstab_swap=["UUID=5b2c7e0e-2a49-4c1e-9d3e-6f1f0d1e2a3b none swap defaults 0 0"],
        grub="grubby",
        irqbalance="etc/sysconfig/irqbalance",
        env_cpu=6,
    ),
}


def build(tmp: Path, host: Host) -> Path:
    """The fake root for ``host`` under ``tmp/root`` (calls.log and stashes beside it)."""
    root = tmp / "root"

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)

    put("sys/devices/virtual/dmi/id/product_name", host.instance_type + "\n")
    put("sys/devices/virtual/dmi/id/sys_vendor", "Amazon EC2\n")
    put("sys/devices/system/cpu/online", f"0-{host.cpus - 1}\n")
    for cpu in range(host.cpus):
        base = f"sys/devices/system/cpu/cpu{cpu}"
        put(f"{base}/topology/thread_siblings_list", host.siblings[cpu] + "\n")
        if host.cpufreq:
            put(f"{base}/cpufreq/scaling_governor", "powersave\n")
            put(f"{base}/cpufreq/scaling_available_governors", "performance powersave\n")
        for i, (name, latency) in enumerate(host.idle_states):
            put(f"{base}/cpuidle/state{i}/name", name + "\n")
            put(f"{base}/cpuidle/state{i}/latency", f"{latency}\n")
            put(f"{base}/cpuidle/state{i}/disable", "0\n")
    put("sys/kernel/mm/transparent_hugepage/enabled", THP_ENABLED)
    put("sys/kernel/mm/transparent_hugepage/defrag", THP_DEFRAG)
    for size in (2048, 1048576):
        put(f"sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages", "0\n")
    put("proc/meminfo", "MemTotal:        8000000 kB\nHugepagesize:       2048 kB\n")
    for key, value in sysctl_defaults().items():
        if key not in host.missing_sysctls:
            put("proc/sys/" + key.replace(".", "/"), value + "\n")
    put("proc/swaps", SWAPS_HEADER + "".join(line + "\n" for line in host.swaps))
    put("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=UUID=1234 ro console=ttyS0\n")
    all_cpus = f"0-{host.cpus - 1}"
    put("proc/irq/default_smp_affinity", f"{(1 << host.cpus) - 1:x}\n")
    for irq in range(host.irqs):
        put(f"proc/irq/{24 + irq}/smp_affinity_list", all_cpus + "\n")
    put("proc/irq/0/smp_affinity_list", "0\n")  # the timer: only on CPU 0
    fstab = "UUID=1234 / ext4 defaults,noatime 1 1\n"
    fstab += "".join(line + "\n" for line in host.fstab_swap)
    fstab += "# /dev/sdb1 none swap sw 0 0\n"  # commented out already: not ours to touch
    put("etc/fstab", fstab)
    put("etc/sysctl.d/10-defaults.conf", "kernel.printk = 3 4 1 3\n")
    (root / "var/lib").mkdir(parents=True)
    if host.grub == "grub.d":
        put("etc/default/grub", 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n')
        put(
            "etc/default/grub.d/50-cloudimg-settings.cfg",
            'GRUB_CMDLINE_LINUX_DEFAULT="console=tty1"\n',
        )
        put("usr/sbin/update-grub", STUB, 0o755)
    elif host.grub == "grubby":
        put("usr/sbin/grubby", STUB, 0o755)
    if host.irqbalance:
        put(host.irqbalance, "# Configuration for the irqbalance daemon\n#IRQBALANCE_ONESHOT=\n")
        put("usr/sbin/irqbalance", STUB, 0o755)
        put("usr/bin/systemctl", STUB, 0o755)
    if host.swaps:
        put("usr/sbin/swapoff", STUB, 0o755)
        put("usr/sbin/swapon", STUB, 0o755)
    if host.env_cpu is not None:
        put(
            "etc/lltrade/lltrade.env",
            f"LLTRADE_CPU={host.env_cpu}\nLLTRADE_RUN_FLAGS=--busy-poll\n",
        )
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and directory (None) under ``root``, with its mode."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        mode = oct(path.stat().st_mode)
        out[f"{rel} {mode}"] = None if path.is_dir() else path.read_bytes()
    return out


def tune(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # No PATH entries that matter: the script must find its commands inside the tree.
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", str(TUNE), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text()


def calls(root: Path) -> list[str]:
    log = root.parent / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


# -- the cycle every family goes through ------------------------------------------------------


@pytest.mark.parametrize("family", sorted(HOSTS))
def test_plan_check_apply_check_revert(family: str, tmp_path: Path) -> None:
    host = HOSTS[family]
    root = build(tmp_path, host)
    original = snapshot(root)

    plan = tune(root, "--plan")
    assert plan.returncode == 0, plan.stderr
    assert f"{host.instance_type} (from DMI), profile {family}" in plan.stdout
    assert "change" in plan.stdout and "nothing was changed" in plan.stdout
    assert snapshot(root) == original, "--plan changed the tree"

    before = tune(root, "--check")
    assert before.returncode == 1, before.stdout
    assert "DRIFT" in before.stdout and "the host is not tuned" in before.stdout
    assert snapshot(root) == original, "--check changed the tree"

    applied = tune(root, "--apply", "--hugepages", "16")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "0 failed" in applied.stdout

    after = tune(root, "--check")
    assert after.returncode == 0, after.stdout
    assert "DRIFT" not in after.stdout and "the host is tuned" in after.stdout

    # What every family gets.
    assert read(root, "sys/kernel/mm/transparent_hugepage/enabled") == "always madvise [never]\n"
    assert read(root, "sys/kernel/mm/transparent_hugepage/defrag").endswith("[never]\n")
    assert read(root, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") == "16\n"
    assert read(root, "proc/sys/vm/swappiness") == "1\n"
    assert read(root, "proc/sys/net/core/busy_poll") == "50\n"
    assert read(root, "proc/sys/net/ipv4/tcp_rmem") == "4096 262144 16777216\n"
    assert read(root, "etc/sysctl.d/90-lltrade.conf") == SYSCTL_CONF.read_text()
    assert read(root, "proc/swaps") == SWAPS_HEADER
    assert " swap " not in "".join(
        line for line in read(root, "etc/fstab").splitlines(True) if not line.startswith("#")
    )
    daemon_cpu = host.env_cpu if host.env_cpu is not None else host.cpus - 1
    kept = {daemon_cpu}
    if host.cpus >= 4:
        kept |= {int(c) for c in host.siblings[daemon_cpu].split(",")}
    for irq in range(24, 24 + host.irqs):
        cpus = set(expand(read(root, f"proc/irq/{irq}/smp_affinity_list")))
        assert cpus and not cpus & kept, f"IRQ {irq} still on {cpus & kept}"

    # A second apply changes nothing, and the first one's values are the ones kept.
    again = tune(root, "--apply")
    assert again.returncode == 0 and "apply: 0 change(s)" in again.stdout, again.stdout

    reverted = tune(root, "--revert")
    assert reverted.returncode == 0, reverted.stdout + reverted.stderr
    assert snapshot(root) == original, diff(original, snapshot(root))
    assert not (root / "var/lib/lltrade-tune").exists()


def expand(cpu_list: str) -> list[int]:
    out: list[int] = []
    for part in cpu_list.strip().split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def diff(a: dict[str, bytes | None], b: dict[str, bytes | None]) -> str:
    changed = sorted(k for k in a.keys() & b.keys() if a[k] != b[k])
    before, after = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
    return f"only before: {before}; only after: {after}; changed: {changed}"


# -- what each profile does of its own ----------------------------------------------------------


def test_t3_warns_about_cpu_credits_and_leaves_frequency_alone(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["t3"])
    out = tune(root, "--plan").stdout
    assert "burstable" in out and "CpuCredits=unlimited" in out
    assert "no governor or C-state control" in out
    assert "CPU governor" not in out and "idle state" not in out
    # Two vCPUs on one core: the daemon gets CPU 1 and the sibling cannot be spared.
    assert "daemon CPU 1 (from the last CPU), kept for it: 1, housekeeping: 0" in out
    assert "shares its core with CPU(s) 0-1 (SMT)" in out
    assert "irqbalance is not installed" in out


def test_c6g_graviton_swap_file_and_irqbalance(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["c6g"])
    applied = tune(root, "--apply")
    assert applied.returncode == 0, applied.stdout
    assert "Graviton2, arm64" in applied.stdout and "no cpufreq" in applied.stdout
    assert "net.ipv4.tcp_autocorking does not exist in this kernel: skipped" in applied.stdout
    assert "idle state WFI (exit" not in applied.stdout  # WFI (1 us) is shallow enough
    assert "swapoff /swapfile" in calls(root)
    assert "#lltrade-tune# /swapfile none swap sw 0 0" in read(root, "etc/fstab")
    conf = read(root, "etc/default/irqbalance")
    assert conf.startswith("# Configuration for the irqbalance daemon\n")
    assert conf.endswith("IRQBALANCE_BANNED_CPULIST=3\n")
    assert "systemctl try-restart irqbalance.service" in calls(root)
    assert read(root, "proc/irq/default_smp_affinity") == "7\n"  # CPUs 0-2
    assert "update-grub" not in " ".join(calls(root))  # no --isolate: boot line untouched
    assert not (root / "etc/default/grub.d/99-lltrade.cfg").exists()
    tune(root, "--revert")
    assert "swapon /swapfile" in calls(root)


def test_c5_governor_and_c_states_keep_c1(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["c5"])
    out = tune(root, "--apply").stdout
    assert "daemon CPU 6 (from /etc/lltrade/lltrade.env), kept for it: 2,6" in out
    cpu = "sys/devices/system/cpu"
    for c in range(8):
        assert read(root, f"{cpu}/cpu{c}/cpufreq/scaling_governor") == "performance\n"
        disabled = [read(root, f"{cpu}/cpu{c}/cpuidle/state{i}/disable") for i in range(4)]
        assert disabled == ["0\n", "0\n", "1\n", "1\n"], f"cpu{c}: POLL, C1 on; C1E, C6 off"
    assert read(root, "etc/sysconfig/irqbalance").endswith("IRQBALANCE_BANNED_CPULIST=2,6\n")
    assert "swapoff /dev/nvme1n1p1" in calls(root)
    # Housekeeping is 0,1,3,4,5,7: the mask is 0xbb.
    assert read(root, "proc/irq/default_smp_affinity") == "bb\n"
    assert read(root, "proc/irq/0/smp_affinity_list") == "0\n"  # already off the daemon's core


def test_isolation_on_request_waits_for_a_reboot_then_checks_clean(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["c5"])
    original = snapshot(root)
    plan = tune(root, "--plan", "--isolate")
    args = "isolcpus=managed_irq,domain,2,6 nohz_full=2,6 rcu_nocbs=2,6"
    assert f'grubby --update-kernel=ALL --args="{args} intel_idle.max_cstate=1' in plan.stdout
    assert tune(root, "--apply", "--isolate").returncode == 0
    assert calls(root)[-1].startswith(f"grubby --update-kernel=ALL --args={args} intel_idle")
    pending = tune(root, "--check")  # --isolate was remembered by --apply
    assert pending.returncode == 1 and "reboot to activate" in pending.stdout

    # The reboot: the kernel now runs with the arguments.
    cmdline = root / "proc/cmdline"
    booted = (
        cmdline.read_text().strip() + f" {args} intel_idle.max_cstate=1 processor.max_cstate=1\n"
    )
    cmdline.write_text(booted)
    assert tune(root, "--check").returncode == 0
    cmdline.write_text(original[f"proc/cmdline {oct(cmdline.stat().st_mode)}"].decode())  # type: ignore[union-attr]

    assert tune(root, "--revert").returncode == 0
    removed = [c for c in calls(root) if c.startswith("grubby --update-kernel=ALL --remove-args=")]
    assert removed == [f"grubby --update-kernel=ALL --remove-args={args} {C5_CSTATE_ARGS}"]
    assert snapshot(root) == original


def test_isolation_through_a_grub_drop_in(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["c6g"])
    original = snapshot(root)
    assert tune(root, "--apply", "--isolate").returncode == 0
    dropin = read(root, "etc/default/grub.d/99-lltrade.cfg")
    assert (
        'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} isolcpus=managed_irq,domain,3'
        in dropin
    )
    assert "intel_idle" not in dropin  # arm64
    assert "update-grub " in calls(root)
    assert tune(root, "--revert").returncode == 0
    assert calls(root).count("update-grub ") == 2
    assert snapshot(root) == original


# -- detection and mistakes ------------------------------------------------------------------------


def test_instance_type_flag_wins_and_unknown_hosts_get_generic_settings(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["t3"])
    out = tune(root, "--plan", "--instance-type", "c6g.large").stdout
    assert "c6g.large (from --instance-type), profile c6g" in out
    (root / "sys/devices/virtual/dmi/id/product_name").write_text("HVM domU\n")
    out = tune(root, "--plan").stdout
    assert "unknown instance type (from none), profile generic" in out
    assert "no IMDS answer" not in out  # another root: the metadata service is never asked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--daemon-cpu", "9"], "--daemon-cpu 9: not an online CPU (online: 0-1)"),
        (["--daemon-cpu", "x"], "--daemon-cpu x: not a CPU number"),
        (["--instance-type", "C5 XL"], "not an instance type like c5.xlarge"),
        (["--plan", "--apply"], "choose one of --plan, --apply, --check, --revert"),
        (["--frobnicate"], "unknown argument: --frobnicate"),
    ],
)
def test_usage_mistakes_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["t3"])
    proc = tune(root, *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1


def test_revert_without_apply_changes_nothing(tmp_path: Path) -> None:
    root = build(tmp_path, HOSTS["c5"])
    original = snapshot(root)
    proc = tune(root, "--revert")
    assert proc.returncode == 0 and "nothing to revert" in proc.stdout
    assert snapshot(root) == original


def test_help_lists_every_action(tmp_path: Path) -> None:
    out = subprocess.run(
        ["bash", str(TUNE), "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for option in (
        "--plan",
        "--apply",
        "--check",
        "--revert",
        "--root",
        "--instance-type",
        "--isolate",
    ):
        assert option in out


def test_no_stand_ins_left_behind(tmp_path: Path) -> None:
    """The fixture itself: a tree without a swap has no swapoff to run (so none is needed)."""
    root = build(tmp_path, HOSTS["t3"])
    assert shutil.which("swapoff", path=str(root / "usr/sbin")) is None
    assert os.access(TUNE, os.X_OK)
