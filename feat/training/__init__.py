"""Training of the velocity and score fields."""

from .ema import EMA
from .trainer import Trainer, TrainingConfig, TrainingRecord

__all__ = ["EMA", "Trainer", "TrainingConfig", "TrainingRecord"]
