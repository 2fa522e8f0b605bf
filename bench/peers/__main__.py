"""Install or show the bench-only peer servers (Bottender, opsdroid) under bench/.peers/.

    python -m bench.peers setup [bottender] [opsdroid] [--force]
    python -m bench.peers status
"""

from __future__ import annotations

import argparse
import sys

from bench.peers import (
    BOTTENDER_VERSION,
    OPSDROID_VERSION,
    PEERS_HOME,
    SETUPS,
    bottender_version,
    missing_reason,
    opsdroid_version,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help=f"install Bottender {BOTTENDER_VERSION} (npm) and opsdroid "
                                         f"{OPSDROID_VERSION} (a venv) into {PEERS_HOME}")
    setup.add_argument("peers", nargs="*", metavar="PEER", help="bottender, opsdroid (default: both)")
    setup.add_argument("--force", action="store_true", help="reinstall even when the right version is there")
    sub.add_parser("status", help="what is installed and whether the benchmark can run it")
    args = parser.parse_args(argv)
    if args.command == "setup":
        unknown = sorted(set(args.peers) - set(SETUPS))
        if unknown:
            parser.error(f"unknown peer(s) {', '.join(unknown)}: choose from {', '.join(SETUPS)}")
        for peer in args.peers or list(SETUPS):
            SETUPS[peer](args.force)
    found = {"bottender": bottender_version(), "opsdroid": opsdroid_version()}
    for peer, version in found.items():
        reason = missing_reason(peer)
        print(f"{peer}: {version or 'not installed'} ({'ready' if reason is None else reason})")
    return 0 if all(missing_reason(p) is None for p in found) else 1


if __name__ == "__main__":
    sys.exit(main())
