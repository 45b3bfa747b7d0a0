"""Calibration statistics (numpy only): activation collectors and weight thresholds."""

from worker.quantize.calibration.collectors import Collector, make_collector
from worker.quantize.calibration.weights import power2_round_up, weight_threshold

__all__ = ["Collector", "make_collector", "power2_round_up", "weight_threshold"]
