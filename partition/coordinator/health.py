"""Whether serve can answer now (serve --http's GET /health, what a load balancer probes): every worker
of the plan served is asked for one Probe round trip, all at once, and the answer says which did not.

    checks = HealthChecks(answerer)
    health = checks.current()              # at most about 4 * HEALTH_WAIT_S; shared for MAX_AGE_S
    health.http_status, health.report()    # 200 "ok" / 200 "degraded" / 503 "unavailable"

A worker that does not answer is "unavailable" (503: requests would fail until someone starts it again)
only when nothing here repairs it. Where serve starts its workers again (--spawn-local, --ray) or plans
around a lost one (a profiled --cluster), both at the next request, the endpoint stays in rotation as
"degraded": a 503 would keep away the very request that repairs it. Serving a plan made around lost
devices is "degraded" too: it answers, on fewer devices than it was planned for.

A worker is away only when it misses two probes in a row, the second sent as soon as the first
failed: one probe lost, or answered late behind a busy host's work, must not turn /health into a 503
(the load balancer's own threshold then counts looks at a worker really gone, not lost packets). One
whose process is gone is away within 2 * HEALTH_WAIT_S (two waits to connect), one that hangs within
4 * HEALTH_WAIT_S (a connect and a probe, twice), and it is said at once, not after several looks.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# Seconds a worker has to connect, and again to answer its probe: a worker that is up answers in
# milliseconds, its event loop free while its compute thread runs a step (a short step inline may hold
# it for a moment). One started again after a kill is reached at its next reconnect attempt (at most
# 2 s apart), within the two tries' waits to connect.
HEALTH_WAIT_S = 1.0
HEALTH_TRIES = 2  # probes in a row a worker misses before it counts as away
# Seconds one look is shared: /health needs no key, and every look probes every worker, so probes
# from many clients at once come to one per MAX_AGE_S.
MAX_AGE_S = 1.0
STOPPING = "serve is stopping; send requests to another replica"


@dataclass(frozen=True)
class Health:
    status: str  # "ok", "degraded" or "unavailable"
    plan_id: str  # the plan whose workers were probed
    epoch: int
    away: tuple[str, ...] = ()  # devices of that plan whose workers did not answer
    planned_around: tuple[str, ...] = ()  # devices a re-plan left out (serve answers without them)
    advice: str = ""  # what to do, when not "ok"

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def report(self) -> dict:
        said: dict = {"status": self.status}
        said |= {"plan_id": self.plan_id, "epoch": self.epoch}
        if self.away:
            said["away"] = list(self.away)
        if self.planned_around:
            said["planned_around"] = list(self.planned_around)
        if self.advice:
            said["advice"] = self.advice
        return said


class HealthChecks:
    """Looks at `answerer`'s workers, one at a time: a caller that arrives while one runs waits for it
    and takes its answer, as does any caller within MAX_AGE_S of it."""

    def __init__(self, answerer, max_age_s: float = MAX_AGE_S) -> None:
        self.answerer = answerer
        self.max_age_s = max_age_s
        self._looking = threading.Lock()
        self._last: Health | None = None
        self._at = 0.0

    def current(self) -> Health:
        with self._looking:
            if self._last is None or time.monotonic() - self._at >= self.max_age_s:
                self._last, self._at = check_health(self.answerer), time.monotonic()
            return self._last


def check_health(answerer, wait_s: float = HEALTH_WAIT_S, tries: int = HEALTH_TRIES) -> Health:
    """Probe the workers of `answerer`'s deployment (partition.coordinator.answer.Answerer); a worker
    is away once it missed `tries` probes in a row."""
    while True:
        deployment = answerer.deployment  # once per look: a re-plan may swap it meanwhile
        chain = deployment.chain
        # per try a connect and a probe, each within wait_s
        plan, limit_s = deployment.plan, tries * 2 * wait_s + 1
        try:
            deployment.check_open()
            looks = deployment.loop.run(chain.look(wait_s, tries), limit_s) if chain is not None else {}
            break
        except TimeoutError:  # the coordinator's event loop is stuck: no request would go either
            advice = f"the coordinator did not probe its workers within {limit_s:g} s; restart serve"
            return Health("unavailable", plan.plan_id, plan.epoch, advice=advice)
        except Exception:  # StoppedError, or a channel closed under the probe (gRPC's UsageError)
            if not deployment.closed:
                raise
            if answerer.deployment is deployment:  # not replaced by a re-plan: serve itself stops
                return Health("unavailable", plan.plan_id, plan.epoch, advice=STOPPING)
    away = tuple(
        deployment.devices.get(address, address) for address, serves in looks.items() if serves is None
    )
    taken = {
        deployment.devices.get(address, address): serves
        for address, serves in looks.items()
        if serves is not None and serves[0] and serves != (plan.plan_id, plan.epoch)
    }
    failover = answerer.failover
    planned_around = tuple(sorted(failover.lost)) if failover is not None else ()

    def said(status: str, advice: str = "") -> Health:
        return Health(status, plan.plan_id, plan.epoch, away, planned_around, advice)

    if taken and answerer.deployment is deployment and not answerer.changing_plan:
        # Another deployment loaded its own segments on them (a second serve given the same workers):
        # this serve's steps are refused there, and reloading its own would take them from the other.
        named = ", ".join(f"{device} serves plan {p!r} epoch {e}" for device, (p, e) in sorted(taken.items()))
        return said(
            "unavailable",
            f"{named}, not this serve's plan {plan.plan_id!r} epoch {plan.epoch}: another deployment took "
            "them; stop it and start this serve again, or give each serve workers of its own",
        )
    if away and failover is None and not answerer.restarts_workers:
        return said(
            "unavailable",
            f"start the worker of {', '.join(away)} again at its address; requests are answered once it "
            "is back",
        )
    if away:
        # serve starts its workers again first (Answerer's before_reload), then plans around one still away
        if answerer.restarts_workers:
            repair = "starts it again" + (", or plans around it" if failover is not None else "")
        else:
            repair = f"waits for it up to {answerer.reconnect_wait_s:g} s, then plans around it"
        advice = f"{', '.join(away)} did not answer; the next request {repair}"
        if answerer.reload_failure is not None:  # a repair that keeps failing is said, not hidden
            advice += f" (the last try failed: {answerer.reload_failure})"
        return said("degraded", advice)
    if planned_around:
        return said(
            "degraded",
            f"serving without {', '.join(planned_around)}; a plan with it comes back once it listens",
        )
    return said("ok")
