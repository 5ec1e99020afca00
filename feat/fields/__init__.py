"""Learned (and exact) fields: velocity ``b(t, x)`` and score ``s(t, x)``."""

from .cnn import CNNField
from .egnn import EGNNField, atom_types_from_topology
from .embedding import FourierTimeEmbedding
from .exact import GaussianInterpolantScore, GaussianInterpolantVelocity
from .field import Field
from .frame import FrameField, local_frame
from .informed import EnergyFeatures, EnergyInformedScore, EnergyInformedVelocity
from .mlp import MLPField
from .scaled import DenoiserScore, ScaledScore, Tube, characteristic_width

__all__ = [
    "EGNNField",
    "atom_types_from_topology",
    "CNNField",
    "EnergyFeatures",
    "EnergyInformedScore",
    "Field",
    "FourierTimeEmbedding",
    "FrameField",
    "local_frame",
    "GaussianInterpolantScore",
    "GaussianInterpolantVelocity",
    "MLPField",
    "EnergyInformedVelocity",
    "ScaledScore",
    "DenoiserScore",
    "Tube",
    "characteristic_width",
]
