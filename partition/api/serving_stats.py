"""What the endpoint has served, for `GET /metrics` (serve --http -> metrics): requests, tokens, TTFT,
TPOT, and every link's and stage's time per decode step, in Prometheus' text format.

The link and stage series come from each answer's hop spans (partition.metrics.spans): the same
numbers as the `partition` block of a reply, accumulated over all requests, so a dashboard shows
which link or stage the time goes to while the endpoint serves.
"""

from __future__ import annotations

from partition.metrics.prometheus import Counter, CountRead, Gauge, Histogram, Info, render

# Bucket bounds in seconds, spanning what this runtime sees from a LAN server to a Wi-Fi phone.
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
TPOT_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.045, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
LINK_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)
COMPUTE_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5)


class ServingStats:
    def __init__(self, answerer) -> None:
        def plan_labels() -> dict[str, str]:
            plan = answerer.deployment.plan  # the one served now: a re-plan moves it on
            return {
                "plan_id": plan.plan_id,
                "epoch": str(plan.epoch),
                "model": plan.model.name,
            } | answerer.labels

        self.requests = Counter(
            "partition_requests_total",
            "Requests that ended, by outcome: ok, client_gone, or the HTTP status of the failure.",
            ("outcome",),
        )
        self.resumes = Counter(
            "partition_request_resumes_total",
            "Times an answered request went on after a worker went away and came back mid-request.",
        )
        self.prompt_tokens = Counter("partition_prompt_tokens_total", "Prompt tokens of answered requests.")
        self.generated_tokens = Counter(
            "partition_generation_tokens_total", "Tokens generated for answered requests."
        )
        self.ttft = Histogram(
            "partition_time_to_first_token_seconds",
            "Per answer (each of a request's n choices): from its start on the edge to its first token.",
            TTFT_BUCKETS_S,
        )
        self.tpot = Histogram(
            "partition_time_per_output_token_seconds",
            "Per answer (each of a request's n choices): (last token - first token) / (tokens - 1).",
            TPOT_BUCKETS_S,
        )
        self.link = Histogram(
            "partition_link_latency_seconds",
            "One decode step's activation on a link: encode + wire (one way) + decode.",
            LINK_BUCKETS_S,
            ("src", "dst", "codec"),
        )
        self.compute = Histogram(
            "partition_stage_compute_seconds",
            "One decode step through a stage's segment (hop: its place in the chain).",
            COMPUTE_BUCKETS_S,
            ("hop", "device"),
        )
        self._metrics = [
            Info("partition_plan_info", "The plan this endpoint serves.", plan_labels),
            self.requests,
            self.resumes,
            Gauge(
                "partition_requests_running",
                "Answers generating now (a request's n choices are n).",
                lambda: answerer.running,
            ),
            Gauge(
                "partition_requests_waiting",
                "Answers waiting now (a request's n choices are n), for a session slot or a device's take-back.",
                lambda: answerer.waiting,
            ),
            CountRead(
                "partition_worker_reloads_total",
                "Times the workers were given their segments again after one went away and came back.",
                lambda: answerer.reloads,
            ),
            CountRead(
                "partition_replans_total",
                "Times a worker stayed away and the plan was made again without it (plan_info: the new plan).",
                lambda: answerer.replans,
            ),
            CountRead(
                "partition_rejoins_total",
                "Times a device planned around was back and a plan with it was deployed (plan_info: the new plan).",
                lambda: answerer.rejoins,
            ),
            self.prompt_tokens,
            self.generated_tokens,
            self.ttft,
            self.tpot,
            self.link,
            self.compute,
        ]

    def answered(self, answers: list) -> None:
        """Record a request's answers (a partition.coordinator.answer.Answer per choice): one request,
        its prompt once, and each choice's tokens and timings."""
        self.requests.inc(outcome="ok")
        self.prompt_tokens.inc(len(answers[0].result.prompt_token_ids))
        for answer in answers:
            self._choice(answer)

    def _choice(self, answer) -> None:
        result = answer.result
        self.resumes.inc(answer.resumes)
        self.generated_tokens.inc(len(result.token_ids))
        self.ttft.observe(result.ttft_s)
        self.tpot.observe(result.tpot_s)
        for span in answer.spans:
            if span.token == 0:  # the prompt's step: far larger messages than a decode step's
                continue
            if span.src:
                self.link.observe(span.link_s, src=span.src, dst=span.dst, codec=span.codec)
            if span.compute_s > 0:
                self.compute.observe(span.compute_s, hop=str(span.hop), device=span.dst)

    def ended(self, outcome: str) -> None:
        """Record a request that ended without an answer: "client_gone" or an HTTP status."""
        self.requests.inc(outcome=outcome)

    def render(self) -> str:
        return render(self._metrics)
