"""Bad models and bad prompts: one clear line, exit code 2, no traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from partition.errors import ModelNotFoundError, UnsupportedModelError
from partition.model import load_segment, resolve_model
from partition.model.spec import ModelSpec
from partition.types import Segment


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "partition", *args], capture_output=True, text=True, timeout=120
    )


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_model_lists_builtin_names_and_formats():
    result = _cli("generate", "--model", "no-such-model", "--prompt", "hi")
    _assert_one_line_error(result, "no-such-model", "smollm2-135m", ".gguf", "config.json")


def test_an_empty_model_name_is_named_as_such_not_taken_for_this_folder():
    result = _cli("generate", "--model", "", "--prompt", "hi")
    _assert_one_line_error(result, "the model name is empty", "smollm2-135m")


def test_missing_weights_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelNotFoundError, match="model.safetensors"):
        resolve_model(tmp_path).reader()


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    result = _cli("generate", "--model", str(tmp_path), "--prompt", "hi")
    _assert_one_line_error(result, "mamba", "llama", "qwen2", "gpt2")


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_config_without_a_size_the_architecture_needs_is_named(tmp_path, model_type):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    result = _cli("generate", "--model", str(tmp_path), "--prompt", "hi")
    needed = "num_attention_heads" if model_type == "llama" else "n_embd"
    _assert_one_line_error(result, f"config.json has no '{needed}', which a {model_type} model needs")


def test_not_a_gguf_file(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"definitely not gguf" * 10)
    result = _cli("generate", "--model", str(bogus), "--prompt", "hi")
    _assert_one_line_error(result, "model.gguf", "GGUF")


def test_unsupported_gguf_tensor_type(tiny_dirs, tmp_path):
    """A tensor type we do not dequantize is named with the supported list."""
    import gguf

    path = tmp_path / "iq.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in [("block_count", 1), ("embedding_length", 256), ("feed_forward_length", 256)]:
        writer.add_uint32(f"llama.{key}", value)
    writer.add_uint32("llama.attention.head_count", 4)
    writer.add_uint32("llama.vocab_size", 256)
    # IQ4_NL: 18 bytes per 32 values
    writer.add_tensor(
        "token_embd.weight",
        np.zeros((256, 256 // 32 * 18), dtype=np.uint8),
        raw_shape=(256, 256 // 32 * 18),
        raw_dtype=gguf.GGMLQuantizationType.IQ4_NL,
    )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(UnsupportedModelError, match="IQ4_NL.*Q4_1"):
        load_segment(resolve_model(path), Segment(0, 1))


@pytest.mark.parametrize(("slots", "positions"), [([-1], [0]), ([2], [0]), ([0], [-3])])
def test_a_step_in_no_slot_or_before_position_0_is_refused(tiny_dirs, slots, positions):
    model = load_segment(resolve_model(tiny_dirs["llama"]), Segment(0, 2))
    cache = model.new_cache(slots=2, max_len=16)
    with pytest.raises(ValueError, match=r"positions must be >= 0 and slots in \[0, 2\)"):
        model(torch.tensor([[1, 2]]), cache, slots=slots, positions=positions)
    assert not cache.k.any() and not cache.v.any()  # nothing was written anywhere


def test_prompt_longer_than_context(tiny_dirs, tmp_path):
    import shutil

    from tokenizers import Tokenizer, models, pre_tokenizers

    model_dir = tmp_path / "tiny"
    shutil.copytree(tiny_dirs["llama"], model_dir)
    vocab = {f"w{i}": i for i in range(256)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(model_dir / "tokenizer.json"))
    prompt = " ".join(f"w{i % 256}" for i in range(300))  # the tiny model's context is 256
    result = _cli("generate", "--model", str(model_dir), "--prompt", prompt)
    _assert_one_line_error(result, "300 tokens", "256")
    ok = _cli(
        "generate", "--model", str(model_dir), "--prompt", "w1 w2 w3", "--max-new-tokens", "4", "--json"
    )
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["token_ids"]) == 4


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/model.safetensors", ".."])
def test_an_index_naming_a_shard_outside_its_directory_is_refused(tmp_path, shard):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    index = {"weight_map": {"model.embed_tokens.weight": shard}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(UnsupportedModelError, match="names shard\\(s\\) outside its directory"):
        resolve_model(tmp_path).reader()


@pytest.mark.parametrize("flag", ["attention_bias", "mlp_bias"])
def test_a_llama_with_biases_these_blocks_lack_is_refused(tmp_path, flag):
    config = {"model_type": "llama", "num_hidden_layers": 1, "hidden_size": 8, "intermediate_size": 16}
    config |= {"num_attention_heads": 2, "vocab_size": 10, flag: True}
    with pytest.raises(UnsupportedModelError, match=f"llama with {flag}=true is not supported"):
        ModelSpec.from_hf_config(config)


@pytest.mark.parametrize("command", [["generate"], ["serve", "--plan", "plan.json"]])
def test_a_system_message_without_chat_is_refused(command):
    result = _cli(*command, "--prompt", "Hello", "--system", "Answer in French.")
    _assert_one_line_error(result, "--system is the chat's system message: give --chat too")


@pytest.mark.parametrize(
    ("file", "content", "says"),
    [
        ("tokenizer.json", "{}", "tokenizer.json is not a tokenizer.json the tokenizers library reads"),
        ("config.json", None, "config.json: hidden_size = 'big' is not a whole number > 0"),
    ],
)
def test_a_corrupt_file_of_a_checkpoint_is_named_in_one_line(tiny_dirs, tmp_path, file, content, says):
    import shutil

    model = shutil.copytree(tiny_dirs["llama"], tmp_path / "model")
    if content is None:  # a size of the wrong type
        config = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps({**config, "hidden_size": "big"}))
    else:
        (model / file).write_text(content)
    result = _cli("generate", "--model", str(model), "--prompt", "hi", "--max-new-tokens", "2")
    _assert_one_line_error(result, says)


def test_a_safetensors_file_that_cannot_be_read_is_named(tiny_dirs, tmp_path):
    import shutil

    model = shutil.copytree(tiny_dirs["llama"], tmp_path / "model")
    (model / "model.safetensors").write_text("not a checkpoint" * 8)
    with pytest.raises(
        UnsupportedModelError, match="model.safetensors is not a safetensors file that can be"
    ):
        resolve_model(model).reader()
