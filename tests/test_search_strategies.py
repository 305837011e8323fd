"""Contract tests every search strategy passes: determinism, constraints, Pareto correctness, resume."""

import json

import numpy as np
import pytest

from codesign.errors import CodesignError
from codesign.latency.model import LatencyModel
from codesign.search.encoding import SearchEncoding
from codesign.search.pareto import dominates_matrix, hypervolume, non_dominated_ranks
from codesign.search.problem import Budget, SearchProblem
from codesign.search.runner import run_search
from codesign.search.strategies import available_strategies, create_strategy
from codesign.testing import synthetic_accuracy_predictor, synthetic_profile

# registered name, or "name:selection" for aging evolution's other parent selections
STRATEGIES = ["random", "evolution", "evolution:spread-budgets", "evolution:budget", "nsga2"]


def make_strategy(case, **kwargs):
    """The strategy of a STRATEGIES entry."""
    name, _, selection = case.partition(":")
    return create_strategy(name, **kwargs, **({"selection": selection} if selection else {}))


@pytest.fixture(scope="module", params=["fastest", "evolve"])
def parts(tiny_space, request):
    model = LatencyModel.from_profile(synthetic_profile(tiny_space))
    predictor = synthetic_accuracy_predictor(tiny_space, samples=48)
    encoding = SearchEncoding(tiny_space, model, schedules=request.param)
    median = float(np.median(model.predict(encoding.sample(np.random.default_rng(0), 2000))))
    return encoding, model, predictor, median


def make_problem(parts, **budget):
    encoding, model, predictor, median = parts
    return SearchProblem(encoding, model, predictor, Budget(latency_ms=budget.pop("latency_ms", median), **budget))


def test_every_registered_strategy_is_tested():
    assert set(available_strategies()) == {case.partition(":")[0] for case in STRATEGIES}
    with pytest.raises(CodesignError, match="unknown search strategy"):
        create_strategy("annealing")


@pytest.mark.parametrize("name", STRATEGIES)
def test_seeded_runs_are_identical(parts, name):
    runs = [
        run_search(make_problem(parts), make_strategy(name, population_size=16), generations=6, seed=3)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].archive.vectors, runs[1].archive.vectors)
    other = run_search(make_problem(parts), make_strategy(name, population_size=16), generations=6, seed=4)
    assert not np.array_equal(other.archive.vectors, runs[0].archive.vectors)


@pytest.mark.parametrize("name", STRATEGIES)
def test_archive_respects_every_budget(parts, name):
    problem = make_problem(parts, max_params=20000)
    out = run_search(problem, make_strategy(name, population_size=16), generations=8, seed=0)
    assert len(out.archive.vectors) > 0
    rescored = problem.score(out.archive.vectors)
    assert (rescored.latency_ms <= problem.budget.latency_ms).all() and (rescored.params <= 20000).all()
    assert out.scored == 16 * 8 if not name.startswith("evolution") else out.scored == 16 + 8 * 7


@pytest.mark.parametrize("name", STRATEGIES)
def test_archive_is_the_pareto_front_of_everything_scored(parts, name, monkeypatch):
    problem = make_problem(parts)
    seen_vectors, seen_scores = [], []
    original = problem.score

    def recording(vectors):
        scores = original(vectors)
        seen_vectors.append(np.asarray(vectors))
        seen_scores.append(scores)
        return scores

    monkeypatch.setattr(problem, "score", recording)
    out = run_search(problem, make_strategy(name, population_size=16), generations=6, seed=1)
    acc = np.concatenate([s.accuracy for s in seen_scores])
    lat = np.concatenate([s.latency_ms for s in seen_scores])
    feasible = np.concatenate([s.feasible for s in seen_scores])
    front_acc, front_lat = out.archive.scores.accuracy, out.archive.scores.latency_ms
    # nothing feasible that was scored dominates a front member, and members do not dominate each other
    a, t = np.concatenate([acc[feasible], front_acc]), np.concatenate([lat[feasible], front_lat])
    d = dominates_matrix(a, t)
    assert not d[:, len(a) - len(front_acc) :].any()
    best_feasible = acc[feasible].max()
    assert front_acc.max() == pytest.approx(best_feasible)


@pytest.mark.parametrize("name", STRATEGIES)
def test_archive_holds_each_compiled_network_once(parts, name):
    problem = make_problem(parts)
    out = run_search(problem, make_strategy(name, population_size=16), generations=8, seed=2)
    keys = problem.encoding.phenotype(out.archive.vectors)
    assert len(np.unique(keys, axis=0)) == len(keys)


def test_phenotype_ignores_genes_that_do_not_change_the_compiled_network(parts):
    encoding, model, _, _ = parts
    space, positions = encoding.space, encoding.positions
    rng = np.random.default_rng(7)
    vectors = encoding.sample(rng, 400)
    base = encoding.phenotype(vectors)
    active = positions.active(vectors)
    n_s = space.num_stages
    changed = 0
    for i, v in enumerate(vectors):
        inactive_positions = np.flatnonzero(~active[i])
        if not len(inactive_positions):
            continue
        w = v.copy()
        w[encoding.arch_length + inactive_positions] = (w[encoding.arch_length + inactive_positions] + 1) % np.maximum(
            1, encoding.counts[encoding.arch_length + inactive_positions]
        )
        slot = positions.positions[inactive_positions[0]].slot
        kernel_column = 1 + n_s + slot
        w[kernel_column] = (w[kernel_column] + 1) % encoding.counts[kernel_column]
        np.testing.assert_array_equal(encoding.phenotype(w[None, :])[0], base[i])
        changed += 1
        # an active gene is part of the phenotype
        u = v.copy()
        u[0] = (u[0] + 1) % encoding.counts[0]
        assert not np.array_equal(encoding.phenotype(u[None, :])[0], base[i])
    assert changed > 50
    # the phenotype compiles to the same latency (with "fastest", schedule genes follow from the rest)
    restored = encoding.complete(base.copy()) if encoding.schedules == "fastest" else base
    assert model.predict(restored).tolist() == pytest.approx(model.predict(vectors).tolist())


@pytest.mark.parametrize("name", STRATEGIES)
def test_resume_reaches_the_uninterrupted_result(parts, name, tmp_path):
    full = run_search(make_problem(parts), make_strategy(name, population_size=12), generations=8, seed=5)
    ckpt = tmp_path / "checkpoint.json"
    run_search(make_problem(parts), make_strategy(name, population_size=12), generations=3, seed=5, checkpoint=ckpt)
    resumed = run_search(
        make_problem(parts),
        make_strategy(name, population_size=12),
        generations=8,
        seed=5,
        checkpoint=ckpt,
        resume=True,
    )
    np.testing.assert_array_equal(resumed.archive.vectors, full.archive.vectors)
    assert resumed.scored == full.scored
    data = json.loads(ckpt.read_text())
    assert data["generation"] == 8
    with pytest.raises(CodesignError, match="other settings"):
        run_search(
            make_problem(parts),
            make_strategy(name, population_size=13),
            generations=9,
            seed=5,
            checkpoint=ckpt,
            resume=True,
        )


def test_pareto_selection_picks_undominated_parents(parts):
    problem = make_problem(parts)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="selection must be one of"):
        create_strategy("evolution", selection="fitness")
    everyone = create_strategy("evolution", population_size=24, tournament_size=24)
    population = everyone.initialize(problem, rng)
    s = population.scores
    ranks = non_dominated_ranks(s.accuracy, s.latency_ms, s.violation)
    assert (ranks > 0).any()
    # a tournament of the whole population is won by a member of the first front
    assert (ranks[everyone._parents(s, problem.budget.latency_ms, rng, 32)] == 0).all()
    # in pairs, the winner is never on a worse front than the loser
    pairs = create_strategy("evolution", population_size=24, tournament_size=2)
    entrants = np.random.default_rng(1).integers(0, 24, size=(200, 2))
    winners = pairs._parents(s, problem.budget.latency_ms, np.random.default_rng(1), 200)
    assert (ranks[winners] <= ranks[entrants].min(axis=1)).all()


def test_infeasible_budget_reports_the_fastest_reachable(parts):
    problem = make_problem(parts, latency_ms=1e-6)
    fastest, vector = problem.fastest_reachable()
    assert fastest > 1e-6 and problem.score(vector[None, :]).latency_ms[0] == pytest.approx(fastest)


def test_pareto_ranks_and_hypervolume():
    acc = np.array([0.9, 0.8, 0.85, 0.7, 0.9])
    lat = np.array([2.0, 1.0, 1.5, 1.2, 2.5])
    ranks = non_dominated_ranks(acc, lat)
    assert ranks.tolist() == [0, 0, 0, 1, 1]
    ranks = non_dominated_ranks(acc, lat, violation=np.array([0, 0, 0.5, 0, 0]))
    assert ranks[2] > max(ranks[[0, 1, 3, 4]])
    assert hypervolume(np.array([0.5]), np.array([1.0]), reference_latency=2.0) == pytest.approx(0.5)
    assert hypervolume(acc, lat, reference_latency=3.0) == pytest.approx(0.8 * 0.5 + 0.85 * 0.5 + 0.9 * 1.0)


def test_fastest_schedules_are_the_optimum_of_every_vector_the_search_makes(tiny_space):
    model = LatencyModel.from_profile(synthetic_profile(tiny_space))
    assert (model.candidate_counts > 1).any()
    encoding = SearchEncoding(tiny_space, model, schedules="fastest")
    rng = np.random.default_rng(0)
    sampled = encoding.sample(rng, 64)
    made = {
        "sample": sampled,
        "mutate": encoding.mutate(sampled, rng, 0.2),
        "crossover": encoding.crossover(sampled, sampled[::-1], rng),
        "offspring": encoding.offspring(
            sampled, sampled[::-1], rng, crossover_probability=0.5, mutation_probability=0.2
        ),
    }
    arch = encoding.arch_length
    for how, vectors in made.items():
        np.testing.assert_array_equal(vectors[:, arch:], model.fastest_schedule_genes(vectors), err_msg=how)
        best = model.predict(vectors)
        # no single schedule gene changed to any other candidate makes a vector faster
        for p in range(model.num_positions):
            for c in range(int(model.candidate_counts[p])):
                other = vectors.copy()
                other[:, arch + p] = c
                assert (model.predict(other) >= best - 1e-12).all(), (how, p, c)
    # and random schedule genes on the same architectures are never faster
    evolved = SearchEncoding(tiny_space, model, schedules="evolve").sample(rng, 64)
    evolved_fastest = encoding.complete(evolved.copy())
    assert (model.predict(evolved_fastest) <= model.predict(evolved) + 1e-12).all()
    assert (model.predict(evolved_fastest) < model.predict(evolved)).any()


def test_schedule_modes_are_validated_and_kept_apart_on_resume(tiny_space, tmp_path):
    model = LatencyModel.from_profile(synthetic_profile(tiny_space))
    with pytest.raises(ValueError, match="schedules must be one of"):
        SearchEncoding(tiny_space, model, schedules="joint")  # type: ignore[arg-type]
    default = SearchEncoding(tiny_space, model, schedules="default")
    assert (default.sample(np.random.default_rng(0), 8)[:, default.arch_length :] == 0).all()
    predictor = synthetic_accuracy_predictor(tiny_space, samples=48)
    ckpt = tmp_path / "checkpoint.json"

    def run(mode, generations, resume):
        problem = SearchProblem(SearchEncoding(tiny_space, model, schedules=mode), model, predictor, Budget(1e3))
        strategy = create_strategy("evolution", population_size=8)
        return run_search(problem, strategy, generations=generations, seed=0, checkpoint=ckpt, resume=resume)

    run("fastest", 2, False)
    with pytest.raises(CodesignError, match="other settings"):
        run("evolve", 3, True)


@pytest.mark.parametrize("name", STRATEGIES)
def test_first_population_holds_the_largest_and_smallest_subnets(parts, name):
    from codesign.space import Genome

    encoding = parts[0]
    problem = make_problem(parts)
    corners = encoding.phenotype(
        encoding.from_genomes([Genome.largest(encoding.space), Genome.smallest(encoding.space)])
    )
    first = make_strategy(name, population_size=16).initialize(problem, np.random.default_rng(0))
    assert len(first.vectors) == 16
    arch = encoding.arch_length
    found = {row[:arch].tobytes() for row in encoding.phenotype(first.vectors)}
    assert all(c[:arch].tobytes() in found for c in corners)
    uniform = make_strategy(name, population_size=16, start_from_corners=False)
    assert uniform.settings()["start_from_corners"] is False
    assert not (encoding.corners()[:1] == uniform.initialize(problem, np.random.default_rng(0)).vectors).all(1).any()


def test_corners_respect_pinned_genes_and_default_schedules(parts):
    encoding, model, _, _ = parts
    pinned = SearchEncoding(encoding.space, model, schedules="default", search_pruning=False)
    corners = pinned.corners()
    assert (corners < pinned.counts[None, :]).all() and (corners[:, pinned.arch_length :] == 0).all()
    fastest = encoding.corners()
    if encoding.schedules != "default":
        np.testing.assert_array_equal(fastest[:, encoding.arch_length :], model.fastest_schedule_genes(fastest))
