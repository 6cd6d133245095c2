"""`partition generate` on the embedded default model, as a user runs it."""

import json
import subprocess
import sys


def test_chat_question_answers_paris():
    result = subprocess.run(
        [sys.executable, "-m", "partition", "generate", "--model", "smollm2-135m", "--chat", "--prompt",
         "What is the capital of France?", "--json"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert "Paris" in out["text"]
    assert out["token_ids"] and out["prompt_token_ids"][-4:] == [
        1,
        520,
        9531,
        198,
    ]  # "<|im_start|>assistant\n"
    assert out["timings"]["ttft_s"] > 0 and out["timings"]["tpot_s"] > 0
    assert out["finish_reason"] == "eos"
