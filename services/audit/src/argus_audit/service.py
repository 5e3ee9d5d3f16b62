"""The audit service: appends audit events to a hash-chained, verifiable log in Postgres.

It consumes the AUDIT stream through the durable pull consumer `audit-store` (any number of pods share it; the
chain lock keeps one total order), writes signed checkpoints of the chain head to the object-locked audit bucket,
and runs the audit retention purge. On SIGTERM it stops fetching, commits and acknowledges the batch in hand, and
writes a final checkpoint.
"""

from __future__ import annotations

import asyncio
import logging

from argus_audit.appender import ChainAppender
from argus_audit.checkpointer import Checkpointer
from argus_audit.config import Config
from argus_audit.consumer import AuditConsumer
from argus_audit.metrics import AuditMetrics
from argus_audit.purge import Purger
from argus_core.audit.checkpoints import CheckpointError, CheckpointKeys, CheckpointSigner, CheckpointStore
from argus_core.bus.jetstream import AUDIT_CONSUMER, AUDIT_STREAM
from argus_core.runtime import Runtime

SERVICE = "audit"

log = logging.getLogger(__name__)


def load_keys(config: Config) -> tuple[CheckpointSigner | None, CheckpointKeys]:
    """The checkpoint signer (if a signing key is configured) and the keys to verify checkpoints with."""
    signer = CheckpointSigner.from_file(config.audit.signing_key) if config.audit.signing_key else None
    return signer, CheckpointKeys.from_files(config.audit.public_keys, signer)


async def run(config: Config) -> int:
    try:
        signer, keys = load_keys(config)
    except CheckpointError as exc:
        log.error(  # noqa: TRY400 - an operator's mistake: no traceback
            "invalid configuration: %s", exc, extra={"variable": "ARGUS_AUDIT_SIGNING_KEY"}
        )
        return 2
    if signer is None:
        log.warning(
            "ARGUS_AUDIT_SIGNING_KEY is not set: no checkpoints are written and no purge runs, so a rewrite of the "
            "whole audit table would not be detected"
        )
    async with Runtime(SERVICE, config) as rt:
        metrics = AuditMetrics(rt.registry)
        bus = await rt.connect_bus()
        pool = await rt.open_db(config.db)
        store = await rt.open_store(config.s3)
        appender = ChainAppender(pool, metrics=metrics)
        subscription = await bus.js.pull_subscribe_bind(durable=AUDIT_CONSUMER, stream=AUDIT_STREAM)
        consumer = AuditConsumer(
            subscription,
            appender,
            rt.stopping,
            batch=config.audit.batch,
            fetch_wait_s=config.audit.fetch_wait_s,
            metrics=metrics,
        )
        rt.add_check("postgres", lambda: appender.healthy)
        checkpoints = CheckpointStore(store, config.s3.audit_bucket)
        checkpointer = Checkpointer(pool, checkpoints, signer, metrics=metrics) if signer is not None else None
        purger = (
            Purger(
                pool,
                appender,
                checkpoints,
                signer,
                keys,
                retention_years=config.audit.retention_years,
                metrics=metrics,
            )
            if signer is not None
            else None
        )

        async def main() -> None:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(consumer.run(), name="audit.consume")
                if checkpointer is not None:
                    tasks.create_task(
                        checkpointer.run(config.audit.checkpoint_interval_s, rt.stopping), name="audit.checkpoint"
                    )
                if purger is not None and config.audit.purge_interval_s > 0:
                    tasks.create_task(purger.run(config.audit.purge_interval_s, rt.stopping), name="audit.purge")
            if checkpointer is not None:
                await checkpointer.try_write("final")

        rt.set_ready()
        return await rt.serve(main())
