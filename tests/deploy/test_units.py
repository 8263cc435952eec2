"""The systemd units: systemd-analyze verify and security (offline), and what they promise.

There is no running systemd here, so the units are checked in a fake root: the host's own
unit library (targets the units order against), the units in /etc/systemd/system with the
drop-ins aws-setup.sh writes, and stand-in executables where ExecStart points.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNITS = ("trading-system.service", "telemetry.service", "lltrade-tune.service")
SERVICES = ("trading-system.service", "telemetry.service")  # the ones scored for exposure
UNIT_LIBRARY = Path("/usr/lib/systemd/system")
LEVELS_OK_OR_BETTER = {"OK", "SAFE", "PERFECT"}


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is missing: make sysdeps installs it (Debian package systemd)"
    return path


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd allows repeats)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit(name: str) -> dict[str, dict[str, list[str]]]:
    return parse_unit((DEPLOY / name).read_text())


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def planned_files(plan: str) -> dict[str, str]:
    """The files aws-setup.sh --plan says it would write: path -> content."""
    files: dict[str, str] = {}
    path = None
    for line in plan.splitlines():
        m = re.match(r"^\+ write (\S+) \(mode \d+\):$", line)
        if m:
            path = m[1]
            files[path] = ""
        elif path and line.startswith("|   "):
            files[path] += line[4:] + "\n"
        elif path and line == "|":
            files[path] += "\n"
        else:
            path = None
    return files


def aws_setup_plan(tmp: Path) -> str:
    release = tmp / "os-release"
    release.write_text('ID=amzn\nVERSION_ID="2023"\nPRETTY_NAME="Amazon Linux 2023"\n')
    proc = subprocess.run(
        ["bash", str(DEPLOY / "aws-setup.sh"), "--plan", "--os-release", str(release)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LLTRADE_NO_IMDS": "1", "LLTRADE_SETUP_TODAY": "2026-01-01"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fake root: the host's unit library, our units and drop-ins, stand-in executables."""
    systemd_analyze()
    base = tmp_path_factory.mktemp("units")
    root = base / "root"
    library = root / "usr/lib/systemd/system"
    library.mkdir(parents=True)
    assert UNIT_LIBRARY.is_dir(), f"{UNIT_LIBRARY} missing: the systemd package is not installed"
    for path in UNIT_LIBRARY.iterdir():
        if path.is_file() and not path.is_symlink():
            shutil.copy(path, library / path.name)
    etc = root / "etc/systemd/system"
    etc.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(DEPLOY / name, etc / name)
    for written, content in planned_files(aws_setup_plan(base)).items():
        if written.startswith("/etc/systemd/system/"):
            target = root / written.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
    for exe in ("opt/lltrade/venv/bin/lltrade", "opt/lltrade/venv/bin/lltrade-telemetry"):
        (root / exe).parent.mkdir(parents=True, exist_ok=True)
        (root / exe).write_text("#!/bin/sh\n")
        (root / exe).chmod(0o755)
    (root / "opt/lltrade/deploy").mkdir(parents=True)
    shutil.copy(DEPLOY / "tune-host.sh", root / "opt/lltrade/deploy/tune-host.sh")
    return root


def verify(root: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- systemd-analyze -------------------------------------------------------------------------------


def test_drop_ins_from_aws_setup_are_in_the_fake_root(root: Path) -> None:
    dropin = root / "etc/systemd/system/trading-system.service.d/10-host.conf"
    affinity = parse_unit(dropin.read_text())["Service"]["CPUAffinity"]
    assert affinity[0] == ""  # reset first
    telemetry = root / "etc/systemd/system/telemetry.service.d/10-host.conf"
    others = parse_unit(telemetry.read_text())["Service"]["CPUAffinity"][1].split()
    # the daemon's core, then its helper threads' CPUs: the others (on one CPU, none)
    daemon, *helpers = affinity[1].split()
    assert (daemon not in others and helpers == others) or (others == [daemon] and not helpers)


def test_units_pass_verify_without_a_warning(root: Path) -> None:
    proc = verify(root, *UNITS)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr


@pytest.mark.parametrize(
    ("mistake", "complaint"),
    [
        ("ProtectSytem=strict", "Unknown key"),
        ("Restart=sometimes", "Failed to parse"),
    ],
)
def test_verify_would_catch_a_mistake(
    root: Path, tmp_path: Path, mistake: str, complaint: str
) -> None:
    """The verify check can fail: the same unit with one bad line does not pass silently."""
    broken = tmp_path / "root"
    shutil.copytree(root, broken, symlinks=True)
    path = broken / "etc/systemd/system/trading-system.service"
    path.write_text(path.read_text().replace("[Service]\n", f"[Service]\n{mistake}\n", 1))
    proc = verify(broken, "trading-system.service")
    assert complaint in proc.stderr


def test_verify_would_catch_a_missing_executable(root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "root"
    shutil.copytree(root, broken, symlinks=True)
    (broken / "opt/lltrade/venv/bin/lltrade-telemetry").unlink()
    proc = verify(broken, "telemetry.service")
    assert proc.returncode != 0 and "lltrade-telemetry" in proc.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_security_exposure_is_ok_or_better(root: Path, name: str) -> None:
    proc = subprocess.run(
        [systemd_analyze(), "security", "--offline=yes", f"--root={root}", "--no-pager", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    m = re.search(rf"Overall exposure level for {re.escape(name)}: ([0-9.]+) (\w+)", proc.stdout)
    assert m, proc.stdout[-2000:]
    exposure, level = float(m[1]), m[2]
    assert level in LEVELS_OK_OR_BETTER and exposure < 5.0, f"{name}: {exposure} {level}"


# -- what the units promise -----------------------------------------------------------------------


def test_daemon_unit_is_a_notify_service_with_watchdog_limits_and_restart_policy() -> None:
    u = unit("trading-system.service")
    s = u["Service"]
    assert one(s, "Type") == "notify" and one(s, "NotifyAccess") == "main"
    assert int(one(s, "WatchdogSec").removesuffix("s")) >= 5  # the daemon pings every 100 ms
    assert one(s, "Restart") == "on-failure"
    assert int(one(u["Unit"], "StartLimitBurst")) >= 1
    assert one(u["Unit"], "StartLimitIntervalSec")
    assert one(s, "LimitMEMLOCK") == "infinity"  # for [process] mlockall = true
    assert int(one(s, "LimitNOFILE")) >= 4096
    # the loop's core first (--cpu pins it there), then the helper threads' CPUs
    assert one(s, "CPUAffinity") == "1 0" and "LLTRADE_CPU=1" in s["Environment"]
    assert one(s, "User") == "lltrade"
    exec_start = one(s, "ExecStart").split()
    assert exec_start[:4] == [
        "/opt/lltrade/venv/bin/lltrade",
        "run",
        "--config",
        "/etc/lltrade/lltrade.toml",
    ]
    assert exec_start[exec_start.index("--cpu") + 1] == "${LLTRADE_CPU}"


def test_daemon_unit_hardening_leaves_journal_and_shared_memory_writable() -> None:
    s = unit("trading-system.service")["Service"]
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "NoNewPrivileges") == one(s, "PrivateTmp") == "yes"
    assert one(s, "StateDirectory") == "lltrade"
    journal = one(s, "ExecStart").split("--journal-dir ")[1].split()[0]
    assert journal.startswith("/var/lib/lltrade/")  # inside StateDirectory: writable
    assert "/dev/shm" in one(s, "ReadWritePaths").split()  # the telemetry file
    assert "AF_UNIX" in one(s, "RestrictAddressFamilies").split()  # sd_notify's socket
    assert s["SystemCallFilter"][0] == "@system-service"


def test_telemetry_unit_is_not_bound_to_the_daemon() -> None:
    u = unit("telemetry.service")
    for key in (
        "BindsTo",
        "PartOf",
        "Requires",
        "Requisite",
        "PropagatesStopTo",
        "StopPropagatedFrom",
    ):
        assert key not in u["Unit"], f"telemetry.service must outlive daemon restarts ({key}=)"
    assert "trading-system.service" not in " ".join(u["Unit"].get("After", []))
    s = u["Service"]
    assert one(s, "User") != "lltrade" and one(s, "SupplementaryGroups") == "lltrade"
    assert one(s, "ReadOnlyPaths") == "/dev/shm"
    argv = one(s, "ExecStart").split()
    assert argv[0] == "/opt/lltrade/venv/bin/lltrade-telemetry"
    assert argv[argv.index("--shm-path") + 1] == "/dev/shm/lltrade"
    log = argv[argv.index("--log") + 1]
    assert log.startswith(f"/var/log/{one(s, 'LogsDirectory')}/")  # the one writable place
    assert one(s, "CPUAffinity") == "0"  # not the daemon's core


def test_tune_unit_runs_the_installed_kit_before_the_services() -> None:
    u = unit("lltrade-tune.service")
    assert one(u["Service"], "ExecStart").startswith("/opt/lltrade/deploy/tune-host.sh --apply")
    assert set(one(u["Unit"], "Before").split()) == set(SERVICES)
    assert one(u["Unit"], "ConditionPathExists") == "/var/lib/lltrade-tune/settings"
