"""Our GGUF reader against gguf-py's GGUFReader (the reference): the same key/values and the same tensor
bytes for the embedded model and tiny files of every quantization we load; a broken file is refused."""

import numpy as np
import pytest
from gguf import GGUFReader

from partition.errors import UnsupportedModelError
from partition.model import resolve_model
from partition.model.gguf_file import GGUFFile


def assert_reads_as_the_reference(path) -> None:
    ours, reference = GGUFFile(path), GGUFReader(path)
    keys = [key for key in reference.fields if not key.startswith("GGUF.")]  # its header, as fields
    assert list(ours.fields) == keys
    for key in keys:
        assert ours.fields[key] == reference.fields[key].contents(), key
    assert len(ours.tensors) == len(reference.tensors)
    for mine, theirs in zip(ours.tensors, reference.tensors, strict=True):
        assert (mine.name, mine.tensor_type) == (theirs.name, theirs.tensor_type)
        assert mine.shape == tuple(theirs.shape.tolist()), mine.name
        assert mine.data.dtype == theirs.data.dtype and mine.data.shape == theirs.data.shape, mine.name
        assert np.array_equal(mine.data, theirs.data), mine.name


def test_the_embedded_model_reads_as_gguf_py_reads_it(smollm2):
    assert_reads_as_the_reference(smollm2.path)


def test_tiny_files_of_every_quantization_read_as_gguf_py_reads_them(tiny_ggufs):
    for path in tiny_ggufs.values():
        assert_reads_as_the_reference(path)


@pytest.mark.parametrize("cut", [4, 20, 200, -100])
def test_a_file_cut_short_is_refused_with_its_name(smollm2, tmp_path, cut):
    data = smollm2.path.read_bytes()
    short = tmp_path / "short.gguf"
    short.write_bytes(data[:cut] if cut > 0 else data[: len(data) // 2 + cut])
    with pytest.raises(UnsupportedModelError, match="short.gguf is not a readable GGUF file") as refused:
        resolve_model(short).spec.n_blocks  # noqa: B018 (reading it is the test)
    if cut > 0:  # cut inside the header (a cut in the tensor data: the next test)
        assert "it is cut short; download it again" in str(refused.value)


def test_a_file_cut_in_half_is_said_to_be_truncated_with_its_sizes(tmp_path):
    whole = resolve_model("smollm2-135m").path
    half = tmp_path / "half.gguf"
    with open(whole, "rb") as source:
        half.write_bytes(source.read(whole.stat().st_size // 2))
    with pytest.raises(UnsupportedModelError) as refused:
        resolve_model(half).spec  # noqa: B018 (reading it is the test)
    assert str(refused.value) == (
        f"{half} is not a readable GGUF file: the file is truncated: it has {half.stat().st_size} bytes, "
        f"and its header and tensor table need {whole.stat().st_size}; download it again"
    )


def write_gguf(path, endian=None, alignment: int | None = None):
    """A small GGUF of one F32 tensor, as gguf-py writes it."""
    import gguf

    options = {"endianess": endian} if endian is not None else {}
    writer = gguf.GGUFWriter(str(path), "llama", **options)
    if alignment is not None:
        writer.add_uint32("general.alignment", alignment)  # as written, unchecked
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_big_endian_file_and_a_bad_alignment_are_named(tmp_path):
    import gguf

    big = write_gguf(tmp_path / "big.gguf", endian=gguf.GGUFEndian.BIG)
    with pytest.raises(ValueError, match="big-endian GGUF"):
        GGUFFile(big)
    with pytest.raises(ValueError, match="general.alignment is 0"):
        GGUFFile(write_gguf(tmp_path / "zero.gguf", alignment=0))
    with pytest.raises(UnsupportedModelError, match="zero.gguf is not a readable GGUF file"):
        resolve_model(tmp_path / "zero.gguf").spec  # noqa: B018
    small = GGUFFile(write_gguf(tmp_path / "small.gguf"))
    (tensor,) = small.tensors
    assert tensor.shape == (8, 4) and tensor.data.tolist() == np.arange(32).reshape(4, 8).tolist()


LLAMA_META = {
    "general.architecture": "llama",
    "llama.embedding_length": 64,
    "llama.attention.head_count": 4,
    "llama.block_count": 2,
    "llama.feed_forward_length": 128,
    "llama.vocab_size": 100,
}


@pytest.mark.parametrize(
    "scaling",
    [
        {"llama.rope.scaling.type": "linear"},
        {"llama.rope.scaling.type": "yarn"},
        {"llama.rope.scale_linear": 4.0},
    ],
)
def test_a_gguf_with_rope_scaling_is_refused(scaling):
    from partition.model.gguf_spec import spec_from_gguf

    assert spec_from_gguf(LLAMA_META | {"llama.rope.scaling.type": "none"}, set()).rope_scaling is None
    with pytest.raises(UnsupportedModelError, match="this GGUF scales its rope"):
        spec_from_gguf(LLAMA_META | scaling | {"llama.rope.scaling.factor": 4.0}, set())
