"""Write a host's first lltrade configuration: the template with a new secret per account.

aws-setup.sh runs it once, with the installed virtual environment's Python, when
/etc/lltrade/lltrade.toml does not exist yet::

    python init-config.py --template deploy/lltrade.toml \\
        --config /etc/lltrade/lltrade.toml --secrets /etc/lltrade/initial-secrets

Every ``secret_hash`` of the template is replaced by the scrypt hash of a new random secret
(``lltrade.config.hash_secret``, as ``lltrade hash-secret`` prints); the rest of the file,
comments included, is kept.  The clear secrets are written, one ``account secret`` line
each, to a file only its owner can read.  An existing configuration is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

from lltrade.config import ConfigError, hash_secret, parse_config

SECRET_HASH = re.compile(r'^(?P<key>\s*secret_hash\s*=\s*)"[^"\n]*"', re.M)


def render(template: str, source: str) -> tuple[str, dict[str, str]]:
    """The template with fresh hashes, and the clear secrets by account name."""
    accounts = [a.name for a in parse_config(template, source).accounts]
    hashes = SECRET_HASH.findall(template)
    if len(hashes) != len(accounts):
        raise ConfigError(
            source,
            "$.accounts",
            f"{len(accounts)} accounts but {len(hashes)} one-line secret_hash entries; "
            'write each as secret_hash = "scrypt$..." on one line',
        )
    # Hex: a url-safe token begins with "-" one time in 64, which `lltrade order --secret`
    # (argparse) takes for an option, and so does many a shell tool.
    clear = {name: secrets.token_hex(24) for name in accounts}
    names = iter(accounts)

    def fresh(match: re.Match[str]) -> str:
        return f'{match["key"]}"{hash_secret(clear[next(names)])}"'

    text = SECRET_HASH.sub(fresh, template)
    parse_config(text, source)  # what we write must load
    return text, clear


def write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to a new file created with ``mode`` (never readable by others first)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", required=True, type=Path, help="deploy/lltrade.toml")
    parser.add_argument("--config", required=True, type=Path, help="the file to create")
    parser.add_argument("--secrets", required=True, type=Path, help="where the secrets go")
    args = parser.parse_args(argv)
    prog = "init-config.py"
    for path in (args.config, args.secrets):
        if path.exists():
            print(f"{prog}: {path} exists; not overwriting it", file=sys.stderr)
            return 1
    try:
        text, clear = render(args.template.read_text(encoding="utf-8"), str(args.template))
    except ConfigError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: cannot read {args.template}: {exc.strerror}", file=sys.stderr)
        return 1
    lines = "".join(f"{name} {secret}\n" for name, secret in clear.items())
    header = f"# Secrets of the accounts in {args.config}: hand them out, then delete this file.\n"
    write_private(args.secrets, header + lines, 0o600)
    write_private(args.config, text, 0o640)
    print(f"{prog}: wrote {args.config} ({len(clear)} accounts); their secrets: {args.secrets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
