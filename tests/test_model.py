import pytest
import torch
from torch import nn

from fer.model import STEMS, ModelConfig, build_model


@pytest.mark.parametrize("stem", STEMS)
def test_every_stem_maps_a_48px_gray_face_to_7_logits(stem):
    model = build_model(ModelConfig(arch="resnet50", dropout=0.0, stem=stem)).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, 1, 48, 48)).shape == (2, 7)


@pytest.mark.parametrize("arch, channels", [("mobilenet_v3_small", 1), ("shufflenet_v2_x0_5", 3)])
def test_the_stride1_stem_doubles_the_last_feature_map_of_any_network(arch, channels):
    def last_map(stem):
        model = build_model(ModelConfig(arch=arch, dropout=0.0, stem=stem, channels=channels)).eval()
        maps = []
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        convs[-1].register_forward_hook(lambda module, args, out: maps.append(out.shape[-1]))
        with torch.inference_mode():
            assert model(torch.randn(1, channels, 48, 48)).shape == (1, 7)
        return maps[0]
    assert last_map("imagenet") == 2 and last_map("stride1") == 3
    with pytest.raises(ValueError, match="ResNet stem"):
        ModelConfig(arch=arch, dropout=0.0, stem="cifar")


def test_built_from_torchvision_resnet50():
    from torchvision.models.resnet import Bottleneck, ResNet
    model = build_model(ModelConfig())
    assert isinstance(model, ResNet)
    assert sum(isinstance(m, Bottleneck) for m in model.modules()) == 16
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7


def count_dropout_calls(model, x):
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()
             if isinstance(m, nn.Dropout)]
    model(x)
    for h in hooks:
        h.remove()
    return len(calls)


def test_dropout_variant_drops_after_all_49_activations():
    model = build_model(ModelConfig(arch="resnet50_dropout", dropout=0.2))
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 17 and all(d.p == 0.2 for d in dropouts)  # stem + one per Bottleneck
    assert count_dropout_calls(model, torch.randn(2, 1, 48, 48)) == 49  # each Bottleneck's relu runs 3x


def test_plain_model_has_no_dropout_and_head_dropout_only_one():
    assert count_dropout_calls(build_model(ModelConfig(arch="resnet50", dropout=0.0)), torch.randn(2, 1, 48, 48)) == 0
    model = build_model(ModelConfig(arch="resnet50", dropout=0.0, head_dropout=0.3))
    assert count_dropout_calls(model, torch.randn(2, 1, 48, 48)) == 1


def test_dropout_is_off_in_eval_mode():
    model = build_model(ModelConfig(arch="resnet50_dropout", dropout=0.3))
    x = torch.randn(2, 1, 48, 48)
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_config_round_trips_and_rejects_nonsense():
    cfg = ModelConfig(arch="resnet50", dropout=0.0, head_dropout=0.2, stem="cifar")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown arch"):
        ModelConfig(arch="vgg")
    with pytest.raises(ValueError, match="unknown stem"):
        ModelConfig(stem="huge")
    with pytest.raises(ValueError, match="resnet50_dropout"):
        ModelConfig(arch="resnet50", dropout=0.1)


def test_the_narrow_resnet_is_resnet18_at_a_fraction_of_its_width():
    from fer.model import narrow_resnet
    cfg = ModelConfig(arch="resnet18", dropout=0.0)
    full, ours = build_model(cfg), narrow_resnet(cfg, 64)  # at torchvision's own width: the same network
    assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    x = torch.randn(2, 1, 48, 48)
    ours.load_state_dict(full.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(ours.eval()(x), full.eval()(x))
    for arch, width in (("resnet18_w32", 32), ("resnet18_w16", 16)):
        for stem in STEMS:
            for norm in ("batch", "group"):
                model = build_model(ModelConfig(arch=arch, dropout=0.0, stem=stem, norm=norm)).eval()
                with torch.inference_mode():
                    assert model(x).shape == (2, 7)
                assert model.conv1.in_channels == 1 and model.layer4[-1].conv2.out_channels == 8 * width
                assert isinstance(model.maxpool, nn.Identity) == (stem in ("no_maxpool", "cifar"))
