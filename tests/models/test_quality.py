import numpy as np
import pytest

import models.quality
from models.quality import band_grid_power, bandpass, grid_power
from tests.models.conftest import FS

HR_BAND, HR_GRID = (0.4, 4.0), (40.0, 220.0, 0.5)


def two_step(x, band=HR_BAND, grid=HR_GRID):
    return grid_power(bandpass(x, FS, band), FS, grid)[0]


def assert_same_spectra(fast, slow):
    # equal to a small share of each window's peak (the factorised operator drops ~1e-12 of it)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9 * slow.max())
    assert (np.argmax(fast, axis=-1) == np.argmax(slow, axis=-1)).all()


class TestBandGridPower:
    def test_empty(self):
        power, bpm = band_grid_power(np.zeros((0, 400)), FS, HR_BAND, HR_GRID)
        assert power.shape == (0, bpm.size)

    def test_same_as_filter_then_transform(self, rng):
        t = np.arange(400) / FS
        pulse = 4e3 * np.sin(2 * np.pi * 1.3 * t) + 2e3 * np.sin(2 * np.pi * 2.6 * t)
        counts = 2e6 + pulse + 300 * rng.standard_normal((5, 2, 400))  # raw PPG counts, two LEDs
        power, bpm = band_grid_power(counts, FS, HR_BAND, HR_GRID)
        assert power.shape == (5, 2, bpm.size)
        assert_same_spectra(power, two_step(counts))

    def test_cadence_band_and_grid(self, rng):
        x = 1.0 + 0.3 * np.sin(2 * np.pi * 1.8 * np.arange(400) / FS) + 0.05 * rng.standard_normal((3, 400))
        fast, spm = band_grid_power(x, FS, (0.8, 4.0), (60.0, 220.0, 1.0))
        assert_same_spectra(fast, two_step(x, (0.8, 4.0), (60.0, 220.0, 1.0)))
        assert spm[np.argmax(fast[0])] == pytest.approx(108, abs=1.5)

    @pytest.mark.parametrize("samples", [30, 250])
    def test_other_window_lengths(self, rng, samples):
        x = rng.standard_normal((4, samples))
        assert_same_spectra(band_grid_power(x, FS, HR_BAND, HR_GRID)[0], two_step(x))

    def test_long_windows_take_the_two_steps(self, rng, monkeypatch):
        x = rng.standard_normal((2, 300))
        fast = band_grid_power(x, FS, HR_BAND, HR_GRID)[0]
        monkeypatch.setattr(models.quality, "OPERATOR_MAX_SAMPLES", 200)
        np.testing.assert_array_equal(band_grid_power(x, FS, HR_BAND, HR_GRID)[0], two_step(x))
        assert_same_spectra(fast, two_step(x))

    def test_nan_stays_in_its_window(self, rng):
        x = rng.standard_normal((3, 400))
        x[1, 17] = np.nan
        power = band_grid_power(x, FS, HR_BAND, HR_GRID)[0]
        assert np.isnan(power[1]).all() and np.isfinite(power[[0, 2]]).all()
        assert_same_spectra(power[[0, 2]], two_step(x[[0, 2]]))
