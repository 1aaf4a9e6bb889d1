"""Distillation (fer.distill): Hinton's loss, the teacher's probabilities computed once and kept with the run, and
the checks before any data is read."""
import shutil

import pytest
import torch
import torch.nn.functional as F

from fer.augment import AugmentConfig
from fer.config import TrainConfig
from fer.distill import distillation_loss
from fer.errors import ConfigError
from fer.train import paths_for, train
from fer.weights import read_metadata
from tests.test_train import tiny_config


def test_the_loss_is_the_labels_alone_at_weight_0_and_the_teacher_alone_at_weight_1():
    torch.manual_seed(0)
    logits, labels = torch.randn(8, 7), torch.randint(0, 7, (8,))
    teacher = F.softmax(torch.randn(8, 7), 1)
    assert distillation_loss(logits, labels, teacher, 0.0, 3.0) == pytest.approx(F.cross_entropy(logits, labels).item())
    entropy = -(teacher * teacher.log()).sum(1).mean()
    # KL(p || q) = CE(q; p) - H(p), at temperature 1
    expected = F.cross_entropy(logits, teacher) - entropy
    assert distillation_loss(logits, labels, teacher, 1.0, 1.0) == pytest.approx(expected.item(), rel=1e-5)


def test_a_student_that_already_agrees_with_its_teacher_gets_no_pull_from_it():
    # Seeded: float32 rounding of the two softmaxes, times T^2 = 16, reached 1.01e-6 on one unseeded draw.
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    teacher = F.softmax(logits.detach(), 1)
    loss = distillation_loss(logits, torch.zeros(4, dtype=torch.long), teacher, 1.0, 4.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-5) and logits.grad.abs().max() < 1e-5


def test_temperature_softens_the_teacher_as_its_logits_divided_by_it():
    teacher_logits = torch.tensor([[4.0, 1.0, 0.0]])
    teacher = F.softmax(teacher_logits, 1)
    # At T = 2 both sides are softened alike: the teacher's own logits give no loss, half of them do.
    student = teacher_logits / 2
    assert distillation_loss(teacher_logits, torch.tensor([0]), teacher, 1.0, 2.0) == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(student, torch.tensor([0]), teacher, 1.0, 2.0) > 0.01


def test_a_run_distills_keeps_the_teachers_probabilities_and_a_resume_reads_them(fer_folder, untrained_weights,
                                                                                  tmp_path, capsys):
    out = tmp_path / "student.safetensors"
    train(tiny_config(fer_folder, out, epochs=1, teacher=str(untrained_weights), distill_weight=0.7,
                      distill_temperature=2.0))
    printed = capsys.readouterr().out
    cache = paths_for(out)["teacher"]
    assert "distilling from" in printed and "agrees with" in printed and cache.is_file()
    stored = read_metadata(out)["train_config"]
    assert stored["teacher"] == str(untrained_weights) and stored["distill_weight"] == 0.7
    before = cache.stat().st_mtime_ns
    state = train(tiny_config(fer_folder, out, epochs=2, resume=True, teacher=str(untrained_weights),
                              distill_weight=0.7, distill_temperature=2.0))
    assert "read from" in capsys.readouterr().out and cache.stat().st_mtime_ns == before
    assert [row["epoch"] for row in state["history"]] == [1, 2]


def test_another_teacher_is_computed_again_not_read_from_the_cache(fer_folder, untrained_weights, tmp_path, capsys):
    out = tmp_path / "student.safetensors"
    train(tiny_config(fer_folder, out, epochs=1, teacher=str(untrained_weights)))
    other = tmp_path / "other.safetensors"
    shutil.copy(untrained_weights, other)
    with open(other, "r+b") as f:  # the same header, other bytes in the last tensor
        f.seek(-8, 2)
        f.write(bytes(8))
    capsys.readouterr()
    train(tiny_config(fer_folder, out, epochs=1, teacher=str(other), force=True))
    assert "read from" not in capsys.readouterr().out


def test_a_teacher_that_is_the_runs_own_out_or_missing_or_mixed_is_refused_before_any_data(untrained_weights,
                                                                                          tmp_path):
    with pytest.raises(ConfigError, match="this run's --out"):
        train(tiny_config(tmp_path / "no-data", untrained_weights, teacher=str(untrained_weights), force=True))
    with pytest.raises(ConfigError, match="no such weights file"):
        train(tiny_config(tmp_path / "no-data", tmp_path / "m.safetensors", teacher=str(tmp_path / "absent.safetensors")))
    with pytest.raises(ConfigError, match="MixUp and CutMix"):
        TrainConfig(teacher=str(untrained_weights), augment=AugmentConfig(mixup_alpha=0.2)).validate()
