"""End-state samplers: vectorised Hybrid Monte Carlo, autocorrelation times, sample files."""

from feat.sampling.autocorrelation import AutocorrelationEstimate, integrated_autocorrelation_time
from feat.sampling.hmc import HMC, HMCResult
from feat.sampling.io import SampleSet, load_samples, save_samples

__all__ = ["HMC", "HMCResult", "AutocorrelationEstimate", "integrated_autocorrelation_time",
           "SampleSet", "save_samples", "load_samples"]
