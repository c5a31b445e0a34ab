"""Training with the paper's recipe: single process or ``torchrun`` (DDP)."""
from .config import TrainConfig
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer"]
