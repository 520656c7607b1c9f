"""The fitting callback on trajectories with known parameters, and on degenerate runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sirt.theory.dynamics import Dynamics, cross_improvement
from sirt.theory.fitting import MIN_ROUNDS, fit_dG_vs_G, fit_exponential, fit_gamma, fit_joint, fit_power_law
from sirt.theory.report import fit_run

ROOT = Path(__file__).resolve().parents[1]
KNOWN = Dynamics(alpha=1.0, beta=0.4, k=0.5, b=0.05, U_s0=1.2, U_v0=0.9)


def random_dynamics(seed: int) -> Dynamics:
    """A model with a clear decay: r in [0.25, 0.6], G falling by 70-95% of G_0."""
    rng = np.random.default_rng(seed)
    alpha = rng.uniform(0.8, 1.5)
    beta = alpha * rng.uniform(0.1, 0.6)
    k = rng.uniform(0.25, 0.6) / (alpha - beta)
    U_v0, G_0 = rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)
    return Dynamics(alpha, beta, k, k * G_0 * rng.uniform(0.05, 0.3), U_v0 + G_0, U_v0)


def observe(model: Dynamics, T: int, noise: float = 0.0,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rounds 0..T of the model, with relative Gaussian noise on U_s and U_v."""
    t = np.arange(T + 1.0)
    rng = np.random.default_rng(seed)
    return (t, model.U_s(t) * (1 + noise * rng.standard_normal(t.size)),
            model.U_v(t) * (1 + noise * rng.standard_normal(t.size)))


def write_run(run_dir: Path, rows: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run_dir


def rows_of(t: np.ndarray, U_s: np.ndarray, U_v: np.ndarray, **columns: list) -> list[dict]:
    rows = [{"round": int(ti), "U_s": float(s), "U_v": float(v), "G": float(s - v)}
            for ti, s, v in zip(t, U_s, U_v, strict=True)]
    for key, values in columns.items():
        for row, value in zip(rows, values, strict=True):
            row[key] = value
    return rows


def read_fit(run_dir: Path) -> dict:
    """fit.json, refusing NaN and Infinity, which are not JSON."""
    def refuse(token: str) -> None:
        raise ValueError(f"fit.json holds {token}")

    return json.loads((run_dir / "fit.json").read_text(), parse_constant=refuse)


@pytest.mark.parametrize("seed", range(6))
def test_joint_fit_recovers_rate_and_limits_at_1pct_noise(seed: int) -> None:
    model = random_dynamics(seed)
    fit = fit_joint(*observe(model, T=20, noise=0.01, seed=100 + seed))
    assert fit.ok, fit.status
    assert fit.values["rate"] == pytest.approx(model.r, rel=0.05)
    assert fit.values["U_s_inf"] == pytest.approx(model.U_s_inf, rel=0.05)
    assert fit.values["U_v_inf"] == pytest.approx(model.U_v_inf, rel=0.05)


def test_joint_fit_is_exact_on_noise_free_data() -> None:
    v = fit_joint(*observe(KNOWN, T=10)).values
    expected = {"rate": KNOWN.r, "alpha_p": KNOWN.alpha_p, "beta_p": KNOWN.beta_p,
                "delta": KNOWN.delta, "U_s_inf": KNOWN.U_s_inf, "U_v_inf": KNOWN.U_v_inf,
                "G_inf": KNOWN.G_inf, "alpha_over_beta": KNOWN.alpha / KNOWN.beta}
    assert {key: v[key] for key in expected} == pytest.approx(expected, rel=1e-6)
    assert v["r2"] == pytest.approx(1.0, abs=1e-9)


def test_per_curve_fit_has_r2_stderr_and_band() -> None:
    t, U_s, _ = observe(KNOWN, T=10, noise=0.01, seed=3)
    fit = fit_exponential(t, U_s, "U_s")
    assert fit.ok and fit.values["r2"] > 0.95
    assert all(fit.values["stderr"][p] > 0 for p in ("y_inf", "amplitude", "rate"))
    assert abs(fit.values["rate"] - KNOWN.r) < 3 * fit.values["stderr"]["rate"]
    band = np.asarray(fit.values["band_1sigma"])
    assert band.shape == t.shape and np.all(band > 0)


def test_dG_vs_G_is_linear_with_the_predicted_zero() -> None:
    t, U_s, U_v = observe(KNOWN, T=10)
    fit = fit_dG_vs_G(t, U_s - U_v)
    assert fit.ok and fit.values["r2"] == pytest.approx(1.0, abs=1e-9)
    assert fit.values["slope"] == pytest.approx(-2 * np.tanh(KNOWN.r / 2), rel=1e-9)
    assert fit.values["G_inf"] == pytest.approx(KNOWN.G_inf, rel=1e-9)


def test_aic_prefers_the_law_that_made_the_data() -> None:
    t = np.arange(15.0)
    noise = 1e-3 * np.random.default_rng(0).standard_normal(t.size)
    exp_data, power_data = 0.5 + 0.8 * np.exp(-0.4 * t) + noise, 0.5 + 0.8 * (t + 1) ** -1.5 + noise
    assert fit_exponential(t, exp_data).values["aic"] < fit_power_law(t, exp_data).values["aic"]
    assert fit_power_law(t, power_data).values["aic"] < fit_exponential(t, power_data).values["aic"]


def test_gamma_is_recovered_from_a_late_schedule() -> None:
    eta = [0.0] * 7 + [1.0, 0.0, 0.0]
    states = cross_improvement(KNOWN, eta, gamma=0.3)
    rng = np.random.default_rng(7)
    U = np.array([[s.U_s0, s.U_v0] for s in states]) * (1 + 0.005 * rng.standard_normal((11, 2)))
    fit = fit_gamma(np.arange(11.0), U[:, 0], U[:, 1], np.array([*eta, 0.0]))
    assert fit.ok, fit.status
    assert fit.values["gamma"] == pytest.approx(0.3, rel=0.1)
    assert fit.values["rate"] == pytest.approx(KNOWN.r, rel=0.2)


def test_fit_run_writes_every_part_and_the_plots(tmp_path: Path) -> None:
    t, U_s, U_v = observe(KNOWN, T=10, noise=0.003, seed=1)
    acc = (0.3 + 0.2 * (1 - np.exp(-0.3 * t))).tolist()
    run = write_run(tmp_path / "run", rows_of(t, U_s, U_v, acc=acc, eta=[0.0] * 11))
    report = fit_run(run, forecast_k=5)
    assert report == read_fit(run)
    assert report["status"] == "ok", report["status"]
    assert set(report["curves"]) == {"U_s", "U_v", "G", "acc"}
    assert report["curves"]["acc"]["r2"] > 0.999
    assert report["joint"]["rate"] == pytest.approx(KNOWN.r, rel=0.1)
    assert report["dG_vs_G"]["slope"] < 0
    assert report["cross_improvement"]["status"].startswith("skipped")
    forecast = report["forecast"]
    assert forecast["k"] == 5 and abs(forecast["rel_error"]["U_s"]) < 0.02
    table = {(row["k"], row["method"], row["quantity"]) for row in forecast["table"]}
    assert {k for k, _, _ in table} == set(range(3, 11))
    assert {(10, method, "U_s") for method in ("joint", "exponential", "power_law")} <= table
    assert set(forecast["mean_abs_rel_error"]) == {"joint", "exponential", "power_law"}
    for name in report["plots"]["files"]:
        assert (run / name).stat().st_size > 10_000
    assert len(report["plots"]["files"]) == 3


def test_noise_free_forecast_is_exact(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", rows_of(*observe(KNOWN, T=10)))
    forecast = fit_run(run, forecast_k=4, make_plots=False)["forecast"]
    assert forecast["status"] == "ok"
    assert all(abs(e) < 1e-6 for e in forecast["rel_error"].values())


def degenerate_runs() -> dict[str, tuple[list[dict], str]]:
    t, U_s, U_v = observe(KNOWN, T=8)
    nan_U_s = U_s.copy()
    nan_U_s[3] = np.nan
    rising = Dynamics(alpha=1.0, beta=0.4, k=0.5, b=0.3, U_s0=1.2, U_v0=0.9)  # G_0 < G_inf
    return {
        "three rounds": (rows_of(t[:3], U_s[:3], U_v[:3]), f"at least {MIN_ROUNDS} rounds"),
        "flat": (rows_of(t, np.full(9, 1.2), np.full(9, 0.9)), "flat"),
        "nan": (rows_of(t, nan_U_s, U_v), "non-finite U_s at rounds [3]"),
        "rising": (rows_of(*observe(rising, T=8)), "rising"),
        "linear rise": (rows_of(t, 1 + 0.1 * t, 0.8 + 0.05 * t), "no saturation"),
    }


@pytest.mark.parametrize("case", degenerate_runs())
def test_degenerate_runs_give_a_status_not_an_exception(tmp_path: Path, case: str) -> None:
    rows, reason = degenerate_runs()[case]
    run = write_run(tmp_path / "run", rows)
    report = fit_run(run, make_plots=False)
    assert report == read_fit(run)
    assert report["status"] != "ok" and reason in report["status"]
    assert reason in report["joint"]["status"]


def test_a_limit_no_run_can_reach_is_no_saturation() -> None:
    """A nearly straight fall (the bend beyond the run) fits well, with a negative NLL as its limit."""
    t = np.arange(11.0)
    y = -0.5 + 1.5 * np.exp(-0.03 * t) + np.random.default_rng(0).normal(0, 0.005, t.size)
    fit = fit_exponential(t, y, "U_s")
    assert fit.values["r2"] > 0.99 and fit.values["y_inf"] < 0
    assert fit.status.startswith("no saturation: the fitted limit of U_s"), fit.status
    bends = 0.3 + 0.7 * np.exp(-0.3 * t) + np.random.default_rng(0).normal(0, 0.005, t.size)
    assert fit_exponential(t, bends, "U_s").status == "ok"  # a bend within the run: a limit it can reach


def test_non_convergence_is_a_status() -> None:
    fit = fit_exponential(*observe(KNOWN, T=10, noise=0.01)[:2], max_nfev=2)
    assert fit.status.startswith("did not converge"), fit.status


def test_a_truncated_line_is_skipped(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", rows_of(*observe(KNOWN, T=6)))
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"round": 7, "U_s": 0.9')
    report = fit_run(run, make_plots=False)
    assert report["skipped_lines"] == [8] and report["n_rounds"] == 7
    assert report["joint"]["status"] == "ok"


def run_fit_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sirt.fit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_on_three_rounds_exits_0_and_says_why(tmp_path: Path) -> None:
    t, U_s, U_v = observe(KNOWN, T=2)
    run = write_run(tmp_path / "run", rows_of(t, U_s, U_v))
    done = run_fit_cli(str(run))
    assert done.returncode == 0, done.stderr
    status = read_fit(run)["status"]
    assert f"at least {MIN_ROUNDS} rounds" in status and status in done.stdout


def test_cli_without_metrics_exits_2(tmp_path: Path) -> None:
    done = run_fit_cli(str(tmp_path / "nowhere"))
    assert done.returncode == 2
    assert "metrics.jsonl does not exist" in done.stderr and "Traceback" not in done.stderr


def test_standard_errors_weight_the_fits(tmp_path: Path) -> None:
    """A round measured with a large standard error (an outlier) moves the weighted fit far less."""
    t, U_s, U_v = observe(KNOWN, T=10)
    U_s_bad, U_v_bad = U_s.copy(), U_v.copy()
    U_s_bad[3] += 0.3
    U_v_bad[3] += 0.3
    se_s, se_v = np.full(t.size, 0.005), np.full(t.size, 0.005)
    se_s[3] = se_v[3] = 0.3
    unweighted = fit_joint(t, U_s_bad, U_v_bad)
    weighted = fit_joint(t, U_s_bad, U_v_bad, se=(se_s, se_v))
    assert weighted.values["weighted"] and not unweighted.values["weighted"]
    truth = KNOWN.r
    assert abs(weighted.values["rate"] - truth) < abs(unweighted.values["rate"] - truth) / 5
    curve = fit_exponential(t, U_s_bad, "U_s", se=se_s)
    assert curve.values["weighted"] and curve.values["rate"] == pytest.approx(truth, rel=0.02)
    rows = rows_of(t, U_s_bad, U_v_bad, U_s_se=list(se_s), U_v_se=list(se_v))
    fit_run(write_run(tmp_path / "run", rows), make_plots=False)
    fit = read_fit(tmp_path / "run")
    assert fit["joint"]["weighted"] and fit["curves"]["U_s"]["weighted"]
    assert fit["joint"]["rate"] == pytest.approx(weighted.values["rate"])


def test_a_run_with_three_k_or_more_gets_its_pass_at_k_plot(tmp_path: Path) -> None:
    """The Pass@K ablation's figure: pass@K against K per round, drawn by the fit (so sirt.fit redraws it)."""
    t = np.arange(6)
    U_s, U_v = 1.0 + np.exp(-0.4 * t), 0.8 + 0.9 * np.exp(-0.4 * t)
    ks = [1, 2, 4, 8, 16, 32, 64]
    passk = [{str(k): min(1.0, (0.2 + 0.05 * ti) * k ** (0.5 - 0.05 * ti)) for k in ks} for ti in t]
    report = fit_run(write_run(tmp_path / "ablation", rows_of(t, U_s, U_v, pass_at_k=passk)), forecast_k=4)
    assert "plots/pass_at_k.png" in report["plots"]["files"]
    assert (tmp_path / "ablation" / "plots" / "pass_at_k.png").stat().st_size > 10_000
    two = [{"1": 0.2, "4": 0.5}] * len(t)  # two K: nothing to draw a curve of
    report = fit_run(write_run(tmp_path / "two", rows_of(t, U_s, U_v, pass_at_k=two)), forecast_k=4)
    assert not any("pass_at_k" in name for name in report["plots"]["files"])


def test_sirt_fit_figure_copies_the_trajectory_plot(tmp_path: Path, capsys) -> None:
    """``make figure RUN=...`` (``sirt.fit RUN --figure PATH``): the README figure is the run's fitted trajectories."""
    from sirt import fit

    t = np.arange(8)
    U_s, U_v = 1.0 + np.exp(-0.4 * t), 0.8 + 0.9 * np.exp(-0.4 * t)
    run = write_run(tmp_path / "run", rows_of(t, U_s, U_v, acc=list(0.3 + 0.2 * (1 - np.exp(-0.4 * t)))))
    figure = tmp_path / "docs" / "figures" / "trajectory.png"
    assert fit.main([str(run), "--figure", str(figure), "--title", "default run", "--no-plots"]) == 0
    assert figure.read_bytes() == (run / "plots" / "trajectories.png").read_bytes()
    assert figure.stat().st_size > 10_000
    bare = write_run(tmp_path / "bare", [{"round": int(ti), "n_selected": 3} for ti in t])  # no curve to draw
    assert fit.main([str(bare), "--figure", str(tmp_path / "none.png")]) == 2
    assert "no trajectory plot" in capsys.readouterr().err and not (tmp_path / "none.png").exists()
