"""MDLBI on P2 (seed 002): one DDPG actor-critic per BS, no information exchanged between BSs.

Each BS m runs its own DDPG (P2 sec. IV, Algorithm 1):
- observation o_m = its local CSI (real / imaginary parts) and rho_-m, the other BSs' IRS
  claims overheard from leaked control signals (``twin.envs.p2`` builds it; nothing else);
- action a_m = precoders W_m, phases of the IRSs it ends up owning and its association
  scores (the env turns those into the K x L matrix A_m and the L-entry claim vector);
  the actor's last layer is tanh, so every action lies in the env's [-1, 1] boxes;
- critic Q_m(o_m, a_m), target y = r_m + gamma Q'_m(o'_m, mu'_m(o'_m)) (eq. 9), actor by the
  deterministic policy gradient (eq. 8), soft target updates with tau (eqs. 11-12);
- reward r_m = BS m's own sum rate. Every BS has its own networks, optimizers and gradient
  clipping, and its update reads only its own buffer fields (o_m, a_m, r_m, o'_m), so no
  number computed by one BS reaches another. (One buffer object holds all BSs' fields and
  the sampled slot indices are common: a simulation convenience that passes no values.)

Centralized DDPG ("the original DDPG-based solution" of P2 Fig. 3) is the same code with one
*group* holding every BS: one actor maps the concatenated observations of all BSs to all
their actions, one critic scores the joint action, the reward is the total sum rate
(``MDLBIConfig(centralized=True)``, registered as ``ddpg-central``).

Collisions (two BSs claiming one IRS in a slot) are arbitrated by the environment with
``twin.multicell.resolve_claims`` (the rule the IRS daemon runs when deployed); the
agents only see its consequence in their reward and, one slot later, in rho_-m.

Action parameterization (``P2BSActor``; project choice, documented in docs/RESULTS.md P2):
- association: the paper's L entries (D_a = 2 N_b |C_m| + |N_m| N_l + L), one claim score per
  IRS ("claims" head); the K x L per-user scores ("per-user") made a BS claim an IRS as soon as
  any of its ~5 users had a positive score, so near-random actors collided in ~90 % of slots
  and the claim was an OR over K outputs the critic could not resolve;
- precoders: the paper's 2 N_b K entries plus one power entry per user ("power-direction"):
  with the preset's high SNR the rate depends mostly on how P_max is split between users
  (all power on one user with a fixed beam already gives ~9x the random rate), and through
  2 N_b entries per user plus the env's normalization that split was out of reach (exact-
  gradient check: 20 vs 32 bit/s/Hz; ``bench/p2_study.py diagnose``).
Exploration noise and the critic work on the raw tanh output; the env action is a fixed
element-wise map of it. ``precoder_head="direct", assoc_head="per-user"`` gives the earlier,
paper-literal outputs.
- precoders "local" (``algo.precoder_head=local``, project option): the actor outputs only
  one power entry per user, one regularisation entry and the L claims; W and the claimed
  IRS's phases are computed from the BS's OWN observation (``local_precoders``: weighted
  regularized MMSE directions on its own users' effective channels, the claimed IRS co-phased
  for its strongest user). With DDPG the critic's gradient reached the 2 N_b K precoder
  entries poorly (K = 30: 4.3 bit/s/Hz learned vs 23 with the exact gradient); here it only
  has to rank K + 1 + L numbers. The map is parameter-free, so DDPG is unchanged; the numpy
  runtime repeats it (``agents.runtime.p2_local``).
- claims "gain" (``algo.claim_head=gain``, project option, with the local head): the L claim
  entries are thresholds; the BS claims the IRS whose value from its OWN CSI (``claim_value``: the
  high-SNR rate gain of the user the local head co-phases) most exceeds its threshold, and that
  value is an actor / critic input. The free scores made both BSs learn "never claim" after early
  collisions; with values the claim is state dependent by construction (``agents.runtime.p2_claims``).

Open values the paper leaves unspecified are named in ``MDLBIConfig`` (hidden sizes,
exploration noise, warm-up, heads). The paper initializes w and Phi as identity; here the
actor's initial outputs are near zero (small last-layer gain) and the env normalizes W to
full power, so the initial decision is an arbitrary fixed beam, not the identity (project choice).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn

from agents.base import Actor, Algorithm, own_role
from agents.buffers import ReplayBuffer
from agents.networks import MLP
from twin.envs.base import Action, BatchedEnv, Obs, StepResult
from twin.errors import ConfigError


@dataclass(frozen=True)
class MDLBIConfig:
    gamma: float = 0.99                   # P2 Table I
    lr_actor: float = 1e-4                # P2 Table I
    lr_critic: float = 1e-3               # P2 Table I
    tau: float = 1e-3                     # P2 Table I (soft target update, eqs. 11-12)
    buffer_size: int = 10_000             # P2 Table I
    batch_size: int = 64                  # P2 Table I (W)
    hidden: tuple[int, ...] = (256, 256)  # two hidden ReLU layers (sec. V); widths open
    noise: float = 0.2                    # open: Gaussian exploration std on the tanh outputs (clipped to [-1, 1])
    noise_decay_steps: int = 0            # open: linear decay of the noise to noise_final over this many transitions (0 = constant)
    noise_final: float = 0.05             # open
    learning_starts: int = 256            # open: transitions before the first update
    updates_per_step: int = 1             # open: gradient updates per batched env step
    reward_scale: float = 0.1             # open: rewards (bit/s/Hz, ~10-40) scaled for the critic
    grad_clip: float = 10.0               # open
    preact_penalty: float = 0.1           # open: L2 on the actor's pre-tanh outputs; keeps the tanh out of
                                          # saturation (all |W| entries at 1 = equal power, the worst split)
    centralized: bool = False             # True = one DDPG over all BSs (the centralized baseline)
    precoder_head: str = "power-direction"  # open: "direct" (2 N_b K entries) or + one power entry per user (P2BSActor)
    assoc_head: str = "claims"            # the paper's L association entries ("claims") or K x L scores ("per-user")
    power_range: float = 5.0              # open: power entry q in [-1, 1] scales a user's column by exp(power_range (q - 1))
    reg_range: float = 3.0                # open ("local" head): regularisation 10^(reg_range r) / SNR_ref, r in [-1, 1]
    align_iters: int = 3                  # open ("local" head): phase-alignment / MRT alternations for the claimed IRS
    gain_features: bool = False           # open: append own users' log link gains to the actor's and critic's input
    claim_head: str = "free"              # "free": the L claim scores are MLP outputs (paper); "gain" (project
                                          # option, needs precoder_head=local): claim iff the IRS's value from
                                          # the BS's own CSI (claim_value) exceeds a learned threshold
    claim_range: float = 16.0             # open ("gain" claims): threshold tau = claim_range (u + 1) / 2 bit/s/Hz


def _soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    with torch.no_grad():
        for pt, ps in zip(target.parameters(), source.parameters()):
            pt.lerp_(ps, tau)


def _unit_phase(x: torch.Tensor) -> torch.Tensor:
    """x / |x| (1 where x = 0)."""
    a = x.abs()
    return torch.where(a > 0, x / a.clamp_min(1e-300), torch.ones_like(x))


def unpack_bs_observation(obs: torch.Tensor, *, n_users: int, n_irs: int, n_antennas: int,
                          n_elements: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A BS's P2 observation (B, obs_dim) -> its direct CSI d (B, K, N_b) (h_BU rows / a_BU),
    BS-IRS CSI G (B, L, N_l, N_b) (H_BI / a_BI), IRS-user CSI h (B, L, K, N_l) (h_IU / a_IU),
    complex128, and its own-user mask (B, K) (``twin.envs.p2`` layout; the numpy twin is
    ``agents.runtime.p2_local.unpack_observation``)."""
    B, K, L, Nb, Nl = obs.shape[0], n_users, n_irs, n_antennas, n_elements
    x = obs.to(torch.float64)
    sizes = [K * Nb, K * Nb, L * Nl * Nb, L * Nl * Nb, L * K * Nl, L * K * Nl, K]
    p = torch.split(x[:, :sum(sizes)], sizes, dim=1)
    d = torch.complex(p[0], p[1]).view(B, K, Nb)
    G = torch.complex(p[2], p[3]).view(B, L, Nl, Nb)
    h = torch.complex(p[4], p[5]).view(B, L, K, Nl)
    return d, G, h, p[6] > 0.5


def local_precoders(obs: torch.Tensor, q: torch.Tensor, r: torch.Tensor, c: torch.Tensor, *, n_users: int, n_irs: int,
                    n_antennas: int, n_elements: int, refl_scale: float, snr_ref: float, power_range: float,
                    reg_range: float, align_iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The "local" precoder head: W (B, 2, N_b, K) in [-1, 1] and theta (B, L, N_l) from one BS's
    OWN observation (B, obs_dim) and its raw outputs: power entries q (B, K), regularisation
    r (B, 1), claims c (B, L). Float64 throughout; ``agents.runtime.p2_local`` is the numpy twin.

    1. Read the BS's CSI back from its observation (``twin.envs.p2`` layout, path-loss
       normalized; ``refl_scale`` = a_IU a_BI / a_BU puts the reflected path in direct units).
    2. The IRS it claims (argmax c if > 0, as the claims head) is co-phased for its own user with
       the strongest IRS-user link (``agents.reference.align_phases``' alternation, started from
       MRT on that user's direct link).
    3. Effective channels g_k of its own users (direct + that IRS's reflected path), power shares
       D_k = exp(power_range (q_k - 1)) / sum, and the regularized weighted-MMSE direction
       w_k ~ (sum_j D_j g_j^H g_j + alpha I)^-1 g_k^H, alpha = 10^(reg_range r) / snr_ref (the
       structure of the optimal multi-user MISO beamformer; r = 0 is the MMSE weight), scaled to
       sqrt(D_k). W is then divided by its largest entry (the env renormalizes to P_max).
    """
    B, K, L, Nb, Nl = obs.shape[0], n_users, n_irs, n_antennas, n_elements
    d, G, h, own = unpack_bs_observation(obs, n_users=K, n_irs=L, n_antennas=Nb, n_elements=Nl)
    cd = c.to(torch.float64)
    l = cd.argmax(-1)                                                 # (B,)
    claimed = cd.gather(1, l[:, None]).squeeze(1) > 0                 # (B,)
    rows = torch.arange(B)
    Gl = G[rows, l] * refl_scale                                      # (B, Nl, Nb)
    hl = h[rows, l]                                                   # (B, K, Nl)
    gain = torch.where(own, hl.abs().square().sum(-1), torch.full((B, K), -1.0, dtype=torch.float64))
    k = gain.argmax(-1)
    dk = d[rows, k].conj()                                            # (B, Nb): direct row of user k
    hk = hl[rows, k].conj()                                           # (B, Nl)
    e1 = torch.zeros(B, Nb, dtype=dk.dtype)
    e1[:, 0] = 1.0
    nd = torch.linalg.vector_norm(dk, dim=-1, keepdim=True)
    v = torch.where(nd > 0, dk.conj() / nd.clamp_min(1e-300), e1)
    phi = torch.ones(B, Nl, dtype=dk.dtype)
    for _ in range(max(1, align_iters)):
        per_el = hk * (Gl @ v.unsqueeze(-1)).squeeze(-1)             # (B, Nl) reflected path of each element
        direct = (dk * v).sum(-1, keepdim=True)
        phi = _unit_phase(direct) * _unit_phase(per_el).conj()
        g_row = dk + ((hk * phi).unsqueeze(-1) * Gl).sum(1)
        ng = torch.linalg.vector_norm(g_row, dim=-1, keepdim=True)
        v = torch.where(ng > 0, g_row.conj() / ng.clamp_min(1e-300), v)
    phi = torch.where(claimed[:, None], phi, torch.ones_like(phi))
    refl = torch.einsum("bkn,bnq->bkq", hl.conj() * phi.unsqueeze(1), Gl)           # (B, K, Nb)
    g = d.conj() + refl * claimed[:, None, None].to(refl.dtype)
    g = g * own.unsqueeze(-1).to(g.dtype)
    ownf = own.to(torch.float64)
    half = torch.exp(0.5 * power_range * (q.to(torch.float64) - 1.0)) * ownf     # sqrt of the power entries
    norm = half.square().sum(-1, keepdim=True).clamp_min(1e-300).sqrt()
    sqrtD = half / norm                                                           # sqrt(D), gradient-safe at D = 0
    D = sqrtD.square()
    M = torch.einsum("bk,bki,bkj->bij", D.to(g.dtype), g.conj(), g)
    alpha = torch.pow(10.0, reg_range * r.to(torch.float64).reshape(B)) / snr_ref
    M = M + alpha[:, None, None] * torch.eye(Nb, dtype=g.dtype)
    X = torch.linalg.solve(M, g.conj().transpose(-1, -2))                           # (B, Nb, K)
    nx = torch.linalg.vector_norm(X, dim=-2, keepdim=True)
    W = torch.where(nx > 0, X / nx.clamp_min(1e-300), torch.zeros_like(X)) * sqrtD.unsqueeze(1)
    W2 = torch.stack([W.real, W.imag], 1)                                            # (B, 2, Nb, K)
    peak = W2.abs().flatten(1).amax(-1).clamp_min(1e-300)
    W2 = (W2 / peak[:, None, None, None]).clamp(-1.0, 1.0)
    theta = torch.zeros(B, L, Nl, dtype=torch.float64)
    theta[rows, l] = torch.where(claimed[:, None], torch.angle(phi) / math.pi, torch.zeros(B, Nl, dtype=torch.float64))
    return W2.to(torch.float32), theta.to(torch.float32)


def gain_features(x: torch.Tensor, groups: int, obs_dim: int, n_users: int, n_irs: int, n_antennas: int,
                  n_elements: int) -> torch.Tensor:
    """x (B, groups * obs_dim) -> x ++ per block [log10 ||h_BU,k||^2 (K), log10 ||h_IU,lk||^2 (L K)],
    own users only (0 elsewhere), in the observation's normalized units (float32). The link gains
    an actor needs to rank its users, which an MLP on raw real / imaginary entries finds hard
    (``algo.gain_features``; ``agents.runtime.p2_local.gain_features`` is the numpy twin)."""
    B, K, L, Nb, Nl = x.shape[0], n_users, n_irs, n_antennas, n_elements
    o = x.reshape(B, groups, obs_dim)
    d2 = o[..., :K * Nb].square() + o[..., K * Nb:2 * K * Nb].square()                       # (B, g, K Nb)
    i = 2 * K * Nb + 2 * L * Nl * Nb
    h2 = o[..., i:i + L * K * Nl].square() + o[..., i + L * K * Nl:i + 2 * L * K * Nl].square()
    own = o[..., i + 2 * L * K * Nl:i + 2 * L * K * Nl + K]                                    # (B, g, K)
    fd = torch.log10(d2.reshape(B, groups, K, Nb).sum(-1) + 1e-6) * own
    fh = torch.log10(h2.reshape(B, groups, L, K, Nl).sum(-1) + 1e-6) * own.unsqueeze(2)
    return torch.cat([x, torch.cat([fd, fh.reshape(B, groups, L * K)], -1).reshape(B, -1)], -1)


def claim_value(obs: torch.Tensor, *, n_users: int, n_irs: int, n_antennas: int, n_elements: int,
                refl_scale: float) -> torch.Tensor:
    """The "gain" claim head's value of each IRS for one BS, from its OWN observation (B, obs_dim)
    -> v (B, L) float64, in bit/s/Hz: for the own user the "local" head would co-phase on IRS l
    (strongest IRS-user link), v_l = 2 log2(1 + A / ||d||), A = refl_scale sum_n |h_IU,l,n|
    ||H_BI,l,n,:|| (the co-phased reflected amplitude, an upper bound) and d the user's direct
    channel: the rate that user gains with the IRS at high SNR. 0 without own users.
    ``agents.runtime.p2_claims.claim_value`` is the numpy twin."""
    d, G, h, own = unpack_bs_observation(obs, n_users=n_users, n_irs=n_irs, n_antennas=n_antennas,
                                         n_elements=n_elements)
    amp = refl_scale * (h.abs() * torch.linalg.vector_norm(G, dim=-1).unsqueeze(2)).sum(-1)   # (B, L, K)
    dn = torch.linalg.vector_norm(d, dim=-1)                                                    # (B, K)
    link = torch.where(own.unsqueeze(1), h.abs().square().sum(-1), torch.full_like(amp, -1.0))
    k = link.argmax(-1)                                                                         # (B, L)
    a_k = amp.gather(2, k.unsqueeze(-1)).squeeze(-1)
    d_k = dn.gather(1, k)
    v = 2.0 * torch.log2(1.0 + a_k / d_k.clamp_min(1e-6))
    return torch.where(own.any(-1, keepdim=True), v, torch.zeros_like(v))


def claim_features(x: torch.Tensor, groups: int, obs_dim: int, n_users: int, n_irs: int, n_antennas: int,
                   n_elements: int, refl_scale: float) -> torch.Tensor:
    """x (B, groups * obs_dim) -> the claim value of every block (B, groups * L), float32."""
    B = x.shape[0]
    v = claim_value(x.reshape(B * groups, obs_dim), n_users=n_users, n_irs=n_irs, n_antennas=n_antennas,
                    n_elements=n_elements, refl_scale=refl_scale)
    return v.reshape(B, groups * n_irs).to(torch.float32)


def gain_claims(obs: torch.Tensor, u: torch.Tensor, *, n_users: int, n_irs: int, n_antennas: int, n_elements: int,
                refl_scale: float, claim_range: float) -> torch.Tensor:
    """The "gain" claim head: scores c (B, L) = tanh(v_l - tau_l), tau_l = claim_range (u_l + 1) / 2
    from the actor's raw entry u_l; the BS claims argmax c if > 0, i.e. the IRS whose value most
    exceeds its learned threshold (``agents.runtime.p2_claims.gain_claims`` is the numpy twin)."""
    v = claim_value(obs, n_users=n_users, n_irs=n_irs, n_antennas=n_antennas, n_elements=n_elements,
                    refl_scale=refl_scale)
    tau = claim_range * (u.to(torch.float64).reshape(v.shape) + 1.0) / 2.0
    return torch.tanh(v - tau).to(torch.float32)


PRECODER_HEADS = ("power-direction", "direct", "local")
CLAIM_HEADS = ("free", "gain")
ASSOC_HEADS = ("claims", "per-user")


class P2BSActor(Actor):
    """Deterministic P2 BS actor: local observation (B, obs_dim) -> {"W", "theta", "assoc"} in [-1, 1].

    One MLP with a tanh output gives the *raw action* z in [-1, 1] (what exploration perturbs
    and the critic scores); a fixed, parameter-free map turns z into the env's action:
      precoders  "direct":          W = z_W, the paper's 2 N_b K real / imaginary entries;
                 "power-direction": the same 2 N_b K entries plus one power entry q_k per user,
                                    W[:, :, k] = z_W[:, :, k] * exp(power_range (q_k - 1)): the
                                    split of P_max over users is one number per user instead
                                    of being implied by 2 N_b entries each (the env still
                                    normalizes to P_max, eq. 2);
      association "claims":   the paper's L entries c_l (D_a counts L): the BS claims the IRS
                              argmax_l c_l if c_l > 0 and puts all its users on it (assoc[k, l] = c_l
                              for every k, so the env's per-user rule gives exactly that);
                  "per-user": K x L scores as the env takes them (a user's best score > 0 picks
                              its IRS; a BS claims every IRS one of its users picked).
    Both maps are element-wise (exp, product, broadcast): the network itself stays an
    MLP with a tanh output.

    The network maps ``group_size`` concatenated observations to ``group_size`` raw actions.
    MDLBI: group_size 1. Centralized DDPG: group_size n_bs, and the actor exported for BS
    ``index`` slices its own action; on a local observation alone it fills the other BSs'
    observations with zeros, and ``wrap_policy`` (used by evaluation) feeds the real
    concatenated observations, i.e. the centralized controller it was trained as.
    """

    def __init__(self, obs_dim: int, n_antennas: int, n_users: int, n_irs: int, n_elements: int,
                 hidden: Sequence[int] = (256, 256), group_size: int = 1, index: int = 0,
                 agent_ids: Sequence[str] = (), precoder_head: str = "direct", assoc_head: str = "per-user",
                 power_range: float = 5.0, refl_scale: float = 1.0, snr_ref: float = 1.0, reg_range: float = 3.0,
                 align_iters: int = 3, gain_features: bool = False, claim_head: str = "free",
                 claim_range: float = 16.0) -> None:
        super().__init__()
        if not 0 <= int(index) < int(group_size):
            raise ConfigError(f"index: {index} is not a member of a group of {group_size}")
        if precoder_head not in PRECODER_HEADS:
            raise ConfigError(f"algo.precoder_head: {precoder_head!r} is unknown; use one of {list(PRECODER_HEADS)}")
        if assoc_head not in ASSOC_HEADS:
            raise ConfigError(f"algo.assoc_head: {assoc_head!r} is unknown; use one of {list(ASSOC_HEADS)}")
        if precoder_head == "local" and assoc_head != "claims":
            raise ConfigError("algo.precoder_head: 'local' computes precoders for the IRS the BS claims; use algo.assoc_head=claims")
        if claim_head not in CLAIM_HEADS:
            raise ConfigError(f"algo.claim_head: {claim_head!r} is unknown; use one of {list(CLAIM_HEADS)}")
        if claim_head == "gain" and precoder_head != "local":
            raise ConfigError("algo.claim_head: 'gain' values an IRS for the user the local head co-phases; "
                              "use algo.precoder_head=local")
        self._kw = dict(obs_dim=int(obs_dim), n_antennas=int(n_antennas), n_users=int(n_users), n_irs=int(n_irs),
                        n_elements=int(n_elements), hidden=[int(h) for h in hidden], group_size=int(group_size),
                        index=int(index), agent_ids=[str(a) for a in agent_ids], precoder_head=str(precoder_head),
                        assoc_head=str(assoc_head), power_range=float(power_range), refl_scale=float(refl_scale),
                        snr_ref=float(snr_ref), reg_range=float(reg_range), align_iters=int(align_iters),
                        gain_features=bool(gain_features), claim_head=str(claim_head),
                        claim_range=float(claim_range))
        Nb, K, L, Nl = self._kw["n_antennas"], n_users, n_irs, n_elements
        self.shapes = {"W": (2, Nb, K), "theta": (L, Nl), "assoc": (K, L)}
        if precoder_head == "local":  # power entries + one regularisation entry; W and theta from own CSI
            self.raw_shapes = {"power": (K,), "reg": (1,)}
        else:
            self.raw_shapes = {"W": (2, Nb, K)}
            if precoder_head == "power-direction":
                self.raw_shapes["power"] = (K,)
            self.raw_shapes["theta"] = (L, Nl)
        self.raw_shapes["assoc"] = (L,) if assoc_head == "claims" else (K, L)
        self.act_dim = sum(math.prod(s) for s in self.raw_shapes.values())
        # A small last-layer gain keeps the initial scores near 0 (associations undecided), as
        # the paper's random initialization.
        self.in_dim = obs_dim + ((K + L * K) if gain_features else 0) + (L if claim_head == "gain" else 0)
        self.net = MLP(group_size * self.in_dim, group_size * self.act_dim, hidden, "relu", out_gain=0.1)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, group_size * obs_dim) -> the network's input (gain features appended if enabled)."""
        kw = self._kw
        dims = (kw["group_size"], kw["obs_dim"], kw["n_users"], kw["n_irs"], kw["n_antennas"], kw["n_elements"])
        out = gain_features(x, *dims) if kw["gain_features"] else x
        if kw["claim_head"] == "gain":   # the claim value of each IRS: what the threshold is compared with
            out = torch.cat([out, claim_features(x, *dims, kw["refl_scale"])], -1)
        return out

    def arch_kwargs(self) -> dict[str, Any]:
        return dict(self._kw)

    def joint(self, x: torch.Tensor) -> torch.Tensor:
        """(B, group_size * obs_dim) -> raw actions (B, group_size, act_dim) in [-1, 1] (tanh)."""
        return torch.tanh(self.pre(x))

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-tanh outputs (B, group_size, act_dim)."""
        return self.net(self.inputs(x)).view(x.shape[0], self._kw["group_size"], self.act_dim)

    def split(self, flat: torch.Tensor, obs: torch.Tensor | None = None,
              claims: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Raw action (B, act_dim) -> the env's action dict (the fixed map of the class docstring).
        The "local" head also needs the BS's own observation (B, obs_dim). ``claims`` (B, L) in
        [-1, 1], if given, replaces the claim scores (studies that impose an association)."""
        raw, i = {}, 0
        for key, shape in self.raw_shapes.items():
            n = math.prod(shape)
            raw[key] = flat[:, i:i + n].reshape(flat.shape[0], *shape)
            i += n
        kw = self._kw
        if claims is not None:
            raw["assoc"] = claims.to(flat.dtype)
        elif kw["claim_head"] == "gain":   # raw entries are thresholds; the scores come from the own CSI
            if obs is None:
                raise ConfigError("P2BSActor.split: the 'gain' claim head needs the BS's observation")
            raw["assoc"] = gain_claims(obs, raw["assoc"], n_users=kw["n_users"], n_irs=kw["n_irs"],
                                       n_antennas=kw["n_antennas"], n_elements=kw["n_elements"],
                                       refl_scale=kw["refl_scale"], claim_range=kw["claim_range"])
        if kw["precoder_head"] == "local":
            if obs is None:
                raise ConfigError("P2BSActor.split: the 'local' precoder head needs the BS's observation")
            W, theta = local_precoders(obs, raw["power"], raw["reg"], raw["assoc"], n_users=kw["n_users"],
                                       n_irs=kw["n_irs"], n_antennas=kw["n_antennas"], n_elements=kw["n_elements"],
                                       refl_scale=kw["refl_scale"], snr_ref=kw["snr_ref"], power_range=kw["power_range"],
                                       reg_range=kw["reg_range"], align_iters=kw["align_iters"])
        else:
            W, theta = raw["W"], raw["theta"]
            if "power" in raw:
                W = W * torch.exp(kw["power_range"] * (raw["power"] - 1.0))[:, None, None, :]
        assoc = raw["assoc"]
        if assoc.ndim == 2:  # claims (B, L) -> the same scores for every user (B, K, L)
            assoc = assoc.unsqueeze(1).expand(-1, kw["n_users"], -1)
        return {"W": W, "theta": theta, "assoc": assoc}

    def forward(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        g, m, d = self._kw["group_size"], self._kw["index"], self._kw["obs_dim"]
        x = obs
        if g > 1:  # local observation only: the others' blocks are unknown (zeros)
            x = obs.new_zeros(obs.shape[0], g * d)
            x[:, m * d:(m + 1) * d] = obs
        return self.split(self.joint(x)[:, m], obs)

    def wrap_policy(self, local: Callable[[BatchedEnv, Obs], Action]) -> Callable[[BatchedEnv, Obs], Action]:
        """Centralized actor (index 0 of a group): decide for all BSs from all observations."""
        ids = self._kw["agent_ids"]
        if self._kw["group_size"] == 1 or self._kw["index"] != 0:
            return local

        def policy(env: BatchedEnv, obs: Obs) -> Action:
            with torch.inference_mode():
                joint = self.joint(torch.cat([torch.as_tensor(obs[a]).float() for a in ids], -1))
            return {a: self.split(joint[:, i], torch.as_tensor(obs[a]).float()) for i, a in enumerate(ids)}

        return policy


def local_scales(env: Any) -> dict[str, float]:
    """Constants of the preset the "local" head needs to read CSI back from an observation:
    refl_scale = a_IU a_BI / a_BU (the env's per-block normalizations) and snr_ref =
    P_max a_BU^2 / sigma^2 (the SNR of a unit normalized direct channel)."""
    n = getattr(env, "_norm", None)
    if n is None:
        return {"refl_scale": 1.0, "snr_ref": 1.0}
    return {"refl_scale": n["IU"] * n["BI"] / n["BU"], "snr_ref": env.cfg.p_max_w * n["BU"] ** 2 / env.cfg.noise_w}


class MDLBI(Algorithm):
    """Independent DDPG per BS (MDLBI) or one DDPG over all BSs (``centralized``)."""

    name = "mdlbi"

    def __init__(self, env: BatchedEnv, config: MDLBIConfig | None = None, seed: int = 0) -> None:
        cfg = MDLBIConfig() if config is None else config
        for field in ("Nb", "K", "L", "Nl", "obs_dim", "n_bs"):
            if not hasattr(env, field):
                raise ConfigError(f"--algo mdlbi: needs the P2 environment (--scenario p2), got {type(env).__name__}")
        self.cfg, self.seed = cfg, int(seed)
        self.ids = tuple(env.agent_ids)
        self.groups: list[tuple[str, ...]] = [self.ids] if cfg.centralized else [(a,) for a in self.ids]
        self.group_names = ["central"] if cfg.centralized else list(self.ids)
        self.gen = torch.Generator().manual_seed(self.seed)
        dims = dict(obs_dim=env.obs_dim, n_antennas=env.Nb, n_users=env.K, n_irs=env.L, n_elements=env.Nl, hidden=cfg.hidden,
                    precoder_head=cfg.precoder_head, assoc_head=cfg.assoc_head, power_range=cfg.power_range,
                    reg_range=cfg.reg_range, align_iters=cfg.align_iters, gain_features=cfg.gain_features,
                    claim_head=cfg.claim_head, claim_range=cfg.claim_range,
                    **local_scales(env))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            actors, critics = {}, {}
            for name, members in zip(self.group_names, self.groups):
                actors[name] = P2BSActor(**dims, group_size=len(members), index=0, agent_ids=members)
                act_dim = actors[name].act_dim
                critics[name] = MLP(len(members) * (actors[name].in_dim + act_dim), 1, cfg.hidden, "relu", out_gain=1.0)
        self.act_dim = act_dim
        self.actor_nets = nn.ModuleDict(actors)
        self.critics = nn.ModuleDict(critics)
        self.target_actors = copy.deepcopy(self.actor_nets).requires_grad_(False)
        self.target_critics = copy.deepcopy(self.critics).requires_grad_(False)
        # One optimizer pair per group: no shared state (Adam moments, clipping) between BSs.
        self.opt_actor = {n: torch.optim.Adam(self.actor_nets[n].parameters(), lr=cfg.lr_actor) for n in self.group_names}
        self.opt_critic = {n: torch.optim.Adam(self.critics[n].parameters(), lr=cfg.lr_critic) for n in self.group_names}
        self.buffer = ReplayBuffer(cfg.buffer_size)
        self.transitions = 0
        self.updates = 0
        self._raw: tuple[Obs, dict[str, torch.Tensor]] | None = None  # last act(): (obs, raw action per agent)

    # ---------------------------------------------------------------- acting

    def _noise_std(self) -> float:
        c = self.cfg
        if c.noise_decay_steps <= 0:
            return c.noise
        frac = min(1.0, self.transitions / c.noise_decay_steps)
        return c.noise + frac * (c.noise_final - c.noise)

    def _group_obs(self, obs: Obs, members: tuple[str, ...]) -> torch.Tensor:
        return torch.cat([torch.as_tensor(obs[a]).float() for a in members], -1)

    @torch.no_grad()
    def act(self, obs: Obs, state: torch.Tensor, explore: bool) -> Action:
        actions: Action = {}
        raw: dict[str, torch.Tensor] = {}
        sigma = self._noise_std() if explore else 0.0
        for name, members in zip(self.group_names, self.groups):
            net = self.actor_nets[name]
            joint = net.joint(self._group_obs(obs, members))
            if sigma > 0:  # exploration on the raw action, the space the critic scores
                joint = (joint + sigma * torch.randn(joint.shape, generator=self.gen)).clamp(-1.0, 1.0)
            for i, a in enumerate(members):
                raw[a] = joint[:, i].clone()
                actions[a] = net.split(joint[:, i], torch.as_tensor(obs[a]).float())
        self._raw = (obs, raw)
        return actions

    def observe(self, obs: Obs, state: torch.Tensor, action: Action, result: StepResult, next_state: torch.Tensor) -> None:
        if self._raw is None or self._raw[0] is not obs:
            raise ConfigError("MDLBI.observe: call act() on the same observation first (the raw action is stored there)")
        raw = self._raw[1]
        self._raw = None
        self.buffer.add({
            "obs": {a: torch.as_tensor(obs[a]).float() for a in self.ids},
            "next_obs": {a: torch.as_tensor(result.obs[a]).float() for a in self.ids},
            "action": {a: raw[a] for a in self.ids},
            "reward": {a: result.rewards[a].float() * self.cfg.reward_scale for a in self.ids},
            # Truncation (episode_steps) is a time limit, not a terminal state: bootstrap through it.
            "terminated": result.terminated.float(),
        })
        self.transitions += int(result.terminated.shape[0])

    # ---------------------------------------------------------------- learning

    def update(self) -> dict[str, float]:
        if len(self.buffer) < max(self.cfg.learning_starts, self.cfg.batch_size):
            return {}
        metrics: dict[str, float] = {}
        for _ in range(self.cfg.updates_per_step):
            batch = self.buffer.sample(self.cfg.batch_size, self.gen)
            lc, la = 0.0, 0.0
            for name, members in zip(self.group_names, self.groups):
                c, a = self._update_group(name, members, batch)
                lc, la = lc + c, la + a
            self.updates += 1
            metrics = {"loss_critic": lc, "loss_actor": la, "noise": self._noise_std()}
        return metrics

    def _update_group(self, name: str, members: tuple[str, ...], batch: dict[str, Any]) -> tuple[float, float]:
        cfg = self.cfg
        actor, critic = self.actor_nets[name], self.critics[name]
        o = self._group_obs(batch["obs"], members)
        o2 = self._group_obs(batch["next_obs"], members)
        oc, o2c = actor.inputs(o), actor.inputs(o2)   # the critic sees the same (featured) input
        a = torch.cat([batch["action"][m] for m in members], -1)
        r = sum(batch["reward"][m] for m in members)
        not_term = 1.0 - batch["terminated"]
        with torch.no_grad():
            a2 = self.target_actors[name].joint(o2).flatten(1)
            y = r + cfg.gamma * not_term * self.target_critics[name](torch.cat([o2c, a2], -1)).squeeze(-1)
        q = critic(torch.cat([oc, a], -1)).squeeze(-1)
        loss_c = (y - q).square().mean()
        self.opt_critic[name].zero_grad(set_to_none=True)
        loss_c.backward()
        nn.utils.clip_grad_norm_(critic.parameters(), cfg.grad_clip)
        self.opt_critic[name].step()
        pre = actor.pre(o)
        loss_a = -critic(torch.cat([oc, torch.tanh(pre).flatten(1)], -1)).mean() + cfg.preact_penalty * pre.square().mean()
        self.opt_actor[name].zero_grad(set_to_none=True)
        loss_a.backward()
        nn.utils.clip_grad_norm_(actor.parameters(), cfg.grad_clip)
        self.opt_actor[name].step()
        critic.zero_grad(set_to_none=True)  # the actor step left gradients in the critic
        _soft_update(self.target_actors[name], actor, cfg.tau)
        _soft_update(self.target_critics[name], critic, cfg.tau)
        return float(loss_c.detach()), float(loss_a.detach())

    # ---------------------------------------------------------------- execution and persistence

    def actors(self) -> dict[str, Actor]:
        if not self.cfg.centralized:
            return {a: self.actor_nets[a] for a in self.ids}
        # One exported actor per BS, each a copy of the central network slicing its own action.
        central = self.actor_nets["central"]
        out = {}
        for i, a in enumerate(self.ids):
            kw = {**central.arch_kwargs(), "index": i}
            actor = P2BSActor(**kw)
            actor.load_state_dict(central.state_dict())
            out[a] = actor.eval()
        return out

    def role_of(self, agent_id: str) -> str:
        return own_role(agent_id, self.ids)

    def state_dict(self) -> dict[str, Any]:
        return {
            "config": asdict(self.cfg), "actors": self.actor_nets.state_dict(), "critics": self.critics.state_dict(),
            "target_actors": self.target_actors.state_dict(), "target_critics": self.target_critics.state_dict(),
            "opt_actor": {n: o.state_dict() for n, o in self.opt_actor.items()},
            "opt_critic": {n: o.state_dict() for n, o in self.opt_critic.items()},
            "buffer": self.buffer.state_dict(), "gen": self.gen.get_state(),
            "transitions": self.transitions, "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor_nets.load_state_dict(state["actors"])
        self.critics.load_state_dict(state["critics"])
        self.target_actors.load_state_dict(state["target_actors"])
        self.target_critics.load_state_dict(state["target_critics"])
        for n in self.group_names:
            self.opt_actor[n].load_state_dict(state["opt_actor"][n])
            self.opt_critic[n].load_state_dict(state["opt_critic"][n])
        self.buffer.load_state_dict(state["buffer"])
        self.gen.set_state(state["gen"])
        self.transitions, self.updates = int(state["transitions"]), int(state["updates"])


@dataclass(frozen=True)
class CentralDDPGConfig(MDLBIConfig):
    """Registry default for ``ddpg-central``: MDLBIConfig with ``centralized`` on."""

    centralized: bool = True
