"""`partition serve --http` with a profiled cluster file: a worker that dies for good is planned around,
and the endpoint goes on answering on the new plan (real workers, the CLI in its own process)."""

import re
import signal
import subprocess
import sys
from dataclasses import replace

from partition.artifacts import load_plan, save_plan
from partition.transport.local import spawn_workers, stop_workers
from tests.api.test_serve_http_cli import ask_paris, health, metrics, wait_for_url
from tests.coordinator.plans import profiled_cluster, split_plan

STAGES = [("phone", 0, 16, "raw"), ("server-a", 16, 24, "raw"), ("server-b", 24, 32, "raw")]


def test_serve_http_replans_around_a_worker_that_stays_away(smollm2, tmp_path):
    workers = {w.name: w for w in spawn_workers(["server-a", "server-b"], extra_args=("--threads", "1"))}
    serve = None
    try:
        addresses = {name: worker.address for name, worker in workers.items()}
        cluster = profiled_cluster(smollm2, tmp_path, addresses, dict.fromkeys(addresses, 8.0))
        plan = replace(split_plan(smollm2, STAGES), codecs=("raw",))
        save_plan(plan, tmp_path / "plan.json")
        serve = subprocess.Popen(
            [sys.executable, "-m", "partition", "serve", "--plan", str(tmp_path / "plan.json"), "--cluster",
             str(cluster), "--threads", "1", "--max-context", "256", "--http", "127.0.0.1:0",
             "--reconnect-wait", "3"],  # server-b stays away: one reconnect attempt tells so
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        url, _ = wait_for_url(serve)
        assert ask_paris(url)

        workers["server-b"].process.kill()  # for good: it is not started again
        workers["server-b"].process.wait(timeout=30)
        status, said = health(url)  # in rotation still: the next request plans around it
        assert status == 200 and said["status"] == "degraded" and said["away"] == ["server-b"], said
        assert (
            said["advice"]
            == "server-b did not answer; the next request waits for it up to 3 s, then plans around it"
        )
        assert ask_paris(url)  # answered on a plan without server-b
        replanned = load_plan(tmp_path / "plan.epoch2.json")
        assert {stage.device for stage in replanned.stages} == {"phone", "server-a"}
        scraped = metrics(url)
        assert "partition_replans_total 1" in scraped and "partition_rejoins_total 0" in scraped
        assert re.search(rf'partition_plan_info\{{plan_id="{replanned.plan_id}",epoch="2"', scraped), scraped
        assert ask_paris(url)  # and goes on answering there
        status, said = health(url)
        assert status == 200 and said["status"] == "degraded" and said["planned_around"] == ["server-b"], said
        assert "away" not in said and said["plan_id"] == replanned.plan_id

        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err[-3000:]
        assert "re-planned without server-b" in err and "Traceback" not in err, err[-3000:]
    finally:
        if serve is not None and serve.poll() is None:
            serve.kill()
            serve.wait()
        stop_workers(list(workers.values()))
