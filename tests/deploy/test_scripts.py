"""The deploy scripts: shellcheck, aws-setup.sh and firewall.sh in plan mode, init-config.py.

aws-setup.sh --plan runs with stand-ins for every command that would change the system on
PATH; each one records that it was called and fails, so a plan that touches the host fails
the test (the stand-ins also keep this machine safe if it ever did).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lltrade.cli import _build_parser
from lltrade.config import DEMO_SECRETS, load_config, verify_secret

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
SCRIPTS = sorted(DEPLOY.glob("*.sh"))
TODAY = "2026-11-01"  # the date the support table is judged at (the tests pin it)

# Commands a plan must never run.
MUTATORS = (
    "apt-get", "dnf", "yum", "useradd", "usermod", "groupadd", "systemctl", "pip", "pip3",
    "python3", "python3.11", "install", "cp", "mv", "rm", "tar", "chgrp", "chown", "chmod",
    "mkdir", "ln", "nft", "iptables", "ip6tables", "iptables-restore", "ip6tables-restore",
    "sysctl", "swapoff", "grubby", "update-grub", "git", "curl",
)  # fmt: skip


def test_every_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: make sysdeps installs it"
    assert {p.name for p in SCRIPTS} >= {
        "aws-setup.sh", "tune-host.sh", "start-services.sh", "stop-services.sh",
        "monitor.sh", "firewall.sh", "lib.sh",
    }  # fmt: skip
    proc = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style", *map(str, SCRIPTS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", [p for p in SCRIPTS if p.name != "lib.sh"], ids=lambda p: p.name)
def test_scripts_are_executable_and_explain_themselves(script: Path) -> None:
    assert os.access(script, os.X_OK)
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: ")
    bad = subprocess.run(
        [str(script), "--no-such-option"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == f"{script.name}: unknown argument: --no-such-option (see {script.name} --help)"
    )


# -- aws-setup.sh ----------------------------------------------------------------------------------


@pytest.fixture
def guarded_path(tmp_path: Path) -> tuple[str, Path]:
    """PATH with a failing, recording stand-in for every command that changes the system."""
    bin_dir = tmp_path / "guard"
    bin_dir.mkdir()
    log = tmp_path / "ran.log"
    for name in MUTATORS:
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>"{log}"\nexit 97\n')
        stub.chmod(0o755)
    return f"{bin_dir}:/usr/bin:/bin", log


def os_release(tmp: Path, text: str) -> Path:
    path = tmp / "os-release"
    path.write_text(text)
    return path


def aws_setup(path: str, release: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "LLTRADE_NO_IMDS": "1", "LLTRADE_SETUP_TODAY": TODAY, "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", str(DEPLOY / "aws-setup.sh"), "--plan", "--os-release", str(release), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


SUPPORTED = {  # os-release, and the command that installs packages
    "al2023": (
        'NAME="Amazon Linux"\nVERSION_ID="2023"\nID="amzn"\n'
        'PRETTY_NAME="Amazon Linux 2023.9.20251110"\n',
        "dnf install",
    ),
    "ubuntu2404": (
        'PRETTY_NAME="Ubuntu 24.04.3 LTS"\nVERSION_ID="24.04"\nID=ubuntu\n',
        "apt-get install",
    ),
    "debian12": (
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_ID="12"\nID=debian\n',
        "apt-get install",
    ),
    "debian13": (
        'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nVERSION_ID="13"\nID=debian\n',
        "apt-get install",
    ),
}


@pytest.mark.parametrize("system", sorted(SUPPORTED))
def test_aws_setup_plan_touches_nothing_and_covers_every_step(
    system: str, tmp_path: Path, guarded_path: tuple[str, Path]
) -> None:
    text, installer = SUPPORTED[system]
    path, ran = guarded_path
    proc = aws_setup(path, os_release(tmp_path, text), "--order-entry-from", "10.1.0.0/16")
    assert proc.returncode == 0, proc.stderr
    assert not ran.exists(), f"the plan ran: {ran.read_text()}"
    out = proc.stdout
    steps = re.findall(r"^== (.+)$", out, re.M)
    assert steps == [
        "packages", "users and directories", "lltrade into /opt/lltrade/venv",
        "configuration in /etc/lltrade", "systemd units", "host tuning", "firewall", "start",
    ]  # fmt: skip
    install = re.search(rf"^\+ (env DEBIAN_FRONTEND=noninteractive )?{installer} .*$", out, re.M)
    assert install, out
    packages = install[0].split()
    assert "jq" in packages  # monitor.sh's; curl too, which Amazon Linux has as curl-minimal
    assert ("curl" in packages) == (installer == "apt-get install")
    assert "+ useradd --system" in out and "lltrade-telemetry" in out
    assert "-m pip wheel -q --no-deps --wheel-dir /opt/lltrade/wheels /opt/lltrade/src" in out
    assert "init-config.py --template /opt/lltrade/deploy/lltrade.toml" in out
    for unit in ("trading-system.service", "telemetry.service", "lltrade-tune.service"):
        assert f"/etc/systemd/system/{unit}" in out
    assert "+ /opt/lltrade/deploy/tune-host.sh --apply --daemon-cpu " in out
    assert "+ /opt/lltrade/deploy/firewall.sh --apply --order-entry-from 10.1.0.0/16" in out
    assert "+ /opt/lltrade/deploy/start-services.sh --restart" in out
    assert out.rstrip().endswith("plan: nothing was changed (run without --plan, as root)")


def test_aws_setup_plan_for_amazon_linux_uses_python_3_11(
    tmp_path: Path, guarded_path: tuple[str, Path]
) -> None:
    path, _ = guarded_path
    out = aws_setup(path, os_release(tmp_path, SUPPORTED["al2023"][0])).stdout
    assert "+ python3.11 -m venv /opt/lltrade/venv" in out
    assert "python3.11-devel" in out


def test_aws_setup_options_reach_the_plan(tmp_path: Path, guarded_path: tuple[str, Path]) -> None:
    path, ran = guarded_path
    proc = aws_setup(
        path,
        os_release(tmp_path, SUPPORTED["debian12"][0]),
        "--install-root", "/srv/lltrade", "--cpu", "0", "--instance-type", "c6g.large",
        "--isolate", "--no-firewall", "--no-start",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "daemon CPU 0" in out and "busy polling on" in out  # c6g: compute, not burstable
    assert "sed 's|/opt/lltrade|/srv/lltrade|g'" in out  # the units name the install root
    tune = "+ /srv/lltrade/deploy/tune-host.sh --apply --daemon-cpu 0 --isolate"
    assert f"{tune} --instance-type c6g.large" in out
    assert "LLTRADE_CPU=0" in out and "LLTRADE_RUN_FLAGS=--busy-poll" in out
    assert "== firewall" not in out and "== start" not in out
    assert not ran.exists()


def test_aws_setup_keeps_busy_polling_off_on_burstable_hosts(
    tmp_path: Path, guarded_path: tuple[str, Path]
) -> None:
    path, _ = guarded_path
    out = aws_setup(
        path, os_release(tmp_path, SUPPORTED["al2023"][0]), "--instance-type", "t3.medium"
    ).stdout
    assert "busy polling off" in out and "LLTRADE_RUN_FLAGS=\n" in out.replace("|   ", "")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('ID="amzn"\nVERSION_ID="2"\nPRETTY_NAME="Amazon Linux 2"\n', "end of life on 2026-06-30"),
        (
            'ID=ubuntu\nVERSION_ID="20.04"\nPRETTY_NAME="Ubuntu 20.04.6 LTS"\n',
            "past its end of standard support",
        ),
        ('ID=ubuntu\nVERSION_ID="22.04"\nPRETTY_NAME="Ubuntu 22.04.5 LTS"\n', "ships Python 3.10"),
        (
            'ID=ubuntu\nVERSION_ID="25.04"\nPRETTY_NAME="Ubuntu 25.04"\n',
            "not a long-term support release",
        ),
        (
            'ID=debian\nVERSION_ID="11"\nPRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\n',
            "past its end of life",
        ),
        (
            'ID=centos\nVERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n',
            "not one of the supported systems",
        ),
        ("", "not one of the supported systems"),
    ],
)
def test_aws_setup_refuses_unsupported_and_end_of_life_systems(
    text: str, reason: str, tmp_path: Path, guarded_path: tuple[str, Path]
) -> None:
    path, ran = guarded_path
    proc = aws_setup(path, os_release(tmp_path, text))
    assert proc.returncode == 1
    assert (
        reason in proc.stderr and "Use Amazon Linux 2023, Ubuntu 24.04 or 26.04 LTS" in proc.stderr
    )
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
    assert not ran.exists()


def test_aws_setup_refuses_a_supported_system_after_its_end_of_support(
    tmp_path: Path, guarded_path: tuple[str, Path]
) -> None:
    path, _ = guarded_path
    env = {"PATH": path, "LLTRADE_NO_IMDS": "1", "LLTRADE_SETUP_TODAY": "2028-07-01"}
    release = os_release(tmp_path, SUPPORTED["debian12"][0])
    proc = subprocess.run(
        ["bash", str(DEPLOY / "aws-setup.sh"), "--plan", "--os-release", str(release)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 1 and "its support ended on 2028-06-30" in proc.stderr


def unprivileged() -> list[str]:
    """A prefix that runs a command as nobody when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_aws_setup_needs_root_to_change_anything() -> None:
    public = Path(tempfile.mkdtemp(prefix="lltrade-os-release-"))  # readable by nobody
    try:
        public.chmod(0o755)
        release = os_release(public, SUPPORTED["debian12"][0])
        proc = subprocess.run(
            [*unprivileged(), "bash", str(DEPLOY / "aws-setup.sh"), "--os-release", str(release)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "LLTRADE_SETUP_TODAY": TODAY},
        )
    finally:
        shutil.rmtree(public)
    assert proc.returncode == 1 and "aws-setup.sh needs root: run it with sudo" in proc.stderr


# -- firewall.sh -----------------------------------------------------------------------------------


def firewall(*args: str, path: str = "/usr/bin:/bin") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(DEPLOY / "firewall.sh"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": path},
    )


def test_firewall_plan_nft_opens_only_what_is_asked(guarded_path: tuple[str, Path]) -> None:
    path, ran = guarded_path
    proc = firewall("--plan", "--backend", "nft", "--ssh-from", "203.0.113.0/24",
                    "--order-entry-from", "10.1.0.0/16", "--order-entry-from", "2001:db8::/32",
                    path=path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not ran.exists()
    rules = [line[4:].strip() for line in proc.stdout.splitlines() if line.startswith("|   ")]
    assert rules[2:4] == ["table inet lltrade", "delete table inet lltrade"]  # replace, not add
    assert "type filter hook input priority filter; policy drop;" in rules
    accepts = [r for r in rules if r.startswith("tcp dport")]
    assert accepts == [
        'tcp dport 22 ip saddr 203.0.113.0/24 accept comment "SSH"',
        'tcp dport 8000 ip saddr 10.0.0.0/8 accept comment "telemetry"',
        'tcp dport 8000 ip saddr 172.16.0.0/12 accept comment "telemetry"',
        'tcp dport 8000 ip saddr 192.168.0.0/16 accept comment "telemetry"',
        'tcp dport 9000 ip saddr 10.1.0.0/16 accept comment "order entry"',
        'tcp dport 9000 ip6 saddr 2001:db8::/32 accept comment "order entry"',
    ]
    assert "ct state established,related accept" in rules
    assert "+ nft -f /etc/lltrade/firewall.nft" in proc.stdout
    assert 'include "/etc/lltrade/firewall.nft"' in proc.stdout


def test_firewall_plan_iptables_per_family_with_a_final_drop(
    guarded_path: tuple[str, Path],
) -> None:
    path, ran = guarded_path
    proc = firewall(
        "--backend", "iptables", "--telemetry-port", "9100", "--telemetry-from", "10.0.0.0/16",
        path=path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not ran.exists()
    blocks = re.findall(
        r"^\+ (ip6?tables)-restore --noflush <<'EOF'\n(.*?)^EOF$", proc.stdout, re.M | re.S
    )
    assert [b[0] for b in blocks] == ["iptables", "ip6tables"]
    v4, v6 = (b[1].splitlines() for b in blocks)
    for rules in (v4, v6):
        assert rules[:2] == ["*filter", ":LLTRADE-INPUT - [0:0]"]  # declared: flushed and refilled
        assert rules[-2:] == ["-A LLTRADE-INPUT -j DROP", "COMMIT"]
    telemetry = "-A LLTRADE-INPUT -p tcp --dport 9100 -s 10.0.0.0/16"
    assert f'{telemetry} -m comment --comment "telemetry" -j ACCEPT' in v4
    assert not any("--dport 9000" in r for r in v4 + v6)  # order entry closed by default
    assert '-A LLTRADE-INPUT -p tcp --dport 22 -s ::/0 -m comment --comment "SSH" -j ACCEPT' in v6
    assert (
        "+ iptables -C INPUT -j LLTRADE-INPUT || iptables -I INPUT 1 -j LLTRADE-INPUT"
        in proc.stdout
    )


def test_firewall_plan_is_the_same_every_time() -> None:
    args = ("--backend", "nft", "--order-entry-from", "10.1.0.0/16")
    assert firewall(*args).stdout == firewall(*args).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ssh-from", "10.0.0.300/8"], "--ssh-from 10.0.0.300/8: not a network"),
        (["--order-entry-from", "everyone"], "--order-entry-from everyone: not a network"),
        (["--telemetry-port", "70000"], "--telemetry-port 70000: not a port number"),
        (["--telemetry-port", "22"], "the SSH, telemetry and order-entry ports must differ"),
        (["--backend", "pf"], "--backend pf: use nft or iptables"),
    ],
)
def test_firewall_refuses_bad_arguments(args: list[str], message: str) -> None:
    proc = firewall(*args)
    assert proc.returncode == 2 and message in proc.stderr


def test_firewall_apply_needs_root() -> None:
    proc = subprocess.run(
        [*unprivileged(), "bash", str(DEPLOY / "firewall.sh"), "--apply", "--backend", "nft"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1 and "firewall.sh --apply needs root" in proc.stderr


# -- the production configuration and init-config.py -----------------------------------------------


def test_shipped_config_loads_and_takes_no_demo_secret() -> None:
    config = load_config(DEPLOY / "lltrade.toml")
    assert config.server.port == 9000 and config.telemetry.shm_name == "lltrade"
    assert config.journal.durability == "batch" and config.process.mlockall
    assert {a.role for a in config.accounts} == {"trader", "admin"}
    for account in config.accounts:
        for secret in DEMO_SECRETS.values():
            assert not verify_secret(secret, account.secret_hash), account.name


def test_init_config_gives_every_account_a_new_secret(tmp_path: Path) -> None:
    config, secrets = tmp_path / "lltrade.toml", tmp_path / "initial-secrets"
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "init-config.py"), "--template", str(DEPLOY / "lltrade.toml"),
         "--config", str(config), "--secrets", str(secrets)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert secrets.stat().st_mode & 0o777 == 0o600 and config.stat().st_mode & 0o777 == 0o640
    clear = dict(
        line.split() for line in secrets.read_text().splitlines() if not line.startswith("#")
    )
    shipped, written = load_config(DEPLOY / "lltrade.toml"), load_config(config)
    assert sorted(clear) == sorted(a.name for a in written.accounts)
    for old, new in zip(shipped.accounts, written.accounts, strict=True):
        assert old.name == new.name and old.secret_hash != new.secret_hash
        assert verify_secret(clear[new.name], new.secret_hash)
        # 192 bits, and never an option to a command line that is handed it
        assert re.fullmatch(r"[0-9a-f]{48}", clear[new.name])
        args = ["order", "buy", "DEMO", "1", "@", "1", "--secret", clear[new.name]]
        assert _build_parser().parse_args(args).secret == clear[new.name]
    # Everything but the hashes is the template, comments included.
    strip = re.compile(r'secret_hash = "[^"]*"')
    assert strip.sub("", config.read_text()) == strip.sub("", (DEPLOY / "lltrade.toml").read_text())
    again = subprocess.run(
        [sys.executable, str(DEPLOY / "init-config.py"), "--template", str(DEPLOY / "lltrade.toml"),
         "--config", str(config), "--secrets", str(tmp_path / "other")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 1 and "exists; not overwriting it" in again.stderr
