"""The board as data: pin map rules, generated board config, BOM, power budget >= 16 h."""
import copy
import csv
import json

import pytest

from backend.cli import main as vigil
from firmware import board
from firmware.tools import hardware as H

PINMAP = H.load_json(H.PINMAP_PATH)
MODULES = H.load_json(H.MODULES_PATH)


def _problems(mutate):
    pm = copy.deepcopy(PINMAP)
    mutate(pm)
    return H.pin_problems(pm, MODULES)


class TestPinMap:
    def test_the_board_pin_map_is_sound(self):
        assert H.pin_problems(PINMAP, MODULES) == []

    def test_generated_board_config_matches_the_pin_map(self):
        assert H.BOARD_PY.read_text() == H.board_source(PINMAP)
        assert board.PIN_SOS_BUTTON == 4 and board.I2C0_SDA == 8 and board.PPG_ADDR == 0x57

    def test_a_pin_used_twice_is_caught(self):
        probs = _problems(lambda pm: pm["pins"][1].update(gpio=pm["pins"][0]["gpio"]))
        assert any("used twice" in p for p in probs)
        probs = _problems(lambda pm: pm["pins"][0].update(gpio=pm["buses"]["i2c0"]["sda"]))
        assert any("used twice" in p and "i2c0.sda" in p for p in probs)

    @pytest.mark.parametrize("gpio,why", [(26, "flash"), (30, "flash"), (33, "PSRAM"), (37, "PSRAM"), (19, "USB")])
    def test_flash_psram_and_usb_pins_are_refused(self, gpio, why):
        probs = _problems(lambda pm: pm["pins"][0].update(gpio=gpio))
        assert any("reserved" in p and why in p for p in probs), probs

    def test_strapping_and_missing_pins_are_refused(self):
        assert any("strapping" in p for p in _problems(lambda pm: pm["pins"][0].update(gpio=0)))
        assert any("does not exist" in p for p in _problems(lambda pm: pm["pins"][0].update(gpio=22)))

    def test_input_only_pins_cannot_drive(self):
        # The ESP32-S3 has no input-only pads; the classic ESP32's GPIO34-39 show the rule works.
        def to_esp32(pm):
            pm["module"] = "ESP32-WROOM-32E"
            pm["buses"]["i2c0"].update(sda=21, scl=22)
            pm["pins"] = [
                {"name": "HAPTIC", "gpio": 34, "direction": "out", "ref": "Q1"},
                {"name": "SOS_BUTTON", "gpio": 35, "direction": "in", "pull": "up", "ref": "SW1"},
                {"name": "IMU_INT1", "gpio": 36, "direction": "in", "ref": "U3"},
            ]
        probs = _problems(to_esp32)
        assert any("HAPTIC: output on input-only GPIO34" in p for p in probs)
        assert any("no internal pull-up" in p for p in probs)
        assert not any("IMU_INT1" in p for p in probs)  # inputs are fine there

    def test_i2c_addresses_unique_per_bus(self):
        probs = _problems(lambda pm: pm["buses"]["i2c0"]["devices"][2].update(address="0x57"))
        assert any("0x57 used by both U2 and U4" in p for p in probs)
        probs = _problems(lambda pm: pm["buses"]["i2c0"]["devices"][2].update(address="0x78"))
        assert any("reserved by I2C" in p for p in probs)

    def test_every_pin_and_device_is_in_the_bom(self):
        refs = set()
        with open(H.HARDWARE / "bom.csv") as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == ["reference", "part_number", "maker", "quantity", "purpose", "unit_price_usd"]
        for row in rows:
            refs.add(row["reference"])
            assert int(row["quantity"]) >= 1 and float(row["unit_price_usd"]) > 0
        used = {p["ref"] for p in PINMAP["pins"] if p["ref"][0] != "R"}
        used |= {d["ref"] for d in PINMAP["buses"]["i2c0"]["devices"]}
        assert used <= refs
        parts = {row["part_number"] for row in rows}
        assert {"MAX30101EFD+", "LSM6DSOTR", "MAX17048G+T10", "ESP32-S3-WROOM-1-N8R8"} <= parts


class TestPowerBudget:
    def test_battery_life_reaches_a_shift_with_margin(self):
        life = H.battery_life()
        assert life.hours >= H.MIN_BATTERY_HOURS
        assert 15 < life.average_ma < 40  # a BLE-streaming ESP32-S3: tens of mA, honestly

    def test_the_cell_is_the_bom_cell(self):
        budget = H.load_json(H.POWER_PATH)
        with open(H.HARDWARE / "bom.csv") as f:
            bt = [r for r in csv.DictReader(f) if r["reference"] == "BT1"][0]
        assert bt["part_number"] == budget["cell"]["part"]
        assert "%d mAh" % budget["cell"]["capacity_mah"] in bt["purpose"]

    def test_impossible_duties_are_refused(self):
        budget = H.load_json(H.POWER_PATH)
        budget["parts"][0]["states"][0]["duty"] = 0.9  # + 0.85 idle > 1
        with pytest.raises(H.HardwareError):
            H.battery_life(budget)

    def test_a_too_small_cell_fails_the_command(self, tmp_path, monkeypatch, capsys):
        budget = H.load_json(H.POWER_PATH)
        budget["cell"]["capacity_mah"] = 300
        path = tmp_path / "budget.json"
        path.write_text(json.dumps(budget))
        monkeypatch.setattr(H, "POWER_PATH", path)
        assert vigil(["hardware", "battery"]) == 1
        assert "battery life: 10.2 h" in capsys.readouterr().out


def test_vigil_hardware_battery_prints_the_figure(capsys):
    assert vigil(["hardware", "battery"]) == 0
    out = capsys.readouterr().out
    assert "battery life: 33.9 h (requirement: >= 16 h)" in out


def test_vigil_hardware_check(capsys):
    assert vigil(["hardware", "check"]) == 0
