"""End-state samplers: vectorised Hybrid Monte Carlo, autocorrelation times, sample files."""

from feat.sampling.hmc import (
    HMC,
    AutocorrelationEstimate,
    HMCResult,
    SampleSet,
    integrated_autocorrelation_time,
    load_samples,
    save_samples,
)

__all__ = ["HMC", "HMCResult", "AutocorrelationEstimate", "integrated_autocorrelation_time",
           "SampleSet", "save_samples", "load_samples"]
