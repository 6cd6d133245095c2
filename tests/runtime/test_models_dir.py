import pytest

from partition.errors import ModelNotFoundError
from partition.runtime.errors import InvalidRequestError, ModelAccessError
from partition.runtime.models_dir import resolve_allowed
from tests.model.checkpoints import save_tiny_hf


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    save_tiny_hf("llama", root / "tiny")
    return root


def test_relative_and_absolute_paths_inside_are_allowed(models):
    assert resolve_allowed("tiny", models).path == (models / "tiny").resolve()
    assert resolve_allowed(str(models / "tiny"), models).format == "hf"


@pytest.mark.parametrize("name", ["../outside", "tiny/../../outside", "/etc", "/etc/passwd"])
def test_paths_leading_outside_are_denied(models, tmp_path, name):
    save_tiny_hf("llama", tmp_path / "outside")
    with pytest.raises(ModelAccessError, match="outside the worker's --models-dir") as refused:
        resolve_allowed(name, models)
    assert str(models.resolve()) not in str(refused.value)  # a caller never learns the worker's paths


def test_symlinks_out_of_the_models_dir_are_denied(models, tmp_path):
    outside = save_tiny_hf("llama", tmp_path / "elsewhere")
    (models / "link").symlink_to(outside)
    with pytest.raises(ModelAccessError):
        resolve_allowed("link", models)
    # a model directory whose file points outside (e.g. at a secret) is refused too
    sneaky = models / "sneaky"
    sneaky.mkdir()
    (sneaky / "config.json").symlink_to(outside / "config.json")
    with pytest.raises(ModelAccessError):
        resolve_allowed("sneaky", models)


def test_without_a_models_dir_only_builtin_names_resolve(models):
    with pytest.raises(ModelAccessError, match="no --models-dir"):
        resolve_allowed(str(models / "tiny"), None)
    with pytest.raises(InvalidRequestError, match="no model named"):
        resolve_allowed("", models)


def test_missing_model_inside_is_not_found(models):
    with pytest.raises(ModelNotFoundError, match="'nope' is not in this worker's --models-dir") as missing:
        resolve_allowed("nope", models)
    assert str(models.resolve()) not in str(missing.value)


def test_an_unchanged_model_is_opened_once_and_a_changed_one_again(models):
    first = resolve_allowed("tiny", models)
    assert resolve_allowed("tiny", models) is first  # a redeploy does not parse the model again
    digest = first.digest
    config = models / "tiny" / "config.json"
    config.write_text(config.read_text().replace("}", ', "changed": true}', 1))  # rewritten in place
    again = resolve_allowed("tiny", models)
    assert again is not first and again.digest != digest
