"""Whether serve can answer now (serve --http's GET /health, what a load balancer probes): every worker
of the plan served is asked for one Probe round trip, all at once, and the answer says which did not.

    health = check_health(answerer)        # at most about 2 * HEALTH_WAIT_S
    health.http_status, health.report()    # 200 "ok" / 200 "degraded" / 503 "unavailable"

A worker that does not answer is "unavailable" (503: requests would fail until someone starts it again)
only when nothing here repairs it. With --spawn-local serve starts it again, and with a profiled
--cluster it plans around it: both at the next request, so the endpoint stays in rotation as "degraded"
(a 503 would keep away the very request that repairs it). Serving a plan made around lost devices is
"degraded" too: it answers, on fewer devices than it was planned for.
"""

from __future__ import annotations

from dataclasses import dataclass

from partition.errors import StoppedError

# Seconds a worker has to connect, and again to answer its probe: a worker that is up answers in
# milliseconds, its event loop free while its compute thread runs a step; one started again after a
# kill is reached at its next reconnect attempt (at most 2 s apart), so it may read as away once.
HEALTH_WAIT_S = 1.0


@dataclass(frozen=True)
class Health:
    status: str  # "ok", "degraded" or "unavailable"
    away: tuple[str, ...] = ()  # devices of the plan served whose workers did not answer
    planned_around: tuple[str, ...] = ()  # devices a re-plan left out (serve answers without them)
    advice: str = ""  # what to do, when not "ok"

    @property
    def http_status(self) -> int:
        return 503 if self.status == "unavailable" else 200

    def report(self) -> dict:
        said: dict = {"status": self.status}
        if self.away:
            said["away"] = list(self.away)
        if self.planned_around:
            said["planned_around"] = list(self.planned_around)
        if self.advice:
            said["advice"] = self.advice
        return said


def check_health(answerer, wait_s: float = HEALTH_WAIT_S) -> Health:
    """Probe the workers of `answerer`'s deployment (partition.coordinator.answer.Answerer)."""
    while True:
        deployment = answerer.deployment  # once per look: a re-plan may swap it meanwhile
        chain = deployment.chain
        try:
            deployment.check_open()
            addresses = deployment.loop.run(chain.away(wait_s)) if chain is not None else []
            break
        except StoppedError:
            if answerer.deployment is deployment:  # not replaced by a re-plan: serve itself stops
                return Health("unavailable", advice="serve is stopping; send requests to another replica")
    away = tuple(deployment.devices.get(address, address) for address in addresses)
    failover = answerer.failover
    planned_around = tuple(sorted(failover.lost)) if failover is not None else ()
    if away and failover is None and not answerer.restarts_workers:
        advice = f"start the worker of {', '.join(away)} again at its address; requests are answered once it is back"
        return Health("unavailable", away, advice=advice)
    if away:
        repair = "plans around it" if failover is not None else "starts it again"
        advice = (
            f"{', '.join(away)} did not answer; the next request waits for it a few seconds, then {repair}"
        )
        return Health("degraded", away, planned_around, advice)
    if planned_around:
        advice = f"serving without {', '.join(planned_around)}; a plan with it comes back once it listens"
        return Health("degraded", (), planned_around, advice)
    return Health("ok")
