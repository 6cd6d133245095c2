"""What a worker restart costs a request under way (serve): resuming it against sending it again.

    python benchmarks/resume.py [--tokens 64] [--kill-at 32] [--rounds 3] [--threads 1]
                                [--json out/resume.json]

Run from the repository root. The default model is split in two: the edge (this process) holds the
embedding and the first 15 blocks, one `partition worker` process on 127.0.0.1 the other 15 and the
head, raw codec. Each request continues the same prompt greedily for --tokens tokens (EOS ignored).
When the request has produced --kill-at tokens, the worker is killed and started again at the same
port (as a supervisor would; the start is part of what the request waits for). Per round, in turn:
- uninterrupted: the request with no restart (what the others add to);
- resumed: partition's coordinator opens a new session when the worker is back and replays the
  tokens seen so far in one prefill step (partition/coordinator/resume.py);
- sent again: what a runtime that loses the request gives its user (Petals, exo, llama.cpp RPC, vLLM
  without resumption): the request fails, and the client sends it again once the worker is back
  (that request loads the restarted worker again first, as every partition request does).
Both must end with the uninterrupted run's text. Reported: time from the request's start to its last
token (medians over rounds), the restart's own time, and the ratio sent-again / resumed.
"""

from __future__ import annotations

import statistics
import time

from interruptions import PROMPT, parse_args, print_medians, timed, write_report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__, argv, "out/resume.json", "tokens produced when the worker is killed")

    import torch

    from partition.coordinator.answer import Answerer
    from partition.coordinator.deploy import deploy
    from partition.model import resolve_model
    from partition.model.generation import GenerationRequest
    from partition.plan.synthetic import halves_plan
    from partition.transport.client import StageCallError
    from partition.transport.local import spawn_worker
    from partition.types import ModelRef

    torch.set_num_threads(args.threads)
    source = resolve_model("smollm2-135m")
    model = ModelRef(source.name, source.digest, source.spec.n_blocks)
    plan = halves_plan(model, source.spec.n_units, args.tokens)
    half = plan.stages[0].segment.end
    worker_args = ("--threads", str(args.threads))
    worker = spawn_worker("server", extra_args=worker_args)
    port = int(worker.address.rsplit(":", 1)[1])
    restart_s: list[float] = []

    def restart_at(k: int):
        """on_text for one request: after its k-th text chunk, kill the worker and start it again."""
        chunks = []

        def on_text(text: str) -> None:
            nonlocal worker
            chunks.append(text)
            if len(chunks) == k:
                started = time.perf_counter()
                worker.process.kill()
                worker.process.wait(timeout=30)
                worker = spawn_worker("server", port=port, extra_args=worker_args)
                restart_s.append(time.perf_counter() - started)

        return on_text

    runs: dict[str, list[float]] = {"uninterrupted": [], "resumed": [], "sent again": []}
    texts: dict[str, set[str]] = {name: set() for name in runs}
    try:
        deployment = deploy(plan, {"server": worker.address}, max_context=256, max_sessions=1)
        try:
            resuming = Answerer(deployment)
            losing = Answerer(deployment, max_resumes=0)  # a lost worker ends the request
            for answerer in (resuming, losing):
                answerer.eos_ids = ()  # every request generates exactly --tokens tokens
            ids = resuming.tokenizer.encode(PROMPT)
            request = GenerationRequest(ids, args.tokens, context=len(ids) + args.tokens)
            resuming.answer(GenerationRequest(ids, 8, context=len(ids) + 8))  # warm-up, discarded

            def sent_again():
                try:
                    losing.answer(request, on_text=restart_at(args.kill_at))
                except StageCallError:
                    return resuming.answer(request)  # the worker is back: the client sends it again
                raise AssertionError("the request was not lost")

            for _ in range(args.rounds):
                timed(runs, texts, "uninterrupted", resuming.answer, request)
                answer = timed(
                    runs, texts, "resumed", resuming.answer, request, on_text=restart_at(args.kill_at)
                )
                assert answer.resumes == 1, answer.resumes
                timed(runs, texts, "sent again", sent_again)
        finally:
            deployment.close()
    finally:
        worker.stop()

    restart = statistics.median(restart_s)
    same_text = len(set.union(*texts.values())) == 1
    print(
        f"smollm2-135m, edge [0,{half}) here + 1 worker process [{half},{source.spec.n_units}), "
        f"{args.tokens} tokens, worker killed and started again after {args.kill_at}, {args.rounds} rounds"
    )
    median = print_medians(runs)
    ratio = median["sent again"] / median["resumed"]
    print(f"  worker restart (kill, start, ready): {restart:.2f} s")
    write_report(
        args, runs, median, worker_restart_s=restart_s, sent_again_over_resumed=ratio, same_text=same_text
    )
    print(
        f"resume: a worker restart mid-request costs {median['resumed'] - median['uninterrupted']:.2f} s "
        f"resumed against {median['sent again'] - median['uninterrupted']:.2f} s sent again "
        f"(sent again / resumed = {ratio:.2f}x; restart {restart:.2f} s); same text: {same_text}; "
        f"JSON in {args.json}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
