"""The training-curve plot: drawn from a Trainer log history, nothing written when there is nothing to draw."""

from __future__ import annotations

import pytest

from tunewise.report.curves import metric_keys, plot_training_curve

# A log history as the Trainer keeps it (logging and evaluating every epoch): a training log,
# then an evaluation log, per epoch, and the summary of train() at the end.
HISTORY = [
    {"loss": 2.0, "grad_norm": 3.1, "learning_rate": 1e-3, "epoch": 1.0, "step": 6},
    {"eval_loss": 1.9, "eval_val_mrr@20": 0.30, "eval_runtime": 0.1, "epoch": 1.0, "step": 6},
    {"loss": 1.5, "grad_norm": 2.0, "learning_rate": 5e-4, "epoch": 2.0, "step": 12},
    {"eval_loss": 1.7, "eval_val_mrr@20": 0.42, "eval_runtime": 0.1, "epoch": 2.0, "step": 12},
    {"train_runtime": 3.0, "train_loss": 1.75, "epoch": 2.0, "step": 12},
]


def test_metric_keys_find_the_primary_metric_under_the_trainer_s_names():
    assert metric_keys(HISTORY, "mrr@20") == ["eval_val_mrr@20"]
    assert metric_keys([{"eval_accuracy": 0.8, "eval_loss": 0.3, "step": 1}], "accuracy") == ["eval_accuracy"]
    assert metric_keys(HISTORY, "accuracy") == [] and metric_keys(HISTORY, None) == []


def test_the_curve_is_a_png_with_loss_and_metric(tmp_path):
    from matplotlib.image import imread

    path = plot_training_curve(HISTORY, tmp_path / "curve.png", metric="mrr@20")
    assert path == tmp_path / "curve.png"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert not list(tmp_path.glob(".*"))  # written atomically: no temporary file left


def test_loss_alone_is_drawn_and_an_empty_history_writes_nothing(tmp_path):
    assert plot_training_curve([{"loss": 1.0, "epoch": 1.0, "step": 3}], tmp_path / "a.png", metric="accuracy") is not None
    assert plot_training_curve([{"train_runtime": 1.0, "step": 3}], tmp_path / "b.png") is None
    assert plot_training_curve([], tmp_path / "c.png", metric="accuracy") is None
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_losses_are_left_out_not_plotted(tmp_path, bad):
    history = [{"loss": bad, "step": 1, "epoch": 1.0}, {"loss": 0.5, "step": 2, "epoch": 2.0}]
    assert plot_training_curve(history, tmp_path / "curve.png") is not None
    assert plot_training_curve([{"loss": bad, "step": 1}], tmp_path / "none.png") is None
