"""Calibrating the model's beliefs on masked images (dspseg.advise.calibrate)."""

from __future__ import annotations

import numpy as np
import pytest

from dspseg.advise.calibrate import Calibration, calibrate, fit_presence, fit_temperature


def test_temperature_undoes_over_confidence():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (20000, 4))
    true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(4, p=p) for p in true])
    sharp = np.exp(3 * logits) / np.exp(3 * logits).sum(1, keepdims=True)  # three times too confident
    t = fit_temperature(sharp, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    back = Calibration(temperature=t).temper(sharp.T).T
    assert np.abs(back - true).max() < 0.1
    assert Calibration().temper(sharp.T) is not None and np.allclose(Calibration().temper(sharp.T), sharp.T)


def test_presence_scaling_learns_how_often_a_score_means_present():
    rng = np.random.default_rng(1)
    raw = rng.uniform(0.01, 0.99, 5000)
    logit = np.log(raw) - np.log1p(-raw)
    present = rng.uniform(size=5000) < 1 / (1 + np.exp(-(0.5 * logit - 0.5)))  # scores half as sure, and low
    a, b = fit_presence(raw, present)
    assert a == pytest.approx(0.5, abs=0.1) and b == pytest.approx(-0.5, abs=0.15)
    cal = Calibration(presence_a=a, presence_b=b)
    assert cal.presence(np.array([0.99]))[0] < 0.9 and cal.presence(np.array([0.5]))[0] < 0.5
    assert fit_presence(raw, np.ones_like(present)) == (1.0, 0.0)  # nothing to learn from


def test_a_run_is_calibrated_on_its_validation_masks(tiny):
    from dspseg.advise.plan import load

    run, data = tiny
    loaded, dataset = load(run, data, "cpu")
    cal = calibrate(loaded, dataset)
    assert cal.images >= 3 and cal.source == "validation"
    assert 0.25 <= cal.temperature <= 20 and 0.1 <= cal.objects_ratio <= 10
    assert "calibrated on" in cal.text()
