"""Calibration statistics (numpy only): activation collectors, their safety check, weight thresholds."""

from worker.quantize.calibration.collectors import Choice, Collector, make_collector
from worker.quantize.calibration.weights import power2_round_up, weight_threshold

__all__ = ["Choice", "Collector", "make_collector", "power2_round_up", "weight_threshold"]
