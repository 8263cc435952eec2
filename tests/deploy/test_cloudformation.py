"""deploy/cloudformation.yaml: cfn-lint clean, and the host it describes matches the kit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "cloudformation.yaml"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"
REGIONS = ("us-east-1", "eu-west-1", "ap-northeast-1")


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    assert CFN_LINT.exists(), "cfn-lint is missing from the virtual environment (the test extra)"
    return subprocess.run(
        [
            str(CFN_LINT),
            "--non-zero-exit-code",
            "informational",
            "--regions",
            *REGIONS,
            "--",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATE)))


def test_cfn_lint_finds_nothing() -> None:
    proc = lint(TEMPLATE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cfn_lint_would_catch_a_mistake(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("VolumeType: gp3", "VolumeType: gp9"))
    proc = lint(broken)
    assert proc.returncode != 0 and "gp9" in proc.stdout


def test_instance_types_are_the_three_families(template: dict[str, Any]) -> None:
    types = template["Parameters"]["InstanceType"]["AllowedValues"]
    assert {t.split(".")[0] for t in types} == {"t3", "c5", "c6g"}
    assert template["Parameters"]["InstanceType"]["Default"] in types
    # Graviton gets the arm64 image, the others x86_64.
    props = template["Resources"]["Instance"]["Properties"]
    assert props["ImageId"] == {"Fn::If": ["IsGraviton", {"Ref": "AmiArm"}, {"Ref": "AmiX86"}]}
    assert template["Parameters"]["AmiArm"]["Default"].endswith("al2023-ami-kernel-default-arm64")
    assert template["Parameters"]["AmiX86"]["Default"].endswith("al2023-ami-kernel-default-x86_64")
    assert "c6g" in str(template["Conditions"]["IsGraviton"])


def test_imdsv2_required_and_volume_encrypted(template: dict[str, Any]) -> None:
    data = template["Resources"]["LaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    assert ebs["Encrypted"] is True and ebs["VolumeType"] == "gp3"
    launch = template["Resources"]["Instance"]["Properties"]["LaunchTemplate"]
    assert launch["LaunchTemplateId"] == {"Ref": "LaunchTemplate"}


def test_cluster_placement_group_except_for_burstable_t3(template: dict[str, Any]) -> None:
    group = template["Resources"]["PlacementGroup"]
    assert group["Properties"]["Strategy"] == "cluster"
    assert group["Condition"] == "UsePlacementGroup"
    assert template["Conditions"]["UsePlacementGroup"] == {
        "Fn::Not": [{"Condition": "IsBurstable"}]
    }
    assert "'t3'" in str(template["Conditions"]["IsBurstable"])
    props = template["Resources"]["Instance"]["Properties"]
    assert props["PlacementGroupName"]["Fn::If"][0] == "UsePlacementGroup"
    # t3 runs in unlimited mode, as tune-host.sh recommends.
    assert props["CreditSpecification"]["Fn::If"][:2] == [
        "IsBurstable",
        {"CPUCredits": "unlimited"},
    ]


def firewall_ports() -> dict[str, int]:
    """The ports firewall.sh opens by default, by what they are for."""
    plan = subprocess.run(
        ["bash", str(REPO / "deploy/firewall.sh"), "--plan", "--backend", "nft",
         "--order-entry-from", "10.0.0.0/8"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return {m[2]: int(m[1]) for m in re.finditer(r'tcp dport (\d+) .* comment "([^"]+)"', plan)}


def test_security_group_matches_the_firewall(template: dict[str, Any]) -> None:
    ingress = template["Resources"]["SecurityGroup"]["Properties"]["SecurityGroupIngress"]
    rules = [r for r in ingress if "FromPort" in r]
    order = next(r for r in ingress if "Fn::If" in r)["Fn::If"]
    assert order[0] == "HasOrderEntry"
    rules.append(order[1])
    opened = {(r["FromPort"], r["ToPort"], r["CidrIp"]["Ref"]) for r in rules}
    ports = firewall_ports()
    assert opened == {
        (ports["SSH"], ports["SSH"], "SshCidr"),
        (ports["telemetry"], ports["telemetry"], "MonitoringCidr"),
        (ports["order entry"], ports["order entry"], "OrderEntryCidr"),
    }


def rendered_user_data(template: dict[str, Any]) -> str:
    """The user data as the instance gets it, for a stack with example parameters."""
    text = template["Resources"]["Instance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    values = {
        "AWS::StackName": "trading", "AWS::Region": "eu-west-1", "RepositoryRef": "main",
        "RepositoryUrl": "https://example.com/lltrade.git", "SshCidr": "203.0.113.0/24",
        "MonitoringCidr": "10.0.0.0/16", "OrderEntryCidr": "10.1.0.0/16", "IsolateCore": "false",
    }  # fmt: skip

    def sub(m: re.Match[str]) -> str:
        name = m[1]
        return "${" + name[1:] + "}" if name.startswith("!") else values[name]

    return re.sub(r"\$\{([^}]+)\}", sub, str(text))


def test_user_data_is_valid_bash_that_runs_aws_setup_with_the_stacks_networks(
    template: dict[str, Any],
) -> None:
    script = rendered_user_data(template)
    assert script.startswith("#!/bin/bash\n")
    syntax = subprocess.run(
        ["bash", "-n"], input=script, capture_output=True, text=True, timeout=30
    )
    assert syntax.returncode == 0, syntax.stderr
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: make sysdeps installs it"
    lint = subprocess.run(
        [shellcheck, "-"], input=script, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout
    assert '/opt/lltrade/src/deploy/aws-setup.sh "${args[@]}"' in script
    assert '--ssh-from "203.0.113.0/24" --telemetry-from "10.0.0.0/16"' in script
    assert (
        'order_entry_cidr="10.1.0.0/16"' in script
        and '--order-entry-from "$order_entry_cidr"' in script
    )
    assert "cfn-signal --exit-code" in script and "trap 'signal 1' ERR" in script
    # Every option the user data passes is one aws-setup.sh knows.
    usage = subprocess.run(
        ["bash", str(REPO / "deploy/aws-setup.sh"), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    for option in set(re.findall(r"(--[a-z-]+)", script.split("args=", 1)[1])):
        assert option in usage, option
