"""The closed forms of Proposition 3.1 against the integrator, and Proposition 5.1."""

import math
from dataclasses import replace

import numpy as np
import pytest

from sirt.theory.dynamics import Dynamics, cross_improvement, integrate

MODELS = [
    Dynamics(alpha=1.0, beta=0.4, k=0.5, b=0.05, U_s0=1.2, U_v0=0.9),
    Dynamics(alpha=2.0, beta=0.0, k=0.3, b=0.0, U_s0=3.0, U_v0=2.5),
    Dynamics(alpha=0.7, beta=0.6, k=4.0, b=0.8, U_s0=0.5, U_v0=0.45),  # G rises: delta < 0
]
T = 10
SCHEDULES = {"early": [1.0] + [0.0] * (T - 1), "uniform": [1 / T] * T,
             "late": [0.0] * 7 + [1.0] + [0.0] * (T - 8)}


@pytest.mark.parametrize("model", MODELS)
def test_closed_form_matches_integrator(model: Dynamics) -> None:
    t = np.linspace(0.0, 12.0, 49)
    U_s, U_v = integrate(lambda G: model.k * G - model.b, model.alpha, model.beta,
                         model.U_s0, model.U_v0, t)
    np.testing.assert_allclose(model.U_s(t), U_s, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.U_v(t), U_v, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model.G(t), U_s - U_v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_proposition_3_1_identities(model: Dynamics) -> None:
    a, b_ = model.alpha, model.beta
    assert model.r == pytest.approx(model.k * (a - b_))
    assert model.alpha_p - model.beta_p == pytest.approx(model.delta)
    assert model.U_s_inf == pytest.approx(
        (a * model.U_v0 - b_ * model.U_s0 + a * model.b / model.k) / (a - b_))
    assert model.U_s_inf - model.U_v_inf == pytest.approx(model.G_inf)
    assert float(model.U_s(1e3)) == pytest.approx(model.U_s_inf)


def test_dU_s_inf_dG0_is_the_finite_difference() -> None:
    model, h = MODELS[0], 1e-6  # raise G_0 at fixed U_v0, i.e. raise U_s0
    slope = (replace(model, U_s0=model.U_s0 + h).U_s_inf - model.U_s_inf) / h
    assert slope == pytest.approx(model.dU_s_inf_dG0, rel=1e-6)


def test_rounds_to_within_eps() -> None:
    model, eps = MODELS[0], 1e-3
    t_eps = model.rounds_to_within(eps)
    assert t_eps == pytest.approx(math.log(model.delta / eps) / model.r)
    assert abs(model.G(t_eps) - model.G_inf) == pytest.approx(eps)
    assert model.rounds_to_within(1.0) == 0.0


def test_integrator_handles_a_nonlinear_energy() -> None:
    """For any f with f(0) = 0 the gap closes and alpha U_v - beta U_s is conserved."""
    alpha, beta = 1.0, 0.3
    U_s, U_v = integrate(lambda G: np.tanh(3 * G), alpha, beta, 1.5, 1.0, np.linspace(0, 40, 9))
    np.testing.assert_allclose(alpha * U_v - beta * U_s, alpha * 1.0 - beta * 1.5, atol=1e-9)
    assert abs(U_s[-1] - U_v[-1]) < 1e-6


def test_advance_composes_to_the_closed_form() -> None:
    model, state = MODELS[0], MODELS[0]
    for _ in range(7):
        state = state.advance()
    assert state.U_s0 == pytest.approx(float(model.U_s(7.0)), abs=1e-12)
    assert state.U_v0 == pytest.approx(float(model.U_v(7.0)), abs=1e-12)


@pytest.mark.parametrize("gamma", [0.1, 0.5])
@pytest.mark.parametrize("model", MODELS[:2])
def test_proposition_5_1_final_uncertainty_ignores_the_timing(model: Dynamics,
                                                              gamma: float) -> None:
    limits = {}
    for name, eta in SCHEDULES.items():
        states = cross_improvement(model, eta + [0.0] * 200, gamma)  # run on to convergence
        limits[name] = (states[-1].U_s0, states[-1].U_v0)
        assert limits[name] == pytest.approx((states[T].U_s_inf, states[T].U_v_inf), abs=1e-9)
    for name in SCHEDULES:
        np.testing.assert_allclose(limits[name], limits["early"], rtol=0, atol=1e-9)
    # the data do act: the solver's limit drops by alpha gamma U_v0 sum(eta) / (alpha - beta)
    drop = model.alpha * gamma * model.U_v0 / (model.alpha - model.beta)
    assert limits["early"][0] == pytest.approx(model.U_s_inf - drop, abs=1e-9)


def test_cross_improvement_without_data_is_self_improvement() -> None:
    model = MODELS[0]
    states = cross_improvement(model, [0.0] * T, gamma=0.7)
    np.testing.assert_allclose([s.U_s0 for s in states], model.U_s(np.arange(T + 1)), atol=1e-12)


@pytest.mark.parametrize(("changes", "field"), [({"beta": 1.0}, "beta"), ({"beta": -0.1}, "beta"),
                                                ({"k": 0.0}, "k")])
def test_invalid_parameters_are_refused(changes: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        replace(MODELS[0], **changes)
