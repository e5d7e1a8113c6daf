"""The driver interface, parametrized over the sim driver and the serial driver on an emulated board."""

import time

import numpy as np
import pytest

import drivers
from drivers import base
from drivers.base import ReadbackMismatch
from drivers.sim_driver import SimDriver
from twin.errors import ConfigError
from twin.surface_config import SurfaceConfig

pytestmark = pytest.mark.timeout(30)
N = 24
URLS = {
    "sim": "sim://?elements={n}&bits=1,2,3{extra}",
    "emu": "emu://?elements={n}&bits=1,2,3&wire=0&timeout_ms=20{extra}",
}


@pytest.fixture(params=sorted(URLS))
def make(request):
    opened = []

    def _open(extra=""):
        drv = drivers.open(URLS[request.param].format(n=N, extra=extra))
        opened.append(drv)
        return drv

    yield _open
    for drv in opened:
        drv.close()


def rand(bits, seed):
    rng = np.random.default_rng(seed)
    return SurfaceConfig(bits, rng.integers(0, 1 << bits, N), rng.random(N) < 0.7)


def test_apply_returns_what_is_latched(make):
    drv = make()
    info = drv.info()
    assert info.n_elements == N and info.resolutions == (1, 2, 3)
    for seed, bits in enumerate((1, 2, 3, 1)):
        config = rand(bits, seed)
        assert drv.apply(config) == config
        assert drv.readback() == config and drv.last_apply.verified
    assert drv.status().latch_count >= 4


def test_invalid_configs_are_refused_before_the_wire(make):
    drv = make()
    with pytest.raises(ConfigError, match="n_elements"):
        drv.apply(SurfaceConfig.safe(N + 1))
    with pytest.raises(ConfigError, match="bits"):
        drv.apply(SurfaceConfig(4, np.zeros(N, int), np.ones(N, bool)))


def test_stuck_element_is_reported_as_mismatch(make):
    drv = make("&stuck=5")
    config = SurfaceConfig(2, np.full(N, 3), np.ones(N, bool))
    with pytest.raises(ReadbackMismatch) as exc:
        drv.apply(config)
    assert exc.value.mismatched.tolist() == [5]
    assert exc.value.applied.phase_idx[5] == 0
    applied = drv.apply(config, on_mismatch="return")
    assert config.mismatched_elements(applied).tolist() == [5]
    assert not drv.last_apply.verified and drv.last_apply.mismatched.tolist() == [5]


def test_watchdog_expiry_is_seen_in_readback(make):
    drv = make()
    config = rand(2, 9)
    drv.watchdog(0.4)  # generous: the suite runs on a loaded 2-core machine
    drv.apply(config)
    time.sleep(0.05)
    assert drv.readback() == config  # fed in time: no early trip
    time.sleep(0.8)
    assert drv.readback() == SurfaceConfig.safe(N, 2)
    assert drv.status().safe_active
    drv.apply(config)  # the host is back: a new apply clears the safe state
    assert not drv.status().safe_active


def test_watchdog_custom_safe_pattern(make):
    drv = make()
    safe = SurfaceConfig(1, np.arange(N) % 2, np.ones(N, bool))
    drv.watchdog(0.05, safe)
    drv.apply(rand(3, 1))
    time.sleep(0.25)
    assert drv.readback() == safe
    drv.watchdog(0)
    drv.apply(rand(3, 2))
    time.sleep(0.15)
    assert drv.readback() == rand(3, 2)  # disarmed


def test_context_manager_closes(make):
    drv = make()
    with drv as d:
        d.apply(rand(1, 3))
    with pytest.raises(Exception):
        drv.apply(rand(1, 3))


def test_unknown_scheme_and_params():
    with pytest.raises(ConfigError, match="scheme"):
        drivers.open("bogus://x")
    with pytest.raises(ConfigError, match="unknown parameter"):
        drivers.open("sim://?elements=4&colour=red")
    with pytest.raises(ConfigError, match="no scheme"):
        drivers.open("/dev/ttyUSB0")


def test_registry_and_entry_point(monkeypatch):
    class Mine(SimDriver):
        @classmethod
        def from_url(cls, url):
            return cls(3, (1,), url=url)

    monkeypatch.setitem(base.DRIVERS, "mine", Mine)
    assert isinstance(drivers.open("mine://x"), Mine)

    class FakeEP:
        name = "thirdparty"

        def load(self):
            return Mine

    monkeypatch.setattr(base, "entry_points", lambda group: [FakeEP()] if group == base.ENTRY_POINT_GROUP else [])
    drv = drivers.open("thirdparty://board")
    assert isinstance(drv, Mine) and drv.info().n_elements == 3


def test_energy_buffer_refuses_unaffordable_switching(make):
    # 24 elements x 100 nJ = 2.4 uJ per full switch; a 3 uJ buffer pays one, not two in a row
    drv = make("&energy_uj=3&harvest_uw=0&switch_nj=100")
    assert drv.status().energy_j == pytest.approx(3e-6, abs=1e-6)
    a = SurfaceConfig(1, np.zeros(N, int), np.ones(N, bool))
    assert drv.apply(a) == a
    b = SurfaceConfig(1, np.ones(N, int), np.zeros(N, bool))
    with pytest.raises(base.ApplyError, match="ENERGY"):
        drv.apply(b)
    assert drv.readback() == a  # refused means nothing latched
    assert drv.status().energy_j < 1e-6


def test_codebook_store_and_apply(make):
    drv = make()
    beams = [rand(3, 20 + k) for k in range(3)]
    for slot, beam in enumerate(beams):
        drv.codebook_store(slot, beam)
    drv.apply(rand(1, 30))
    for slot in (2, 0, 1):
        assert drv.codebook_apply(slot) == beams[slot] == drv.readback()
    with pytest.raises(ConfigError, match="slot"):
        drv.codebook_store(99, beams[0])
    with pytest.raises(base.NackError, match="EMPTY_SLOT"):
        drv.codebook_apply(5)
