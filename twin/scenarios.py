"""Scenario presets p1..p4: every value of the four papers, and every value they leave open.

A preset is plain data (a frozen dataclass). Values a paper prints carry the place they come
from; values a paper leaves open carry a comment "open in the paper: project choice because
...". ``docs/SCENARIOS.md`` tables the same values with their sources.

Overrides go through :func:`get_scenario`, which validates every field (unknown name, wrong
type, NaN, negative size or power, unsupported resolution) and raises ``ConfigError`` naming
the field and the fix.  ``parse_overrides`` turns CLI ``field=value`` strings into typed
values for it.

Units are in the field names: ``_dbm``, ``_db``, ``_mw``, ``_w``, ``_m``, ``_s``, ``_hz``.
Rician factors are linear unless the name ends in ``_db``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field

from twin.errors import ConfigError
from twin.surface_config import MAX_PHASE_BITS

# Field kinds used by the validator (stored in dataclass field metadata).
SIZE = "size"  # int >= 1
COUNT = "count"  # int >= 0
POS = "pos"  # finite float > 0
NONNEG = "nonneg"  # finite float >= 0
REAL = "real"  # any finite float (dB and dBm values may be negative)
UNIT = "unit"  # finite float in [0, 1]
CORR = "corr"  # finite float in [0, 1]: Gauss-Markov correlation
BITS = "bits"  # tuple of ints in 1..MAX_PHASE_BITS
POS_TUPLE = "pos_tuple"  # tuple of finite floats > 0
NONNEG_TUPLE = "nonneg_tuple"  # tuple of finite floats >= 0
CHOICE = "choice"  # str from metadata["choices"]
FIXED = "fixed"  # not overridable (the scenario's name)


def _f(default, kind: str, **meta):
    return field(default=default, metadata={"kind": kind, **meta})


def dbm_to_w(dbm: float) -> float:
    return 10.0 ** ((dbm - 30.0) / 10.0)


class _Preset:
    """What every preset derives the same way: powers in watts from the dBm fields (P3 computes
    noise_dbm from its noise density), and cross-field checks (none unless a preset adds some)."""

    @property
    def p_max_w(self) -> float:
        return dbm_to_w(self.p_max_dbm)

    @property
    def noise_w(self) -> float:
        return dbm_to_w(self.noise_dbm)

    def _check(self) -> None:
        pass


# --------------------------------------------------------------------------------------------
# P1: one BS, K users, L energy-harvesting IRSs with b-bit phases and ON/OFF (seeds 000, 001)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class P1Scenario(_Preset):
    """P1 preset (cooperative energy-harvesting IRSs, MAQ-WP / MAQ-PG), section V of the paper."""

    name: str = _f("p1", FIXED)
    # --- sizes (section V, "default L = 2, K = 4, N_l = 10"; M = 4 antennas)
    n_bs_antennas: int = _f(4, SIZE)  # M
    n_users: int = _f(4, SIZE)  # K
    n_irs: int = _f(2, SIZE)  # L
    n_elements: int = _f(10, SIZE)  # N_l (same for every IRS)
    # --- powers (section V)
    p_max_dbm: float = _f(5.0, REAL)  # P_max, swept 5..30 dBm, default 5 dBm
    noise_dbm: float = _f(-80.0, REAL)  # sigma^2 = -80 dBm
    # --- geometry (section V): BS at (0, 0), users uniform in a ring, IRSs on a circle
    user_ring_inner_m: float = _f(100.0, POS)
    user_ring_outer_m: float = _f(120.0, POS)
    irs_radius_m: float = _f(100.0, POS)
    # --- channels (eqs. 34-35, Table II)
    rician_factor: float = _f(10.0, NONNEG)  # "Rician factor 10"; read as linear
    pl_ref_db: float = _f(30.0, REAL)  # PL0 = 30 dB at d0 = 1 m; gain_dB = -PL0 - 10 kappa log10(d)
    pl_ref_distance_m: float = _f(1.0, POS)  # d0
    pl_exp_bs_irs: float = _f(2.0, NONNEG)  # kappa BS-IRS = 2
    pl_exp_irs_user: float = _f(2.8, NONNEG)  # kappa IRS-user = 2.8
    # open in the paper: project choice because the direct BS-user link needs a path loss and
    # 3.5 is the usual "weaker direct link" exponent of IRS studies, so the IRSs matter.
    pl_exp_bs_user: float = _f(3.5, NONNEG)
    # open in the paper: extra attenuation of the direct link (blockage), project choice 0 dB.
    # Note: under the project reading of eq. 35 (-30 dB at 1 m on EACH hop) the reflected
    # paths of the default geometry are ~33 dB below the direct link for the median user;
    # raise this to study blocked direct links (docs/SCENARIOS.md).
    direct_blockage_db: float = _f(0.0, NONNEG)
    # open in the paper: project choice because half-wavelength spacing is the standard ULA.
    antenna_spacing_wl: float = _f(0.5, POS)  # d / lambda, BS and IRS arrays
    # --- surface hardware (eqs. 6-8)
    # open in the paper (B is not printed): project choice because 1..3 bits span the
    # cheap-to-accurate range and the paper's only low-resolution power value is for 3 bits.
    resolutions: tuple[int, ...] = _f((1, 2, 3), BITS)
    # Element power table mu(b) in mW when ON: 3, 4, 5 bits -> 1.5, 4.5, 6 mW are the paper's
    # (cited hardware); open in the paper: 1 and 2 bits -> 0.5 and 1.0 mW, project choice
    # because power grows with the number of PIN diodes per element (one per bit).
    power_table_bits: tuple[int, ...] = _f((1, 2, 3, 4, 5), BITS)
    power_table_mw: tuple[float, ...] = _f((0.5, 1.0, 1.5, 4.5, 6.0), NONNEG_TUPLE)
    # --- energy buffer (eq. 9): arrivals a_l ~ Poisson(2.2) energy units per slot
    energy_arrival_mean_units: float = _f(2.2, NONNEG)  # the paper's Poisson mean
    # open in the paper: project choice because with 1 mJ units and 0.2 s slots a 3-bit all-on
    # IRS (10 x 1.5 mW x 0.2 s = 3 mJ/slot) outspends the 2.2 mJ mean arrival, so the energy
    # constraint binds, while 1-bit all-on (1 mJ/slot) does not.
    energy_unit_j: float = _f(1e-3, POS)
    slot_s: float = _f(0.2, POS)
    # open in the paper: project choice because a small reserve makes the xi3 penalty
    # meaningful and 20 units is ~9 slots of mean arrivals.
    energy_min_units: float = _f(1.0, NONNEG)  # E_min
    energy_max_units: float = _f(20.0, POS)  # E_max
    energy_init_units: float = _f(10.0, NONNEG)  # E_l(0): open, half-full buffer
    # --- MDP (eqs. 11-19)
    # open in the paper: project choice because at P_max = 5 dBm and noise -80 dBm the preset's
    # channels are noise-limited (per-user SNR around -15 dB): MRT with equal power and zero
    # IRS phases gives a median per-user rate of ~0.029 bit/s/Hz, so 0.03 is met by about half
    # the users with a careless configuration and by most with good phases (docs/SCENARIOS.md).
    # Raise it with P_max (at 30 dBm the same baseline gives ~1.1 bit/s/Hz).
    rate_req_bps_hz: float = _f(0.03, NONNEG)  # R_req_k
    # open: R_req_k(t) is time-varying in the paper but its law is not given; project choice:
    # each slot R_req_k(t) ~ U[(1 - s) R_req, (1 + s) R_req] with s = this spread (0 = fixed).
    rate_req_spread: float = _f(0.0, UNIT)
    # open: project choice because IRSs sit 0..220 m from users; 50 m keeps exp(-d/d0) informative.
    d_l0_m: float = _f(50.0, POS)
    # open: reward weights of eq. 19; project choice: rate shortfall weighted like rate,
    # the power excess measured in units of P_max (xi2 (P_max - sum P_k)/P_max), energy
    # shortfall per energy unit.
    xi_rate: float = _f(1.0, NONNEG)  # xi1
    xi_power: float = _f(1.0, NONNEG)  # xi2
    xi_energy: float = _f(0.1, NONNEG)  # xi3
    episode_steps: int = _f(100, SIZE)  # Table III: 100 steps per epoch
    # open in the paper ("time-varying channels", law not given): project choice: positions
    # fixed within an episode, NLoS/Rayleigh parts follow Gauss-Markov
    # x(t+1) = rho x(t) + sqrt(1 - rho^2) w(t) with rho = 0.9 (slowly varying fading).
    fading_correlation: float = _f(0.9, CORR)
    # Project extension (not in the paper): "paper" = the printed observations (eqs. 11, 13, 14),
    # which carry no channel information; "csi" appends each agent's local channel features
    # (IRS: per-element cascaded phases relative to each user's direct path; BS: its direct
    # channels), because the channels change every slot (docs/ENVIRONMENTS.md, P1).
    observation: str = _f("paper", CHOICE, choices=("paper", "csi"))

    def element_power_w(self, bits: int) -> float:
        """mu(b): power of one ON element at resolution b (P1 eq. 7), in watts."""
        table = dict(zip(self.power_table_bits, self.power_table_mw))
        if int(bits) not in table:
            raise ConfigError(
                f"bits: resolution {bits} has no element power in the {self.name} preset "
                f"(known: {', '.join(map(str, sorted(table)))}); extend power_table_bits/power_table_mw"
            )
        return table[int(bits)] * 1e-3

    def _check(self) -> None:
        if len(self.power_table_bits) != len(self.power_table_mw):
            raise ConfigError(
                "power_table_mw: needs one power per entry of power_table_bits "
                f"({len(self.power_table_bits)}), got {len(self.power_table_mw)}"
            )
        missing = sorted(set(self.resolutions) - set(self.power_table_bits))
        if missing:
            raise ConfigError(
                f"resolutions: {missing} have no element power; add them to power_table_bits/power_table_mw"
            )
        if self.user_ring_outer_m < self.user_ring_inner_m:
            raise ConfigError("user_ring_outer_m: must be >= user_ring_inner_m")
        if not self.energy_min_units <= self.energy_max_units:
            raise ConfigError("energy_min_units: must be <= energy_max_units")
        if not self.energy_min_units <= self.energy_init_units <= self.energy_max_units:
            raise ConfigError("energy_init_units: must lie in [energy_min_units, energy_max_units]")


# --------------------------------------------------------------------------------------------
# P2: M BSs compete for L IRSs, users move between sub-regions (seed 002)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class P2Scenario(_Preset):
    """P2 preset (multi-BS IRS association, MDLBI), section V of the paper."""

    name: str = _f("p2", FIXED)
    n_bs: int = _f(2, SIZE)  # M = 2 BSs (section V)
    # (K, L) cases of Fig. 4: (10,1), (30,1), (30,2), (30,4); default the first.
    n_users: int = _f(10, SIZE)  # K
    n_irs: int = _f(1, SIZE)  # L
    # open in the paper: project choice because 4 antennas and 16 elements keep the
    # observation (D_s) and action sizes of the DDPG agents moderate.
    n_bs_antennas: int = _f(4, SIZE)  # N_b
    n_elements: int = _f(16, SIZE)  # N_l
    # open: project choice; with MRT on the direct links the two cells are interference-
    # limited and reach a total sum rate of ~11 bit/s/Hz (median), the paper's order (~8.5).
    p_max_dbm: float = _f(30.0, REAL)
    noise_dbm: float = _f(-80.0, REAL)  # open: project choice, same as P1
    # Path loss: Rayleigh fading with log-distance path loss (section V).
    # open: the paper gives only exponents; project reading: power gain d^-alpha, i.e. no
    # reference loss at 1 m. (With P1's 30 dB on each hop, the reflected paths sit ~43 dB
    # below the direct link for the median user and the IRS association would not matter;
    # with 0 dB, 14 % of users (L = 1) to 43 % (L = 4) get a reflected path >= 0.3x the
    # direct one, so more IRSs help, as in the paper's Fig. 4. docs/SCENARIOS.md.)
    pl_ref_db: float = _f(0.0, REAL)
    pl_ref_distance_m: float = _f(1.0, POS)
    pl_exp_bs_irs: float = _f(2.5, NONNEG)  # section V
    pl_exp_irs_user: float = _f(2.4, NONNEG)  # section V
    # open: project choice because a weaker direct link (as in P1) lets IRSs matter.
    pl_exp_bs_user: float = _f(3.5, NONNEG)
    antenna_spacing_wl: float = _f(0.5, POS)  # only used for documentation; channels are Rayleigh
    # Geometry, open: project choice: M square sub-regions of side region_side_m side by side
    # along x; BS m at the centre of sub-region m; IRS l on the horizontal mid-line, at the
    # sub-region borders first (where BSs compete), see twin/scene.py.
    region_side_m: float = _f(100.0, POS)
    # Mobility, open: project choice: random waypoint over the whole area at user_speed_mps,
    # one slot of slot_s seconds per step, so users cross sub-region borders within an episode.
    user_speed_mps: float = _f(1.5, NONNEG)
    slot_s: float = _f(1.0, POS)
    # open: project choice: Rayleigh small-scale fading is Gauss-Markov across slots.
    fading_correlation: float = _f(0.9, CORR)
    episode_steps: int = _f(800, SIZE)  # Table I: T = 800 steps per episode
    # Collision rule, open: an IRS claimed by two or more BSs in one slot serves no one
    # (contracts.md, twin/multicell.py).
    collision_rule: str = _f("void", CHOICE, choices=("void",))


# --------------------------------------------------------------------------------------------
# P3: multi-hop energy-splitting STAR-RIS chain, energy efficiency (seed 003)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class P3Scenario(_Preset):
    """P3 preset (multi-hop STAR-RIS energy efficiency, MAGAR), section V of the paper."""

    name: str = _f("p3", FIXED)
    n_bs_antennas: int = _f(5, SIZE)  # M = 5 (ULA)
    n_elements: int = _f(16, SIZE)  # N = 16
    n_users: int = _f(10, SIZE)  # K = 10
    n_surfaces: int = _f(2, SIZE)  # V = 2 (V = 3 in the convergence study)
    spacing_m: float = _f(10.0, POS)  # varsigma = 10 m (swept 10..200 m)
    carrier_ghz: float = _f(28.0, POS)  # f = 28 GHz
    bandwidth_hz: float = _f(100e6, POS)  # B = 100 MHz
    p_max_dbm: float = _f(33.0, REAL)  # P_max = 33 dBm
    element_power_dbm: float = _f(17.0, REAL)  # p = 17 dBm per ON element (eq. 9)
    # noise = -174 + 10 log10(B) dBm (section V); computed from bandwidth_hz
    noise_psd_dbm_hz: float = _f(-174.0, REAL)
    # open in the paper (K_R not printed): project choice because 10 (linear) matches P1 and
    # keeps a dominant LoS at 28 GHz.
    rician_factor: float = _f(10.0, NONNEG)
    antenna_spacing_wl: float = _f(0.5, POS)  # open: project choice, standard ULA
    # open: extra loss of the direct BS-user link per surface wall between them (a user in
    # region i is behind i walls). 0 = the paper as printed (direct link included, no wall).
    # Note: with TR 38.901 on every hop, one-hop surface paths sit ~55 dB below the direct link
    # for the median user (docs/SCENARIOS.md); 31.4 dB (TR 38.901 IRR glass at 28 GHz) per
    # wall is a physical value for surfaces mounted in windows.
    wall_loss_db: float = _f(0.0, NONNEG)
    # MDP (section IV): {T_q, eps, lambda, gamma} = {20, 0.3, 0.1, 0.9}
    global_period: int = _f(20, SIZE)  # T_q
    epsilon: float = _f(0.3, UNIT)
    q_lambda: float = _f(0.1, UNIT)
    gamma: float = _f(0.9, UNIT)
    # Step sizes Delta, open: project choice because 20 steps cross the beta range, 16 steps
    # a half turn of phase, and 20 steps of 5 % rebuild a beamformer.
    delta_beta: float = _f(0.05, UNIT)
    delta_theta_rad: float = _f(math.pi / 16, POS)
    delta_w_rel: float = _f(0.05, POS)  # step on Re/Im W, relative to sqrt(P_max / (M K))
    # open: project choice; channels are static for an episode (the MDP refines the
    # configuration), so 200 steps = 10 global-agent decisions at T_q = 20.
    episode_steps: int = _f(200, SIZE)
    fading_correlation: float = _f(1.0, CORR)  # open: 1 = static within an episode
    # Layout (section V, project reading of the inconsistent print): surface v is a wall at
    # x = (v + 1) varsigma centred at y = varsigma / 2 and facing the BS at (0, varsigma / 2);
    # users uniform in x in [0, user_area_len * varsigma], y in [0, varsigma]; region i is
    # the x-interval between walls i-1 and i (region 0 in front of the first wall).
    user_area_len: float = _f(5.0, POS)  # users x in [0, 5 varsigma]

    @property
    def noise_dbm(self) -> float:
        return self.noise_psd_dbm_hz + 10.0 * math.log10(self.bandwidth_hz)

    @property
    def element_power_w(self) -> float:
        return dbm_to_w(self.element_power_dbm)

    @property
    def n_regions(self) -> int:
        return self.n_surfaces + 1  # I = V + 1

    def _check(self) -> None:
        if self.n_surfaces >= self.user_area_len:
            raise ConfigError(
                f"n_surfaces: {self.n_surfaces} walls at x = (v+1) varsigma do not fit in the user area "
                f"of {self.user_area_len} varsigma; lower n_surfaces or raise user_area_len"
            )


# --------------------------------------------------------------------------------------------
# P4: distributed RISs, statistical CSI, scheduling S of K users (seed 004)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class P4Scenario(_Preset):
    """P4 preset (joint scheduling and precoding with statistical CSI, MAPPO).

    Most numbers were lost from the text (PAPERS.md); only K = 4, S = 2 and L = 2 are kept
    from the paper. Everything else is open: project choices named below.
    """

    name: str = _f("p4", FIXED)
    n_users: int = _f(4, SIZE)  # K = 4 (the six-codeword example)
    n_scheduled: int = _f(2, SIZE)  # S = 2
    n_ris: int = _f(2, SIZE)  # L = 2 (up to 6 in the scalability study)
    # open (lost): project choice because 4 antennas >= S streams with room for ZF, and a 4x4
    # UPA is a common small RIS.
    n_bs_antennas: int = _f(4, SIZE)  # M
    n_rows: int = _f(4, SIZE)  # N_r
    n_cols: int = _f(4, SIZE)  # N_c
    # open (lost): project choice giving SNRs of 10-20 dB through the RISs.
    p_max_dbm: float = _f(30.0, REAL)
    noise_dbm: float = _f(-90.0, REAL)
    # path loss C0 (d / 1 m)^-alpha; open (lost): C0 = -30 dB, alpha 2.2 (BS-RIS, elevated
    # LoS link) and 2.5 (RIS-user), project choice as in common RIS studies.
    c0_db: float = _f(-30.0, REAL)
    pl_exp_bs_ris: float = _f(2.2, NONNEG)
    pl_exp_ris_user: float = _f(2.5, NONNEG)
    # Rician factors in dB (paper uses dB); open (lost): project choice 10 dB BS-RIS (fixed,
    # elevated) and 3 dB RIS-user.
    rician_bs_ris_db: float = _f(10.0, REAL)
    rician_ris_user_db: float = _f(3.0, REAL)
    antenna_spacing_wl: float = _f(0.5, POS)
    # Geometry, open (lost), 3-D: BS at (0, 0, bs_height_m) with a ULA along y; RIS l on an
    # arc of radius ris_distance_m around the BS at azimuths spread over +-ris_spread_deg,
    # height ris_height_m, UPA in the y-z plane; users uniform in the rectangle
    # x in [user_x_min_m, user_x_max_m], |y| <= user_half_width_m at user_height_m.
    bs_height_m: float = _f(10.0, NONNEG)
    ris_distance_m: float = _f(50.0, POS)
    ris_spread_deg: float = _f(30.0, NONNEG)
    ris_height_m: float = _f(5.0, NONNEG)
    user_x_min_m: float = _f(60.0, NONNEG)
    user_x_max_m: float = _f(80.0, POS)
    user_half_width_m: float = _f(20.0, NONNEG)
    user_height_m: float = _f(1.5, NONNEG)
    # Table I
    episode_steps: int = _f(1024, SIZE)
    gamma: float = _f(0.45, UNIT)
    gae_lambda: float = _f(0.45, UNIT)
    clip: float = _f(0.3, UNIT)
    entropy_coef: float = _f(0.01, NONNEG)
    # open (form of eq. 46 lost): weight of Jain's index in the reward, 0 = pure sum rate.
    fairness_weight: float = _f(0.0, UNIT)

    @property
    def n_elements(self) -> int:
        return self.n_rows * self.n_cols

    def _check(self) -> None:
        if self.n_scheduled > self.n_users:
            raise ConfigError(f"n_scheduled: S = {self.n_scheduled} exceeds n_users K = {self.n_users}")
        if self.user_x_max_m < self.user_x_min_m:
            raise ConfigError("user_x_max_m: must be >= user_x_min_m")


SCENARIOS: dict[str, object] = {
    "p1": P1Scenario(),
    "p2": P2Scenario(),
    "p3": P3Scenario(),
    "p4": P4Scenario(),
}


def _validate_value(cls_name: str, f: dataclasses.Field, value):
    kind = f.metadata.get("kind")
    name = f.name

    def bad(what: str):
        return ConfigError(f"{name}: {what} (scenario {cls_name})")

    if kind == FIXED:
        raise bad("cannot be overridden")
    if kind in (SIZE, COUNT):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise bad(f"must be an integer, got {value!r}")
        lo = 1 if kind == SIZE else 0
        if value < lo:
            raise bad(f"must be >= {lo}, got {value}")
        return value
    if kind in (POS, NONNEG, REAL, UNIT, CORR):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise bad(f"must be finite, got {value}")
        if kind == POS and value <= 0:
            raise bad(f"must be > 0, got {value}")
        if kind == NONNEG and value < 0:
            raise bad(f"must be >= 0, got {value}")
        if kind in (UNIT, CORR) and not 0.0 <= value <= 1.0:
            raise bad(f"must lie in [0, 1], got {value}")
        return value
    if kind == BITS:
        vals = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        if not vals:
            raise bad("needs at least one resolution")
        out = []
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_PHASE_BITS:
                raise bad(f"resolution {v!r} is unsupported; use integers in 1..{MAX_PHASE_BITS}")
            out.append(int(v))
        return tuple(out)
    if kind in (POS_TUPLE, NONNEG_TUPLE):
        vals = tuple(value) if isinstance(value, (tuple, list)) else (value,)
        out = []
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise bad(f"entries must be finite numbers, got {v!r}")
            if (kind == POS_TUPLE and v <= 0) or v < 0:
                raise bad(f"entries must be {'> 0' if kind == POS_TUPLE else '>= 0'}, got {v}")
            out.append(float(v))
        return tuple(out)
    if kind == CHOICE:
        if value not in f.metadata["choices"]:
            raise bad(f"must be one of {f.metadata['choices']}, got {value!r}")
        return value
    raise AssertionError(f"field {name} has no validation kind")  # a bug, not user input


def validate(scn):
    """Re-validate every field of a scenario instance (raises ConfigError naming the field)."""
    cls_name = type(scn).__name__
    for f in dataclasses.fields(scn):
        if f.metadata.get("kind") != FIXED:
            _validate_value(cls_name, f, getattr(scn, f.name))
    scn._check()
    return scn


def _preset(name: str):
    if name not in SCENARIOS:
        raise ConfigError(f"scenario: unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
    return SCENARIOS[name]


def get_scenario(name: str, /, **overrides):
    """The preset ``name`` (p1..p4) with validated field overrides."""
    base = _preset(name)
    fields = {f.name: f for f in dataclasses.fields(base)}
    clean = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"{key}: not a field of scenario {name}; known fields: {', '.join(sorted(k for k in fields if k != 'name'))}"
            )
        clean[key] = _validate_value(type(base).__name__, fields[key], value)
    scn = dataclasses.replace(base, **clean)
    scn._check()
    return scn


def parse_overrides(name: str, assignments: typing.Iterable[str]) -> dict:
    """Turn CLI ``field=value`` strings into typed values for :func:`get_scenario`.

    Tuples are written comma-separated: ``resolutions=1,2,3``.
    """
    fields = {f.name: f for f in dataclasses.fields(_preset(name))}
    out = {}
    for text in assignments:
        if "=" not in text:
            raise ConfigError(f"--set: expected field=value, got {text!r}")
        key, raw = (s.strip() for s in text.split("=", 1))
        if key not in fields:
            raise ConfigError(f"{key}: not a field of scenario {name}; known fields: "
                              f"{', '.join(sorted(k for k in fields if k != 'name'))}")
        kind = fields[key].metadata.get("kind")
        try:
            if kind in (SIZE, COUNT):
                out[key] = int(raw)
            elif kind in (POS, NONNEG, REAL, UNIT, CORR):
                out[key] = float(raw)
            elif kind == BITS:
                out[key] = tuple(int(x) for x in raw.split(",") if x.strip())
            elif kind in (POS_TUPLE, NONNEG_TUPLE):
                out[key] = tuple(float(x) for x in raw.split(",") if x.strip())
            else:
                out[key] = raw
        except ValueError:
            raise ConfigError(f"{key}: cannot parse {raw!r} as a {kind} value") from None
    return out


def scenario_dict(scn) -> dict:
    """The resolved config as a plain JSON-able dict (saved next to every run)."""
    return {f.name: (list(v) if isinstance(v := getattr(scn, f.name), tuple) else v) for f in dataclasses.fields(scn)}
