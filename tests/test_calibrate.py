import torch

from fer.calibrate import expected_calibration_error, fit_temperature, reliability_bins, write_temperature
from fer.weights import read_metadata


def test_temperature_undoes_overconfidence():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 7) * 2
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    overconfident = true_logits * 3  # what an overfit network outputs
    temperature = fit_temperature(overconfident, labels)
    assert 2.6 < temperature < 3.4
    before = expected_calibration_error(overconfident.softmax(1), labels)
    after = expected_calibration_error((overconfident / temperature).softmax(1), labels)
    assert after < before / 3 and after < 0.03


def test_ece_of_a_perfectly_calibrated_bin_is_zero():
    probs = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])  # 75 % right at 75 % confidence
    assert abs(expected_calibration_error(probs, labels)) < 1e-6
    bins = reliability_bins(probs, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 4


def test_temperature_is_stored_in_the_weights_and_used_by_predict(tmp_path, untrained_weights):
    import shutil
    from fer.api import load_model
    path = tmp_path / "w.safetensors"
    shutil.copy(untrained_weights, path)
    write_temperature(path, 1.7)
    assert read_metadata(path)["temperature"] == 1.7
    assert load_model(path).spec.temperature == 1.7
