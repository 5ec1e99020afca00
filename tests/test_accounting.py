"""Accounting: exact counts on known runs, and counting never changes a number."""

import torch

from feat.accounting import (
    CountedModule,
    Counter,
    Counts,
    counted,
    counted_problem,
    peak_memory,
    record,
)
from feat.baselines import SwitchingProtocol, switch
from feat.problem import TwoStateProblem
from feat.transport import ODEProcess, SDEProcess, TimeGrid, transport

from .gaussians import exact_fields, gaussian_pair


def test_energy_wrapper_counts_configurations_and_keeps_values():
    ga, _, _ = gaussian_pair(d=3)
    c = Counter()
    u = counted(ga, c)
    x = ga.sample(7, torch.Generator().manual_seed(0))
    assert torch.equal(u(x), ga(x)) and torch.equal(u.score(x), ga.score(x))
    e1, s1 = u.energy_and_score(x[:2])
    e2, s2 = ga.energy_and_score(x[:2])
    assert torch.equal(e1, e2) and torch.equal(s1, s2)
    assert c.counts() == Counts(energy_evals=7 + 2, gradient_evals=7 + 2)
    assert u.log_z() == ga.log_z() and u.sample is not None and u.event_shape == (3,)


def test_sde_transport_counts_are_exact_and_counting_changes_nothing():
    ga, gb, _ = gaussian_pair(d=3)
    b, s = exact_fields(ga, gb)
    n_traj, n_points, batch = 37, 11, 16  # three chunks, the last one partial
    grid = TimeGrid.uniform(n_points)
    x0 = ga.sample(n_traj, torch.Generator().manual_seed(1))
    plain = transport(SDEProcess(b, s, 0.1, ga, gb), x0, grid, seed=3, batch_size=batch)
    c = Counter()
    proc = SDEProcess(b, s, 0.1, counted(ga, c), counted(gb, c))
    with c.networks(), c.phase("transport"):
        res = transport(proc, x0, grid, seed=3, batch_size=batch)
    assert torch.equal(res.work, plain.work) and torch.equal(res.x_end, plain.x_end)
    # u_a at every start, u_b at every end; b and s at each of the M grid points.
    assert c.counts("transport") == Counts(energy_evals=2 * n_traj, gradient_evals=0,
                                           network_evals=2 * n_points * n_traj)
    assert c.counts() == c.counts("transport") and c.seconds["transport"] > 0
    # the reversed process wraps each field once more: still one evaluation per call
    c2 = Counter()
    with c2.networks():
        transport(proc.reversed(), x0, grid.reversed(), seed=3, batch_size=batch)
    assert c2.counts().network_evals == 2 * n_points * n_traj


def test_ode_transport_counts_one_velocity_evaluation_per_point():
    ga, gb, _ = gaussian_pair(d=2)
    b, _ = exact_fields(ga, gb)
    c = Counter()
    proc = ODEProcess(b, counted(ga, c), counted(gb, c))
    x0 = ga.sample(9, torch.Generator().manual_seed(2))
    with c.networks():
        transport(proc, x0, TimeGrid.uniform(6))
    assert c.counts() == Counts(energy_evals=18, network_evals=6 * 9)


def test_switching_counts_every_energy_and_gradient():
    ga, gb, _ = gaussian_pair(d=2)
    c = Counter()
    n, steps, moves, leap = 20, 5, 3, 2
    proto = SwitchingProtocol.uniform(counted(ga, c), counted(gb, c), steps, moves, leap)
    plain = switch(SwitchingProtocol.uniform(ga, gb, steps, moves, leap), ga.sample(n), seed=0)
    x0 = plain.x_start
    res = switch(proto, x0, seed=0)
    assert torch.equal(res.work, plain.work)
    per_energy = n * (1 + steps * moves * leap)
    assert c.counts() == Counts(energy_evals=2 * per_energy, gradient_evals=2 * per_energy)
    assert res.n_moves_total == n * steps * moves


def test_counted_problem_keeps_everything_but_the_energies():
    ga, gb, exact = gaussian_pair(d=2)
    g = torch.Generator().manual_seed(0)
    p = TwoStateProblem(ga, gb, ga.sample(10, g), gb.sample(12, g), reference=exact, name="g",
                        metadata={"k": 1})
    c = Counter()
    q = counted_problem(p, c)
    assert q.energy_a.inner is ga and q.energy_b.inner is gb
    assert torch.equal(q.x_a, p.x_a) and q.reference == exact and q.metadata == {"k": 1}
    q.scores()
    assert c.counts().gradient_evals == 22


def test_module_wrapper_phases_and_record():
    c = Counter()
    net = CountedModule(torch.nn.Linear(3, 2), c)
    with c.phase("a"):
        net(torch.zeros(4, 3))
        record(sampling=5)
    with c.phase("b"):
        net(torch.zeros(6, 3))
    record(sampling=100)  # no active counter: ignored
    assert c.counts("a") == Counts(network_evals=4, sampling_steps=5)
    assert c.counts("b") == Counts(network_evals=6)
    d = c.to_dict()
    assert d["total"]["network_evals"] == 10 and set(d["phases"]) == {"a", "b"}
    mem = peak_memory()
    assert mem["rss_mib"] > 10 and mem["cuda_mib"] is None or mem["cuda_mib"] >= 0


def test_network_hooks_are_removed_on_exit():
    ga, gb, _ = gaussian_pair(d=2)
    b, _ = exact_fields(ga, gb)
    c = Counter()
    with c.networks():
        b(0.5, torch.zeros(3, 2))
    b(0.5, torch.zeros(3, 2))
    assert c.counts().network_evals == 3


def test_energy_informed_fields_of_a_run_count_their_gradients_in_transport(tmp_path):
    """The EMA copy of an energy-informed score shares the counted energies (it used to copy
    them, so the transport's force evaluations went uncounted)."""
    import json

    from feat.config import resolve
    from feat.pipeline import run

    n, points = 12, 9
    config = resolve({"system": {"kind": "gaussian", "dim": 2, "n_samples_a": 100,
                                 "n_samples_b": 100},
                      "fields": {"hidden": 8, "depth": 1, "informed_score": True,
                                 "scaled_score": False},
                      "training": {"steps": 2, "batch_size": 8},
                      "transport": {"eps": 0.1, "n_points": points, "n_forward": n,
                                    "n_reverse": n},
                      "estimate": {"n_bootstrap": 0}})
    run(config, tmp_path, progress=False)
    counts = json.loads((tmp_path / "results.json").read_text())["accounting"]["phases"]
    # −∇u_a and −∇u_b at every grid point of every trajectory, both directions
    assert counts["transport"]["gradient_evals"] == 2 * points * 2 * n


def test_a_run_counts_what_its_end_state_samples_cost(tmp_path):
    """A problem whose metadata says what its samples cost gets an "end-state sampling" phase
    (exact samplers, as here by default, have none)."""
    import json

    from feat.config import resolve
    from feat.pipeline import run_problem
    from feat.specs import build_problem

    config = resolve({"system": {"kind": "gaussian", "dim": 2, "n_samples_a": 60,
                                 "n_samples_b": 60},
                      "fields": {"hidden": 8, "depth": 1},
                      "training": {"steps": 1, "batch_size": 8},
                      "transport": {"eps": 0.1, "n_points": 3, "n_forward": 4, "n_reverse": 4},
                      "estimate": {"n_bootstrap": 0}})
    problem = build_problem(config.system, torch.Generator().manual_seed(0))
    run_problem(problem, config, tmp_path / "exact", progress=False)
    phases = json.loads((tmp_path / "exact" / "results.json").read_text())["accounting"]["phases"]
    assert "end-state sampling" not in phases
    problem.metadata["sampling_cost"] = {"sampling_steps": 500, "gradient_evals": 2500}
    run_problem(problem, config, tmp_path / "md", progress=False)
    acc = json.loads((tmp_path / "md" / "results.json").read_text())["accounting"]
    assert acc["phases"]["end-state sampling"]["sampling_steps"] == 500
    assert acc["phases"]["end-state sampling"]["gradient_evals"] == 2500
    assert acc["total"]["sampling_steps"] == 500
