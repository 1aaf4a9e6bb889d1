"""Issue 35: every classification network torchvision offers (`torchvision.models.list_models`) either goes the
whole way -- one training step on tiny faces, its weights saved and loaded, exported to ONNX, a photo predicted
with each engine -- or is refused by name at `train --arch`, in one line, before any data is read.

Slow (80 networks, some of 600 M parameters): not in the default run; `pytest -m slow tests/test_every_torchvision_network.py`."""
import pytest

from fer.errors import ConfigError
from fer.model import ModelConfig, check_input_size, torchvision_archs
from fer.weights import load_network
from tests.conftest import PORTRAITS
from tests.test_hostile_inputs import one_line_error, run

pytestmark = pytest.mark.slow


def reads_a_face(arch: str) -> bool:
    try:
        check_input_size(ModelConfig(arch=arch, dropout=0.0))
        return True
    except ConfigError:
        return False


@pytest.mark.parametrize("arch", torchvision_archs())
def test_a_torchvision_network_goes_the_whole_way_or_is_refused_by_name(arch, fer_folder, tmp_path, capsys):
    out = tmp_path / f"{arch}.safetensors"
    code, _, err = run(["train", "--data", fer_folder, "--arch", arch, "--epochs", "1", "--batch-size", "7",
                        "--subset", "14", "--val-subset", "7", "--no-progress", "--out", out], capsys)
    if not reads_a_face(arch):
        assert code == 2 and one_line_error(err) and arch in err, err
        assert not out.exists()
        return
    assert code == 0, err
    assert load_network(out)[1].arch == arch
    code, _, err = run(["export", "--weights", out], capsys)
    if code == 2 and "an ONNX file at most" in err:  # regnet_y_128gf: 2.6 GB of float32 weights
        assert one_line_error(err), err
        engines = ("torch",)
    else:
        assert code == 0, err
        engines = ("torch", "onnx")
    for engine in engines:
        code, stdout, err = run(["predict", PORTRAITS[0], "--weights", out, "--engine", engine], capsys)
        assert code == 0 and PORTRAITS[0].name in stdout, (engine, err)
