"""The corpus harness's own parts, without models: calibration layouts, metrics, child outcomes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.realmodels import engines, metrics, qconfigs
from bench.realmodels.feeds import read_calibration, write_calibration
from bench.realmodels.wheels import ROOT


def test_per_sample_calibration_keeps_scalars_and_state_layout(tmp_path):
    feeds = [
        {
            "input": np.full((1, 576), k, np.float32),
            "state": np.full((2, 1, 128), k, np.float32),
            "sr": np.array(16000, np.int64),
        }
        for k in range(3)
    ]
    path = write_calibration(tmp_path / "c.npz", feeds, per_sample=True)
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files)[:3] == ["0/input", "0/sr", "0/state"]
        assert npz["2/sr"].shape == () and npz["2/sr"].dtype == np.int64
    back = read_calibration(path)
    assert len(back) == 3
    assert back[1]["state"].shape == (2, 1, 128) and float(back[1]["state"][0, 0, 0]) == 1.0


def test_batch_stacked_calibration_stacks_on_axis_0_in_the_input_dtype(tmp_path):
    feeds = [{"bytes": np.full((1, 2048), k, np.int32)} for k in range(4)]
    path = write_calibration(tmp_path / "c.npz", feeds, per_sample=False)
    with np.load(path, allow_pickle=False) as npz:
        assert npz.files == ["bytes"]
        assert npz["bytes"].shape == (4, 2048) and npz["bytes"].dtype == np.int32
    assert [int(f["bytes"][0, 0]) for f in read_calibration(path)] == [0, 1, 2, 3]


def test_box_f1_matches_one_to_one_at_iou_half():
    reference = [[(0, 0, 10, 10), (20, 20, 30, 30)]]
    assert metrics.box_f1(reference, reference) == 1.0
    # one box moved by 1 px (IoU 0.68) still matches; a duplicate of it does not match twice
    got = [[(1, 0, 11, 10), (0, 0, 10, 10)]]
    assert metrics.box_f1(reference, got) == pytest.approx(2 * 1 / 4)
    assert metrics.box_f1([[]], [[]]) == 1.0
    assert metrics.same_boxes(reference[0], [(1, 0, 11, 10), (20, 21, 30, 31)])
    assert not metrics.same_boxes(reference[0], got[0])


def test_pooled_iou_weighs_pixels_and_counts_empty_pairs_as_equal():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    pooled, mean = metrics.pooled_iou([a, np.zeros((4, 4), bool)], [b, np.zeros((4, 4), bool)])
    assert pooled == pytest.approx(4 / 12)
    assert mean == pytest.approx((4 / 12 + 1.0) / 2)


def test_cosine_is_nan_for_non_finite_outputs():
    assert metrics.cosine([np.ones(3)], [np.ones(3)]) == pytest.approx(1.0)
    assert np.isnan(metrics.cosine([np.ones(3)], [np.array([1.0, np.nan, 1.0])]))


def _child(code: str, timeout: float = 60) -> engines.Outcome:
    rc, _, err, seconds = engines.run_child([sys.executable, "-c", code], timeout, {})
    return engines.Outcome("ok") if rc == 0 else engines.failure(rc, err, seconds, timeout)


def test_child_failures_become_outcomes():
    cli = _child(
        "import sys; print('[ 1.0s] 5% import', file=sys.stderr); "
        "print('error[E_BUILD]: no definition of pad', file=sys.stderr); sys.exit(2)"
    )
    assert (cli.code, cli.message) == ("E_BUILD", "no definition of pad")
    trace = _child("raise ValueError('per-channel needs opset 13')")
    assert (trace.code, trace.message) == ("exception", "ValueError: per-channel needs opset 13")
    crash = _child("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert (crash.code, crash.message) == ("crash", "killed by SIGSEGV")
    slow = _child("import time; time.sleep(30)", timeout=1)
    assert slow.code == "E_TIMEOUT" and slow.seconds < 20


def test_qconfig_specs():
    assert qconfigs.parse("defaults") == ("defaults", {})
    assert qconfigs.parse('w7={"calibrate_mode": "max", "nbit_weight": 7}')[1]["nbit_weight"] == 7
    with pytest.raises(ValueError, match="unknown qconfig preset"):
        qconfigs.parse("maximum")


def test_the_search_preset_takes_each_models_metric():
    """Every preset is a qconfig tvmq accepts once the search metric is the model's own."""
    from bench.realmodels.registry import MODELS
    from worker.qconfig import QConfig

    metrics_used = set()
    for model in MODELS.values():
        for name, qconfig in qconfigs.PRESETS.items():
            given = qconfigs.for_model(qconfig, model.search_metric)
            QConfig(**given)
            if name == "search":
                metrics_used.add(given["search"]["metric"])
    assert metrics_used == {"cosine", "ctc_string_agreement", "top1_agreement"}
    assert qconfigs.PRESETS["search"]["search"]["metric"] == qconfigs.MODEL_METRIC, "the preset is left alone"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


@pytest.mark.slow
def test_a_timed_out_model_process_ends_its_own_child(tmp_path):
    """The parent's time bound reaches a model process's tvmq child, which has its own session."""
    pidfile = tmp_path / "pid"
    inner = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    outer = (
        "import sys; from bench.realmodels import engines; engines.end_children_on_sigterm(); "
        f"engines.run_child([sys.executable, '-c', {inner!r}], 300, {{}})"
    )
    code, *_ = engines.run_child([sys.executable, "-c", outer], 20, {"PYTHONPATH": str(ROOT)})
    assert code is None and pidfile.exists()
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_missing_packages_are_named_by_their_probe(tmp_path):
    from bench.realmodels.magika import Magika

    present = tmp_path / "font.ttf"
    present.write_bytes(b"")

    class Probe(Magika):
        debian_packages = {  # noqa: RUF012
            "fonts-present": str(present),
            "fonts-absent": str(tmp_path / "absent.ttf"),
            "sh": "sh",
            "no-such-tool": "tvmq-no-such-command",
        }

    assert Probe.missing_packages() == ["fonts-absent", "no-such-tool"]
