"""Learned (and exact) fields: velocity ``b(t, x)`` and score ``s(t, x)``."""

from .embedding import FourierTimeEmbedding
from .exact import GaussianInterpolantScore, GaussianInterpolantVelocity
from .field import Field
from .informed import EnergyInformedScore, EnergyInformedVelocity
from .mlp import MLPField

__all__ = [
    "EnergyInformedScore",
    "Field",
    "FourierTimeEmbedding",
    "GaussianInterpolantScore",
    "GaussianInterpolantVelocity",
    "MLPField",
]
