"""`python -m argus_api`: start the api service; `python -m argus_api token ...`: sign an access token."""

from __future__ import annotations

import argparse
import os
import sys

from argus_api.config import Config
from argus_api.service import SERVICE, run
from argus_core.identity import ACTIONS, Grant, TokenIssuer
from argus_core.runtime import main as run_service


def _grant(text: str) -> Grant:
    actions, _, cams = text.partition(":")
    chosen = tuple(a for a in actions.split(",") if a)
    unknown = [a for a in chosen if a not in ACTIONS]
    if unknown or not cams:
        raise argparse.ArgumentTypeError(f"expected ACTIONS:CAMERAS (actions from {', '.join(ACTIONS)}), got {text!r}")
    return Grant(actions=chosen, cameras=tuple(c for c in cams.split(",") if c))  # type: ignore[arg-type]


def token_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="argus-api token", description="Sign an Argus access token.")
    parser.add_argument("--subject", required=True)
    parser.add_argument("--role", action="append", default=[], dest="roles")
    parser.add_argument("--grant", action="append", default=[], type=_grant, help="e.g. live,playback:cam-1,cam-2")
    parser.add_argument("--org", default="")
    parser.add_argument("--ttl", type=float, default=None, help="seconds (default ARGUS_TOKENS_TTL_S)")
    parser.add_argument("--private-key", default=os.environ.get("ARGUS_TOKENS_PRIVATE_KEY", ""))
    args = parser.parse_args(argv)
    if not args.private_key:
        parser.error("no signing key: set ARGUS_TOKENS_PRIVATE_KEY or pass --private-key")
    issuer = TokenIssuer.from_file(
        args.private_key,
        issuer=os.environ.get("ARGUS_TOKENS_ISSUER", "argus"),
        audience=os.environ.get("ARGUS_TOKENS_AUDIENCE", "argus"),
        ttl_s=float(os.environ.get("ARGUS_TOKENS_TTL_S", "900")),
    )
    sys.stdout.write(issuer.issue(args.subject, args.roles, args.grant, org=args.org, ttl_s=args.ttl) + "\n")
    return 0


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "token":
        sys.exit(token_command(sys.argv[2:]))
    sys.exit(run_service(SERVICE, Config, run))


if __name__ == "__main__":
    main()
