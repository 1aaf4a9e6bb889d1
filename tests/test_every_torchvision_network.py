"""Issue 35: every classification network torchvision offers (`torchvision.models.list_models`) either goes the
whole way -- one training step on tiny faces, its weights saved and loaded, exported to ONNX, a photo predicted
with each engine -- or is refused by name at `train --arch`, in one line, before any data is read.

Slow (80 networks, some of 600 M parameters): not in the default run; `pytest -m slow tests/test_every_torchvision_network.py`."""
import pytest

from fer.model import torchvision_archs
from fer.weights import load_network
from tests.conftest import PORTRAITS
from tests.test_hostile_inputs import one_line_error, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", torchvision_archs())
def test_a_torchvision_network_goes_the_whole_way_or_is_refused_by_name(arch, fer_folder, tmp_path, capsys):
    out = tmp_path / f"{arch}.safetensors"
    code, _, err = run(["train", "--data", fer_folder, "--arch", arch, "--epochs", "1", "--batch-size", "7",
                        "--subset", "14", "--val-subset", "7", "--no-progress", "--out", out], capsys)
    if code == 2:  # refused by fer.model.check_input_size, before any data is read
        assert one_line_error(err) and f"{arch} cannot read a 48 x 48 face" in err, err
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
