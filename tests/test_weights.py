import pickle

import pytest
import torch
from safetensors.torch import save_file

from fer.datasets import load_split
from fer.inference import predict_probs
from fer.model import ModelConfig, build_model
from fer.errors import WeightsError
from fer.paths import DEFAULT_WEIGHTS
from fer.api import load_model
from fer.weights import load_network, read_metadata, save_weights
from tests.conftest import fer_engine, fer_spec


def test_float16_round_trip_keeps_the_predictions(tmp_path, fer_folder):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="resnet50_dropout", dropout=0.1, head_dropout=0.2)
    model = build_model(cfg).eval()
    for module in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.weight.data.uniform_(0.5, 1.5)
    path = save_weights(model, fer_spec(cfg), tmp_path / "w.safetensors", val_acc=0.5)
    loaded, spec = load_network(path)
    faces = load_split(fer_folder, "public")
    before = predict_probs(fer_engine(model, cfg), faces.images)
    after = predict_probs(load_model(path), faces.images)
    assert torch.equal(before.argmax(1), after.argmax(1))
    assert (before - after).abs().max() < 0.02
    assert spec.network == cfg and not loaded.training


def test_shipped_file_is_float16_with_its_metadata(untrained_weights):
    from safetensors import safe_open
    with safe_open(str(untrained_weights), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "F16" in dtypes and "F32" not in dtypes
    meta = read_metadata(untrained_weights)
    assert meta["classes"] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    assert meta["input_size"] == [1, 48, 48] and meta["normalization"]["equalize_hist"] is True


def test_a_safetensors_file_that_is_not_ours_is_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match="not fer weights"):
        load_model(path)


def test_weights_of_another_architecture_are_refused(tmp_path, untrained_weights):
    from safetensors import safe_open
    with safe_open(str(untrained_weights), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    state.pop("fc.weight")
    path = tmp_path / "cut.safetensors"
    save_file(state, str(path), metadata=meta)
    with pytest.raises(WeightsError, match="does not match"):
        load_model(path)


def test_a_pickled_file_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(WeightsError, match="not a safetensors"):
        load_model(path)


@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights yet")
def test_the_shipped_weights_load_on_the_cpu_by_default():
    model = load_model()
    assert next(model.network.parameters()).device.type == "cpu"
    assert model.metadata["val_acc"] > 0.5


@pytest.mark.real_data
@pytest.mark.skipif(not DEFAULT_WEIGHTS.exists(), reason="no shipped weights yet")
def test_the_shipped_weights_pass_the_fer_package_on_raw_private_test(raw_test_zip):
    # The original, not equalized pixels: the preprocessing must equalize them as it did in training. The `fer`
    # package scores 65.9 % on these faces; the CPU flagship issue asked for at least 66 %.
    from fer.evaluate import evaluate
    result = evaluate(load_model(), load_split(raw_test_zip, "private"))
    assert result["n"] == 3589 and result["accuracy"] >= 0.66
