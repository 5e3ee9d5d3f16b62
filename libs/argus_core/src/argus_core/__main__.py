"""`python -m argus_core migrations [--apply]`: list the schema migrations applied to `ARGUS_DB_URL` (and apply
the missing ones with `--apply`). Exit code 1 when some are missing."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from argus_core.db import DatabaseConfig, applied_migrations, bundled_migrations, create_pool, migrate


async def _migrations(url: str, apply: bool) -> int:
    pool = await create_pool(DatabaseConfig(url=url, pool_min=1, pool_max=2))
    try:
        if apply:
            await migrate(pool)
        done = {m.version: m for m in await applied_migrations(pool)}
    finally:
        await pool.close()
    missing = 0
    for migration in bundled_migrations():
        row = done.get(migration.version)
        if row is None:
            missing += 1
            sys.stdout.write(f"{migration.version:04d}  {migration.name:<24}  not applied\n")
        else:
            sys.stdout.write(f"{row.version:04d}  {row.name:<24}  applied {row.applied_at.isoformat()}\n")
    return 1 if missing else 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m argus_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    mig = sub.add_parser("migrations", help="list applied migrations")
    mig.add_argument("--apply", action="store_true", help="apply the missing migrations first")
    args = parser.parse_args()
    url = os.environ.get("ARGUS_DB_URL", "")
    if not url:
        parser.error("ARGUS_DB_URL is not set")
    return asyncio.run(_migrations(url, args.apply))


if __name__ == "__main__":
    sys.exit(main())
