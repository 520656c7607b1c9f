"""Solver-verifier gap dynamics of paper 1: closed forms, integrator, external data.

Section 3 models one self-improvement run as ``dU_s/dt = -alpha E``, ``dU_v/dt = -beta E``
with ``E = f(G)``, ``G = U_s - U_v``; linearised, ``E = k G - b``. Proposition 3.1 solves the
linear model in closed form; :func:`integrate` solves any ``f`` numerically so the two can
be checked against each other. Section 5 adds a limited budget of external data, spread
over the rounds with shares ``eta_t``; :func:`cross_improvement` simulates it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import solve_ivp


@dataclass(frozen=True)
class Dynamics:
    """The linear model of Proposition 3.1, started from ``(U_s0, U_v0)`` at t = 0."""

    alpha: float
    beta: float
    k: float
    b: float
    U_s0: float
    U_v0: float

    def __post_init__(self) -> None:
        if not 0 <= self.beta < self.alpha:
            raise ValueError(f"beta must satisfy 0 <= beta < alpha, got alpha={self.alpha}, "
                             f"beta={self.beta}")
        if not self.k > 0:
            raise ValueError(f"k must be > 0, got k={self.k}")

    @property
    def r(self) -> float:
        """The one rate shared by G, U_s and U_v: ``r = k (alpha - beta)``."""
        return self.k * (self.alpha - self.beta)

    @property
    def G_inf(self) -> float:
        return self.b / self.k

    @property
    def delta(self) -> float:
        """Initial distance of the gap from its limit: ``G_0 - G_inf``."""
        return self.U_s0 - self.U_v0 - self.G_inf

    @property
    def alpha_p(self) -> float:
        """alpha' = alpha delta / (alpha - beta), the amplitude of U_s."""
        return self.alpha * self.delta / (self.alpha - self.beta)

    @property
    def beta_p(self) -> float:
        """beta' = beta delta / (alpha - beta), the amplitude of U_v."""
        return self.beta * self.delta / (self.alpha - self.beta)

    @property
    def U_s_inf(self) -> float:
        return self.U_s0 - self.alpha_p

    @property
    def U_v_inf(self) -> float:
        return self.U_v0 - self.beta_p

    @property
    def dU_s_inf_dG0(self) -> float:
        """Corollary: raising the initial gap at fixed U_v0 lowers the solver's limit."""
        return -self.beta / (self.alpha - self.beta)

    def G(self, t: ArrayLike) -> np.ndarray:
        return self.delta * self._decay(t) + self.G_inf

    def U_s(self, t: ArrayLike) -> np.ndarray:
        return self.alpha_p * self._decay(t) + self.U_s_inf

    def U_v(self, t: ArrayLike) -> np.ndarray:
        return self.beta_p * self._decay(t) + self.U_v_inf

    def rounds_to_within(self, eps: float) -> float:
        """Corollary: time after which ``|G(t) - G_inf| < eps``, ``ln(|delta| / eps) / r``."""
        return max(0.0, math.log(abs(self.delta) / eps) / self.r) if self.delta else 0.0

    def advance(self, dt: float = 1.0) -> Dynamics:
        """The same model restarted from its state at time ``dt``."""
        return replace(self, U_s0=float(self.U_s(dt)), U_v0=float(self.U_v(dt)))

    def _decay(self, t: ArrayLike) -> np.ndarray:
        return np.exp(-self.r * np.asarray(t, dtype=float))


def integrate(
    f: Callable[[float], float],
    alpha: float,
    beta: float,
    U_s0: float,
    U_v0: float,
    t: ArrayLike,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``dU_s/dt = -alpha f(G)``, ``dU_v/dt = -beta f(G)`` at the sorted times ``t``.

    For a non-linear energy ``f`` there is no closed form; tight tolerances make this a
    reference the closed form is tested against.
    """
    t = np.asarray(t, dtype=float)

    def rhs(_: float, u: np.ndarray) -> list[float]:
        E = f(u[0] - u[1])
        return [-alpha * E, -beta * E]

    sol = solve_ivp(rhs, (0.0, float(t[-1])), [U_s0, U_v0], t_eval=t, method="DOP853",
                    rtol=1e-12, atol=1e-12)
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol.y[0], sol.y[1]


def cross_improvement(dynamics: Dynamics, eta: Sequence[float], gamma: float) -> list[Dynamics]:
    """Self-improvement with external data: the model at rounds ``0..len(eta)``.

    Going from round t to t + 1 flows the linear dynamics for one unit of time, then spends
    the share ``eta[t]`` of the external data, which lowers the verifier's uncertainty::

        U_v <- U_v - gamma * eta[t] * U_v(0)

    This is the paper's step ``U_v^c = (1 + gamma eta_t)^{-1} U_v(t-1)`` to first order in
    ``gamma eta_t``, with the uncertainty it scales held at its round-0 value: the external
    data are a fixed set whose worth does not depend on when they are used. The change is
    deliberate. The flow conserves ``I = alpha U_v - beta U_s`` and the limits depend on ``I``
    alone (``U_s,inf = (I + alpha b/k) / (alpha - beta)``); this step lowers ``I`` by
    ``alpha gamma eta_t U_v(0)`` whatever the state, so the final uncertainty, the limit the
    run settles at, depends on ``sum(eta)`` only: Proposition 5.1 holds exactly. The paper's
    step scales whatever ``U_v`` is at that round, and ``prod (1 + gamma eta_t)^{-1}`` is not
    a function of ``sum(eta)``, so with it the proposition holds only to first order (for
    the default model of conf/simulate.yaml at gamma = 0.1, Early, Uniform and Late then
    leave U_s,inf 0.013 nats apart).

    Each returned model starts from that round's state, so ``states[t].U_s0`` is ``U_s`` at
    round t and ``states[-1].U_s_inf`` the limit once the data are spent.
    """
    states = [dynamics]
    for eta_t in eta:
        state = states[-1].advance()
        states.append(replace(state, U_v0=state.U_v0 - gamma * eta_t * dynamics.U_v0))
    return states
