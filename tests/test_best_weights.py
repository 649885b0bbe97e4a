"""Selection on validation: which epoch is best.

That each run records it, tested on that epoch's weights, is tested for both engines in ``test_engines.py``;
that the members of one population select on their own curves, in ``test_population.py``."""

from __future__ import annotations

from dropout_lab.training.best_weights import best_row, improves


def test_improves_and_best_row_keep_the_first_of_equals() -> None:
    curves = [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0}, {"epoch": 2, "val_acc": 0.7, "val_loss": 0.9},
              {"epoch": 3, "val_acc": 0.7, "val_loss": 0.8}]
    assert best_row(curves, "val_acc")["epoch"] == 2
    assert best_row(curves, "val_loss")["epoch"] == 3
    assert not improves(float("nan"), None, "val_acc") and improves(0.1, None, "val_acc")
