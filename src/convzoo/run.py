"""A run as every front door sees it: a trained network with its directory, configuration and history.

    Run.open(run_dir, device)     a finished run read back from its directory
    run.predict(images)           one ``Prediction`` per image (files, folders, globs, tensors, PIL images)
    run.evaluate()                an ``Evaluation`` on the test images the run was scored on
    run.evaluated()               the same with the images: an ``EvaluatedRun``, what its report shows
    run.show_results()            the mistakes of highest loss and the most confused classes (inline in a notebook)
    run.export("onnx")            the network as an ONNX or TorchScript file, checked against PyTorch

Training returns a ``Run`` (``convzoo.train.fit``), the Python API hands it out (``convzoo.api``) and the
command line prints from it: one type, whichever door a run came through. Its methods speak Python
(``convzoo.terms.python_door``) unless they are called through another door.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .config import TrainConfig
from .escape import terminal
from .evaluate import Evaluation, evaluate_model, test_split
from .export import ExportResult, export_run
from .monitor import at_chance
from .predict import Prediction, predict_images
from .progress import Progress, progress_for
from .rundir import load_run, read_metrics, read_result, read_run_config, run_classes, train_seconds
from .terms import python_door

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass
class Run:
    """A trained run: its directory, configuration, network (in evaluation mode) and per-epoch metrics."""

    run_dir: Path
    config: TrainConfig
    model: nn.Module | None = field(repr=False)  # None on the other ranks of a torchrun job (rank 0 holds it)
    device: torch.device
    history: list[dict] = field(default_factory=list, repr=False)
    warnings: list[str] = field(default_factory=list)  # e.g. that the run finished at chance
    evaluation: Evaluation | None = field(default=None, repr=False)  # the last one, when training just made it

    @classmethod
    @python_door
    def open(cls, run_dir: str | Path, device: str = "auto") -> Run:
        """The finished run in ``run_dir`` with its network on ``device``."""
        config, model, dev = load_run(run_dir, device)
        return cls(Path(run_dir), config, model, dev, read_metrics(run_dir))

    @cached_property
    def meta(self) -> dict:
        """``config.json``: the configuration (a ``TrainConfig`` under ``"config"``), model, versions, device,
        command."""
        return read_run_config(self.run_dir)

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names of the run's data, in label order (Fashion-MNIST's for a run written before ``--data``)."""
        return run_classes(self.meta)

    @property
    def data(self) -> dict:
        """What the run trained on (``config.json``'s ``"data"``: the set or folder, classes, channels, size, split)."""
        return self.meta["data"]

    @property
    @python_door
    def result(self) -> dict:
        """``result.json``: test accuracy, training time, epochs, per-class accuracy."""
        return read_result(self.run_dir)

    @property
    def test_acc(self) -> float:
        """The final test accuracy (``metrics.jsonl`` rounds it to 6 digits; training's own evaluation does not; a run
        that scored its epochs on a validation split has it in ``result.json`` only)."""
        if self.evaluation is not None:
            return self.evaluation.accuracy
        return self.history[-1]["test_acc"] if "test_acc" in self.history[-1] else self.result["test_acc"]

    @property
    def val_acc(self) -> float | None:
        """The last epoch's accuracy on the validation split the run held out (``val_fraction``), else None."""
        return self.history[-1].get("val_acc") if self.history else None

    @property
    def epochs(self) -> int:
        return len(self.history)

    @property
    def train_seconds(self) -> float:
        return train_seconds(self.history)

    @property
    def learned(self) -> bool:
        """Whether the final test accuracy is above chance."""
        return not at_chance(self.test_acc, len(self.classes))

    def to_json(self) -> dict:
        """What ``convzoo train --json`` prints and ``result.json`` holds besides the accuracy per class."""
        validation = {} if self.val_acc is None else {"val_acc": self.val_acc}
        return {"run_dir": str(self.run_dir), "test_acc": self.test_acc, **validation,
                "train_seconds": round(self.train_seconds, 3), "epochs": self.epochs, "learned": self.learned,
                "warnings": self.warnings}

    @python_door
    def predict(self, images: Any, *, top_k: int | None = None, invert: str = "auto") -> list[Prediction]:
        """Classify ``images``: one ``Prediction`` each (top ``top_k`` classes, default 3 or all of fewer,
        probabilities, and, for a run on Fashion-MNIST, whether the image is unlike it);
        ``convzoo.predict.predict_images`` says what ``images`` may be and how they are read for the run's data."""
        return predict_images(self.model, self.config, self.device, images, top_k=top_k, invert=invert,
                              data=self.data)

    @python_door
    def show_results(self, count: int = 16, *, data_dir: str | Path | None = None) -> Figure:
        """The mistakes of highest loss on the test images, with the probability the network gave its answer,
        after a printed list of the most confused pairs of classes; in a notebook the figure shows inline
        (fastai's ``plot_top_losses`` and ``most_confused``)."""
        from .figures import mistakes_figure  # matplotlib: only when a picture is asked for

        scored = self.evaluated(data_dir)
        evaluation = scored.evaluation
        for true, taken, images in evaluation.most_confused(5):
            print(f"{terminal(self.classes[true])} taken for {terminal(self.classes[taken])}: {images:,} test images")
        return mistakes_figure(scored.images, scored.labels, evaluation.predictions, count=count,
                               title=self.config.model, losses=evaluation.losses, confidences=evaluation.confidences,
                               classes=self.classes)

    @python_door
    def export(self, format: str = "onnx", out: str | Path | None = None, *, data_dir: str | Path | None = None
               ) -> ExportResult:
        """The network as an ONNX (default) or TorchScript file (default ``RUN_DIR/model.onnx`` or ``model.pt``),
        checked against PyTorch on the run's test images (``convzoo export``)."""
        return export_run(self.run_dir, format, out, data_dir=None if data_dir is None else str(data_dir))

    @python_door
    def evaluate(self, data_dir: str | Path | None = None, *, progress: bool | str | Progress | None = None
                 ) -> Evaluation:
        """Score the model on the test images the run was evaluated on (``.accuracy``, ``.loss``,
        ``.confusion``, ``.per_class_accuracy``, ``.predictions``), showing progress as ``train`` does."""
        return self.evaluated(data_dir, progress=progress).evaluation

    @python_door
    def evaluated(self, data_dir: str | Path | None = None, *, progress: bool | str | Progress | None = False
                  ) -> EvaluatedRun:
        """The run scored on its test images, with those images (what ``report.html`` shows)."""
        images, labels = test_split(self.config, None if data_dir is None else str(data_dir))
        view = progress_for(progress)
        view.start(self.config, 0, 0, len(images))  # no training steps: the view shows the evaluation alone
        try:
            evaluation = evaluate_model(self.config, self.model, images, labels, self.device,
                                        progress=view.evaluating, classes=len(self.classes))
        finally:
            view.close()
        return EvaluatedRun(self, evaluation, images, labels)


@dataclass
class EvaluatedRun:
    """A finished run with its evaluation on the test images it was scored on, and those images."""

    run: Run
    evaluation: Evaluation
    images: torch.Tensor  # the evaluated test images, uint8 (N, H, W) (gray) or (N, 3, H, W), and their labels
    labels: torch.Tensor

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def config(self) -> TrainConfig:
        return self.run.config

    @property
    def meta(self) -> dict:
        return self.run.meta

    @property
    def history(self) -> list[dict]:
        return self.run.history

    @property
    def model(self) -> nn.Module:
        return self.run.model

    @property
    def classes(self) -> tuple[str, ...]:
        return self.run.classes
