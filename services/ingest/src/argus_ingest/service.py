"""The ingest service: pulls every camera's RTSP onto the bus, never transcoded.

`IngestPod` (pod.py) is one pod's worth of it, given a bus and a database pool. `run(config)` wraps it in the
service runtime: health, readiness (ready once the pod takes cameras) and metrics; SIGTERM stops taking cameras
and hands every camera over (stop pulling, wait for the acks of what was sent, delete the lease so that another
pod takes it at once), then NATS is drained and the pool closed.
"""

from __future__ import annotations

from argus_core.runtime import Runtime, Stage
from argus_ingest.config import Config
from argus_ingest.metrics import Metrics
from argus_ingest.pod import IngestPod

__all__ = ["SERVICE", "run"]

SERVICE = "ingest"


async def run(config: Config) -> int:
    async with Runtime(SERVICE, config) as rt:
        bus = await rt.connect_bus()
        pool = await rt.open_db(config.db)
        pod = IngestPod(
            bus,
            pool,
            pod=config.pod_name,
            settings=config.ingest,
            lease_ttl_s=config.lease_ttl_s,
            metrics=Metrics(rt.registry),
        )

        async def stop_intake() -> None:
            pod.stop_intake()

        rt.add_check("pulling", lambda: pod.ready)
        rt.on_stop(Stage.STOP_INTAKE, "ingest-intake", stop_intake)
        rt.set_ready()
        return await rt.serve(pod.run(rt.stopping))
