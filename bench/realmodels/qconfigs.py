"""The tvmq qconfigs a run compares, by name. Each goes to `tvmq quantize -q` exactly as written
here: "defaults" is the empty qconfig, i.e. what a user gets without one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "max": {
        "calibrate_mode": "max",
        "per_channel": True,
        "skip_conv_layers": [],
        "skip_dense_layer": False,
        "weight_scale": "max",
    },
    "percentile": {"calibrate_mode": "percentile"},
    "kl_divergence": {"calibrate_mode": "kl_divergence"},
    "mse": {"calibrate_mode": "mse"},
    # the defaults without integer tables: the float islands a model's activations cost
    "no_luts": {"lut_activations": False},
    # an accuracy-target search for 1 % of the model's own metric (`for_model`), scored on 4 of
    # the calibration samples held out
    "search": {"holdout_samples": 4, "search": {"metric": "model", "tolerable_loss": 0.01}},
}
#: The search metric that stands for each model's own (CorpusModel.search_metric).
MODEL_METRIC = "model"
DEFAULT_SELECTION = ("defaults", "max", "percentile", "kl_divergence", "mse")


def parse(spec: str) -> tuple[str, dict[str, Any]]:
    """A preset name, `name=<JSON object>`, or `name=<path to a JSON file>`."""
    if "=" not in spec:
        if spec not in PRESETS:
            raise ValueError(f"unknown qconfig preset {spec!r} (presets: {', '.join(PRESETS)}; or NAME=JSON)")
        return spec, PRESETS[spec]
    name, value = spec.split("=", 1)
    text = Path(value).read_text() if not value.lstrip().startswith("{") else value
    qconfig = json.loads(text)
    if not isinstance(qconfig, dict):
        raise ValueError(f"qconfig {name!r} must be a JSON object")
    return name, qconfig


def for_model(qconfig: dict[str, Any], metric: str) -> dict[str, Any]:
    """The qconfig with a search's metric `"model"` replaced by the model's own search metric."""
    search = qconfig.get("search")
    if not isinstance(search, dict) or search.get("metric") != MODEL_METRIC:
        return qconfig
    return {**qconfig, "search": {**search, "metric": metric}}
