"""Trainer integration: callbacks, schedules, and the ``pretrain`` entry point."""

from ssl_hub.training.callbacks import LossMonitor, NonFiniteLossError
from ssl_hub.training.pretrain import PretrainResult, pretrain, training_arguments

__all__ = ["LossMonitor", "NonFiniteLossError", "PretrainResult", "pretrain", "training_arguments"]
