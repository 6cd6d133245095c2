"""What losing a worker for good costs a request under way (serve): re-planned around against sent again;
and what its return costs the next request.

    python benchmarks/replan.py [--tokens 64] [--kill-at 32] [--rounds 3] [--threads 1]
                                [--json out/replan.json]

Run from the repository root. The default model in three stages, raw codec: the edge (this process)
holds the embedding and the first 15 blocks, `partition worker` processes on 127.0.0.1 hold 8 blocks
(server-a) and the last 7 with the head (server-b). The cluster the coordinator re-plans on is made of
synthetic profiles of this CPU (partition.plan.synthetic: the edge at a quarter of its speed). Each
request continues the same prompt greedily for --tokens tokens (EOS ignored). Per round, in turn:
- uninterrupted: the request on the three stages (what the others add to);
- re-planned: server-b is killed after --kill-at tokens and not started again; partition's coordinator
  plans without it, deploys the new plan and replays the tokens seen so far on it
  (partition/coordinator/replan.py);
- taken back: server-b is started again; the next request first plans with it again, which brings
  back the three-stage plan (deployed, one epoch on), then generates on it;
- sent again: what a runtime that routes new requests around a lost worker but loses the request
  under way gives its user: the request fails, and the client sends it again; that request finds
  server-b gone and is served on the same new plan, generating from the start.
Every one must end with the uninterrupted run's text. Reported: time from the request's start to its
last token (medians over rounds), the ratio sent-again / re-planned, and what the take-back adds.
"""

from __future__ import annotations

from interruptions import PROMPT, parse_args, print_medians, timed, write_report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv, "out/replan.json", "tokens produced when server-b is killed")

    from dataclasses import replace

    import torch

    from partition.coordinator.answer import Answerer
    from partition.coordinator.deploy import deploy
    from partition.coordinator.replan import Failover
    from partition.model import resolve_model
    from partition.model.generation import GenerationRequest
    from partition.model.tokenizer import load_tokenizer
    from partition.plan.synthetic import chosen_split_plan, star_cluster, synthetic_profile
    from partition.transport.channels import RECONNECT_WAIT_S
    from partition.transport.client import StageCallError
    from partition.transport.local import spawn_worker, spawn_workers, stop_workers
    from partition.types import ModelRef, Segment, Stage, Workload

    torch.set_num_threads(args.threads)
    source = resolve_model("smollm2-135m")
    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    stages = (
        Stage("edge", Segment(0, 16), "raw"),
        Stage("server-a", Segment(16, 24), "raw"),
        Stage("server-b", Segment(24, 32), "raw"),
    )
    workload = Workload(prompt_tokens=16, new_tokens=args.tokens)
    plan = replace(chosen_split_plan(model, stages, workload, "edge"), codecs=("raw",))
    cluster = star_cluster(
        synthetic_profile("edge", speed=0.25, model=model),
        8.0,
        [(name, synthetic_profile(name, model=model), 8.0) for name in ("server-a", "server-b")],
        edge_link=(1000.0, 0.5),
        server_link=(1000.0, 0.5),
    )
    worker_args = ("--threads", str(args.threads))
    workers = {w.name: w for w in spawn_workers(["server-a", "server-b"], extra_args=worker_args)}
    addresses = {name: worker.address for name, worker in workers.items()}
    port_b = int(addresses["server-b"].rsplit(":", 1)[1])

    def kill_server_b_at(k: int):
        chunks = []

        def on_text(text: str) -> None:
            chunks.append(text)
            if len(chunks) == k:
                workers["server-b"].process.kill()
                workers["server-b"].process.wait(timeout=30)

        return on_text

    def start_server_b_again() -> None:
        if workers["server-b"].process.poll() is not None:
            workers["server-b"] = spawn_worker("server-b", port=port_b, extra_args=worker_args)

    def answerers() -> tuple[Answerer, Answerer]:
        """The three-stage plan deployed again (server-b started again first when it is down): one
        answerer that re-plans, resumes and takes back (looking at every request), one over the same
        deployment that loses the request."""
        start_server_b_again()
        # server-b's channel in this process may still be backing off from when it was away
        deployment = deploy(plan, addresses, max_context=256, max_sessions=1, connect_wait_s=RECONNECT_WAIT_S)
        pair = (
            Answerer(deployment, failover=Failover(cluster, addresses, recheck_s=0.0)),
            Answerer(deployment, max_resumes=0),
        )
        for served in pair:
            served.eos_ids = ()  # every request generates exactly --tokens tokens
        return pair

    def sent_again(losing: Answerer, served: Answerer):
        try:
            losing.answer(request, on_text=kill_server_b_at(args.kill_at))
        except StageCallError:
            return served.answer(request)  # the client sends it again
        raise AssertionError("the request was not lost")

    runs: dict[str, list[float]] = {"uninterrupted": [], "re-planned": [], "taken back": [], "sent again": []}
    texts: dict[str, set[str]] = {name: set() for name in runs}
    new_plan = None
    try:
        ids = load_tokenizer(source).encode(PROMPT)
        request = GenerationRequest(ids, args.tokens, context=len(ids) + args.tokens)
        for _ in range(args.rounds):
            served, _ = answerers()
            try:
                served.answer(GenerationRequest(ids, 8, context=len(ids) + 8))  # warm-up, discarded
                timed(runs, texts, "uninterrupted", served.answer, request)
                kill = kill_server_b_at(args.kill_at)
                answer = timed(runs, texts, "re-planned", served.answer, request, on_text=kill)
                assert served.replans == 1 and answer.resumes == 1, (served.replans, answer.resumes)
                new_plan = answer.plan
                start_server_b_again()
                answer = timed(runs, texts, "taken back", served.answer, request)
                assert served.rejoins == 1 and answer.plan.stages == plan.stages, served.rejoins
            finally:
                served.close()

            served, losing = answerers()
            try:
                answer = timed(runs, texts, "sent again", sent_again, losing, served)
                assert served.replans == 1 and answer.plan == new_plan, served.replans
            finally:
                served.close()  # the deployment both answerers used, and the one of the new plan
    finally:
        stop_workers(list(workers.values()))

    same_text = len(set.union(*texts.values())) == 1
    new_split = " ".join(f"{s.device}{s.segment}" for s in new_plan.stages)
    print(
        f"smollm2-135m, edge [0,16) here + server-a [16,24) + server-b [24,32) in worker processes, "
        f"{args.tokens} tokens, server-b killed for good after {args.kill_at}, {args.rounds} rounds; "
        f"re-planned to {new_split}"
    )
    median = print_medians(runs)
    ratio = median["sent again"] / median["re-planned"]
    write_report(
        args, runs, median, replanned_to=new_split, sent_again_over_replanned=ratio, same_text=same_text
    )
    print(
        f"replan: losing a worker for good mid-request costs {median['re-planned'] - median['uninterrupted']:.2f} s "
        f"re-planned against {median['sent again'] - median['uninterrupted']:.2f} s sent again "
        f"(sent again / re-planned = {ratio:.2f}x); its return costs the next request "
        f"{median['taken back'] - median['uninterrupted']:.2f} s to deploy the plan with it again; "
        f"same text: {same_text}; JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
