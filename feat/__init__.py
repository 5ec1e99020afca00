"""feat: free-energy differences from learned stochastic-interpolant transports.

ΔF = F_b − F_a = −log(Z_b / Z_a) in kT between state a (t = 0) and state b (t = 1).
"""

from .energies.base import Energy, FunctionEnergy
from .problem import TwoStateProblem

__version__ = "0.1.0"
__all__ = ["Energy", "FunctionEnergy", "TwoStateProblem", "__version__"]
