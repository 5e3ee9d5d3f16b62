"""PTZ commands: checked against the camera's ranges, arbitrated by the control lease, carried out, audited.

`CommandHandler.handle(command)` answers every `PtzCommand` with a `PtzResult`, never an exception: refused commands
name who holds the camera and until when, bad values come back with their valid range, camera failures with what
the camera said. A command that changes where the camera looks (a move, a stop, a preset or home) needs control:
it claims or renews the caller's lease first; reads (status, presets, capabilities, tours) do not. Every command,
its outcome and its arguments are audited.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from argus_core.bus import messages as m
from argus_ptz.audit import Auditor
from argus_ptz.automation import TOUR_PREFIX
from argus_ptz.errors import BadRequest, NotFound, OnvifTimeout, OnvifUnreachable, OutOfRange, PtzError
from argus_ptz.leases import Claim, Claimant, ControlLease, Leases, top_role
from argus_ptz.onvif_client import Capabilities, OnvifPool, OnvifPtz
from argus_ptz.register import CameraRegister
from argus_ptz.store import TourStore

log = logging.getLogger(__name__)

T = TypeVar("T")

_EPSILON = 1e-6
_JSON = msgspec.json.Encoder()

ControlAction = (
    m.PtzContinuousMove
    | m.PtzAbsoluteMove
    | m.PtzRelativeMove
    | m.PtzStop
    | m.PtzGotoPreset
    | m.PtzSetPreset
    | m.PtzRemovePreset
    | m.PtzGotoHome
    | m.PtzSetHome
)


def action_name(action: m.PtzAction) -> str:
    """The action's wire tag (`continuous`, `goto_preset`, ...)."""
    return str(action.__struct_config__.tag)


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def failure(camera: str, exc: PtzError, lease: ControlLease | None = None) -> m.PtzResult:
    """The answer to a command that failed; `lease` is the caller's control when they kept it."""
    bad = exc if isinstance(exc, OutOfRange) else None
    return m.PtzResult(
        camera=camera,
        ok=False,
        error=exc.code,
        detail=str(exc),
        holder=lease.holder if lease is not None else "",
        lease_until_ns=lease.until_ns if lease is not None else 0,
        argument=bad.argument if bad is not None else "",
        valid_min=bad.low if bad is not None else None,
        valid_max=bad.high if bad is not None else None,
    )


def refusal(camera: str, lease: ControlLease, priority: int) -> m.PtzResult:
    who = f"{lease.holder} ({lease.role})" if lease.role else lease.holder
    return m.PtzResult(
        camera=camera,
        ok=False,
        error="refused",
        detail=(
            f"camera {camera} is controlled by {who} at priority {lease.priority} until {iso(lease.until_ns)} "
            f"unless they command it again; taking control needs a priority above {lease.priority} "
            f"(this request has {priority})"
        ),
        holder=lease.holder,
        lease_until_ns=lease.until_ns,
    )


def check(argument: str, value: float, valid: m.PtzRange | None) -> None:
    """Refuse a value outside `valid` (or not a number), naming the valid range."""
    if valid is None:
        if not math.isfinite(value):
            raise BadRequest(f"{argument} must be a finite number")
        return
    if not math.isfinite(value) or value < valid.min - _EPSILON or value > valid.max + _EPSILON:
        raise OutOfRange(argument, value, valid.min, valid.max)


def check_speed(speed: float | None, caps: Capabilities) -> None:
    if speed is not None:
        check("speed", speed, caps.ranges.get("speed"))
        check("speed", speed, caps.ranges.get("zoom_speed"))


@dataclass(frozen=True)
class Limits:
    move_timeout_max_s: float


def timeout_range(caps: Capabilities, limits: Limits) -> m.PtzRange:
    camera = caps.ranges.get("timeout_s")
    low = camera.min if camera is not None else 0.1
    high = min(camera.max, limits.move_timeout_max_s) if camera is not None else limits.move_timeout_max_s
    return m.PtzRange(min=max(low, 0.001), max=max(high, low))


def validate(action: ControlAction, caps: Capabilities, limits: Limits) -> None:
    """Check every value of a control action against the camera's ranges before anything moves."""
    r = caps.ranges
    match action:
        case m.PtzContinuousMove():
            check("pan", action.pan, r.get("pan_velocity"))
            check("tilt", action.tilt, r.get("tilt_velocity"))
            check("zoom", action.zoom, r.get("zoom_velocity"))
            check("timeout_s", action.timeout_s, timeout_range(caps, limits))
        case m.PtzAbsoluteMove():
            if action.pan is None and action.tilt is None and action.zoom is None:
                raise BadRequest("an absolute move needs at least one of pan, tilt, zoom")
            for name, value in (("pan", action.pan), ("tilt", action.tilt), ("zoom", action.zoom)):
                if value is not None:
                    check(name, value, r.get(name))
            check_speed(action.speed, caps)
        case m.PtzRelativeMove():
            check("pan", action.pan, r.get("pan_translation"))
            check("tilt", action.tilt, r.get("tilt_translation"))
            check("zoom", action.zoom, r.get("zoom_translation"))
            check_speed(action.speed, caps)
        case m.PtzGotoPreset():
            if not action.preset:
                raise BadRequest("which preset? `preset` is empty")
            check_speed(action.speed, caps)
        case m.PtzGotoHome():
            if not caps.home_supported:
                raise BadRequest("the camera has no home position")
            check_speed(action.speed, caps)
        case m.PtzSetHome():
            if not caps.home_supported:
                raise BadRequest("the camera has no home position")
        case m.PtzSetPreset():
            if not 0 < len(action.name) <= 64:
                raise BadRequest("a preset name has 1 to 64 characters")
        case m.PtzRemovePreset():
            if not action.preset:
                raise BadRequest("which preset? `preset` is empty")
        case m.PtzStop():
            pass


class CommandHandler:
    def __init__(
        self,
        *,
        register: CameraRegister,
        pool: OnvifPool,
        leases: Leases,
        store: TourStore,
        auditor: Auditor,
        limits: Limits,
        on_plans_changed: Callable[[], None] = lambda: None,
        observe: Callable[[str, str, float], None] = lambda action, outcome, seconds: None,
    ) -> None:
        self._register = register
        self._pool = pool
        self._leases = leases
        self._store = store
        self._auditor = auditor
        self._limits = limits
        self._plans_changed = on_plans_changed
        self._observe = observe

    async def handle(self, command: m.PtzCommand) -> m.PtzResult:
        started = time.perf_counter()
        action = command.action
        target = ""
        try:
            if not command.actor.subject:
                raise BadRequest("the command names no actor")
            result, target = await self._dispatch(command)
        except PtzError as exc:
            result = failure(command.camera, exc)
        outcome: m.Outcome = "success" if result.ok else ("denied" if result.error == "refused" else "failure")
        details = {"priority": str(command.priority), "args": _JSON.encode(action).decode()}
        if result.error:
            details["error"] = result.error
            details["detail"] = result.detail
        if result.holder:
            details["holder"] = result.holder
        await self._auditor.record(
            actor=command.actor,
            action=f"ptz.{action_name(action)}",
            outcome=outcome,
            camera=command.camera,
            target=target,
            details=details,
        )
        self._observe(action_name(action), outcome, time.perf_counter() - started)
        return result

    async def _client(self, camera: str) -> OnvifPtz:
        await self._register.ptz_camera(camera)
        return await self._pool.get(camera)

    async def _dispatch(self, command: m.PtzCommand) -> tuple[m.PtzResult, str]:
        camera = command.camera
        action = command.action
        match action:
            case (
                m.PtzContinuousMove()
                | m.PtzAbsoluteMove()
                | m.PtzRelativeMove()
                | m.PtzStop()
                | m.PtzGotoPreset()
                | m.PtzSetPreset()
                | m.PtzRemovePreset()
                | m.PtzGotoHome()
                | m.PtzSetHome()
            ):
                return await self._control(command, action), _target(action)
            case m.PtzGetStatus():
                client = await self._client(camera)
                status = await self._guarded(camera, client.status())
                held = self._holder(camera)
                return m.PtzResult(
                    camera=camera,
                    ok=True,
                    pan=status.pan,
                    tilt=status.tilt,
                    zoom=status.zoom,
                    moving=status.moving,
                    holder=held.holder if held else "",
                    lease_until_ns=held.until_ns if held else 0,
                ), ""
            case m.PtzGetPresets():
                client = await self._client(camera)
                presets = await self._guarded(camera, client.presets())
                return m.PtzResult(camera=camera, ok=True, presets=presets), ""
            case m.PtzGetCapabilities():
                client = await self._client(camera)
                return m.PtzResult(camera=camera, ok=True, capabilities=client.capabilities.to_message()), ""
            case m.PtzRelease():
                await self._register.ptz_camera(camera)
                released = await self._leases.release(camera, command.actor.subject)
                detail = "control released" if released else "control was not held by this caller"
                return m.PtzResult(camera=camera, ok=True, detail=detail), ""
            case m.PtzGetTours():
                await self._register.ptz_camera(camera)
                tours = await self._store.tours(camera)
                park = await self._store.park(camera)
                active = next((t.name for t in tours if t.active), "")
                return m.PtzResult(camera=camera, ok=True, tours=tuple(tours), park=park, active_tour=active), ""
            case m.PtzSaveTour():
                client = await self._client(camera)
                presets = await self._guarded(camera, client.presets())
                missing = sorted({s.preset for s in action.steps} - presets.keys())
                if missing:
                    raise NotFound(f"tour {action.name}: no preset {', '.join(missing)} on camera {camera}")
                for step in action.steps:
                    check_speed(step.speed, client.capabilities)
                await self._store.save_tour(camera, action.name, action.steps, command.actor.subject)
                self._plans_changed()
                return m.PtzResult(camera=camera, ok=True, detail=f"tour {action.name} saved"), action.name
            case m.PtzDeleteTour():
                await self._register.ptz_camera(camera)
                if not await self._store.delete_tour(camera, action.name):
                    raise NotFound(f"camera {camera} has no tour {action.name}")
                self._plans_changed()
                return m.PtzResult(camera=camera, ok=True, detail=f"tour {action.name} deleted"), action.name
            case m.PtzStartTour():
                await self._register.ptz_camera(camera)
                if not await self._store.start_tour(camera, action.name, command.actor.subject):
                    raise NotFound(f"camera {camera} has no tour {action.name}")
                # Whoever starts a tour hands the camera to it now rather than after their idle time.
                await self._leases.release(camera, command.actor.subject)
                self._plans_changed()
                return m.PtzResult(camera=camera, ok=True, active_tour=action.name), action.name
            case m.PtzStopTour():
                await self._register.ptz_camera(camera)
                stopped = await self._store.stop_tour(camera, command.actor.subject)
                self._plans_changed()
                detail = f"tour {stopped} stopped" if stopped else "no tour was running"
                return m.PtzResult(camera=camera, ok=True, detail=detail), stopped or ""
            case m.PtzSetPark():
                client = await self._client(camera)
                if action.enabled and action.preset:
                    presets = await self._guarded(camera, client.presets())
                    if action.preset not in presets:
                        raise NotFound(f"no preset {action.preset} on camera {camera}")
                elif action.enabled and not client.capabilities.home_supported:
                    raise BadRequest("the camera has no home position: park at a preset")
                park = m.PtzPark(enabled=action.enabled, idle_s=action.idle_s, preset=action.preset)
                await self._store.set_park(camera, park, command.actor.subject)
                self._plans_changed()
                return m.PtzResult(camera=camera, ok=True, park=park), action.preset or "home"
        raise BadRequest(f"unknown action {action_name(action)}")  # pragma: no cover - the union is exhaustive

    def _holder(self, camera: str) -> ControlLease | None:
        found = self._leases.control(camera)
        if found is None or not found[1].active(time.time_ns()):
            return None
        return found[1]

    async def _guarded(self, camera: str, request: Awaitable[T]) -> T:
        """Await a read; a camera that stopped answering is rediscovered on the next command."""
        try:
            return await request
        except (OnvifTimeout, OnvifUnreachable):
            await self._pool.drop(camera)
            raise

    async def _control(self, command: m.PtzCommand, action: ControlAction) -> m.PtzResult:
        camera = command.camera
        client = await self._client(camera)
        validate(action, client.capabilities, self._limits)
        actor = command.actor
        async with self._pool.motion_lock(camera):
            moving_until: int | None = 0  # a move, a preset or home, a stop: whatever moved before ends
            if isinstance(action, m.PtzContinuousMove) and (action.pan or action.tilt or action.zoom):
                moving_until = time.time_ns() + int(action.timeout_s * 1e9)
            elif isinstance(action, m.PtzSetPreset | m.PtzRemovePreset | m.PtzSetHome):
                moving_until = None  # does not move the head: a running continuous move keeps its deadline
            claim: Claim = await self._leases.claim(
                camera,
                Claimant(actor.subject, command.priority, top_role(actor.roles), actor.client),
                moving_until_ns=moving_until,
            )
            if not claim.granted:
                return refusal(camera, claim.lease, command.priority)
            try:
                presets = await self._execute(client, action)
            except PtzError as exc:
                # The caller keeps control: they may retry, and the idle time releases it if they do not.
                return failure(camera, exc, claim.lease)
        if claim.preempted is not None:
            log.info(
                "camera %s: %s (priority %d) took control from %s (priority %d)",
                camera,
                actor.subject,
                command.priority,
                claim.preempted.holder,
                claim.preempted.priority,
                extra={"camera": camera},
            )
        detail = ""
        if claim.preempted is not None:
            kind = "tour" if claim.preempted.holder.startswith(TOUR_PREFIX) else "control"
            detail = f"took {kind} of the camera from {claim.preempted.holder}"
        return m.PtzResult(
            camera=camera,
            ok=True,
            detail=detail,
            holder=claim.lease.holder,
            lease_until_ns=claim.lease.until_ns,
            moving=bool(claim.lease.moving_until_ns),
            presets=presets,
        )

    async def _execute(self, client: OnvifPtz, action: ControlAction) -> dict[str, str]:
        camera = client.camera
        try:
            match action:
                case m.PtzContinuousMove():
                    await client.continuous_move(action.pan, action.tilt, action.zoom, action.timeout_s)
                case m.PtzAbsoluteMove():
                    await client.absolute_move(action.pan, action.tilt, action.zoom, action.speed)
                case m.PtzRelativeMove():
                    await client.relative_move(action.pan, action.tilt, action.zoom, action.speed)
                case m.PtzStop():
                    await client.stop(pan_tilt=action.pan_tilt, zoom=action.zoom)
                case m.PtzGotoPreset():
                    await client.goto_preset(action.preset, action.speed)
                case m.PtzSetPreset():
                    token = await client.set_preset(action.name, action.preset)
                    return {token: action.name}
                case m.PtzRemovePreset():
                    await client.remove_preset(action.preset)
                case m.PtzGotoHome():
                    await client.goto_home(action.speed)
                case m.PtzSetHome():
                    await client.set_home()
        except (OnvifTimeout, OnvifUnreachable):
            await self._pool.drop(camera)  # rediscover on the next command: the camera may have been replaced
            raise
        return {}


def _target(action: ControlAction) -> str:
    match action:
        case m.PtzGotoPreset() | m.PtzRemovePreset():
            return action.preset
        case m.PtzSetPreset():
            return action.preset or action.name
    return ""
