import pytest
import torch

from aaa_core.attacks import PGDConfig, pgd
from aaa_core.evaluation.flags import correct_flags, robust_flags
from aaa_core.evaluation.knn import KNNDefended, LatentBank, encode_all, knn_indices
from aaa_core.models import Defended


def brute_force(queries, bank, k):
    return torch.cdist(queries.double(), bank.double()).topk(k, largest=False).indices


def test_exact_knn_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(3000, 64, generator=g), torch.randn(500, 64, generator=g)
    idx = knn_indices(queries, bank, 10, chunk=128)
    assert torch.equal(idx.sort(1).values, brute_force(queries, bank, 10).sort(1).values)
    assert torch.equal(knn_indices(bank[:7], bank, 1).squeeze(1), torch.arange(7))  # a bank point finds itself


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="dimensions"):
        knn_indices(torch.randn(2, 3), torch.randn(5, 4), 1)
    with pytest.raises(ValueError, match="k=6 must be in 1..5"):
        knn_indices(torch.randn(2, 4), torch.randn(5, 4), 6)


def test_bank_keeps_the_latent_shape():
    bank = LatentBank(torch.randn(50, 4, 3, 3), k=5)
    z = torch.randn(6, 4, 3, 3)
    out = bank.neighbour_mean(z)
    assert out.shape == z.shape
    idx = knn_indices(z.flatten(1), bank.latents, 5)
    assert torch.allclose(out[0].flatten(), bank.latents[idx[0]].mean(0))


class PCAAE(torch.nn.Module):
    """A linear AE fitted in closed form: the first ``dims`` principal components of the training images.
    Its pipeline classifies well at once (about 90% natural accuracy with the test FC, 95% through kNN),
    so the attacks below are compared where they can differ; a conv AE trained for a test's seconds sits
    near chance, where every attack scores the same."""

    def __init__(self, x: torch.Tensor, dims: int = 32) -> None:
        super().__init__()
        flat = x.flatten(1)
        mean = flat.mean(0)
        torch.manual_seed(0)   # pca_lowrank's random projection
        _, _, v = torch.pca_lowrank(flat - mean, q=dims, center=False, niter=4)
        self.shape = x.shape[1:]
        self.register_buffer("mean", mean)
        self.register_buffer("v", v)

    def encode(self, x):
        return (x.flatten(1) - self.mean) @ self.v

    def decode(self, z):
        return (z @ self.v.T + self.mean).clamp(0, 1).view(-1, *self.shape)

    def forward(self, x):
        return self.decode(self.encode(x))


@pytest.fixture(scope="module")
def knn_pipeline(mnist, trained_fc):
    ae = PCAAE(mnist["x_train"]).eval()
    bank = LatentBank(encode_all(ae, mnist["x_train"]), k=10)
    return ae, trained_fc, bank


def test_plain_gradient_through_knn_is_zero_and_bpda_is_not(knn_pipeline, mnist):
    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:16].clone().requires_grad_(True), mnist["y_test"][:16]
    plain = KNNDefended(ae, clf, bank).eval()
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(plain(x), y), x)
    assert torch.count_nonzero(grad) == 0
    straight = KNNDefended(ae, clf, bank, bpda=True).eval()
    with torch.no_grad():
        assert torch.allclose(straight(x), plain(x), atol=1e-5)  # same forward values, up to rounding
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(straight(x), y), x)
    assert torch.count_nonzero(grad) > 0


def test_bpda_attack_is_not_weaker_than_the_papers_protocol(knn_pipeline, mnist):
    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:200], mnist["y_test"][:200]
    target = KNNDefended(ae, clf, bank).eval()
    cfg = PGDConfig(eps=0.2, alpha=0.02, steps=20)   # an eps where the attacks leave about 60% (measured)
    assert correct_flags(target, x, y).float().mean() > 0.9
    # (1) non-adaptive: crafted on AE + classifier without kNN, then classified with kNN
    x_adv = pgd(Defended(ae, clf).eval(), x, y, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                generator=torch.Generator().manual_seed(0))
    non_adaptive = correct_flags(target, x_adv, y).float().mean().item()
    # (2) adaptive: PGD with the straight-through gradient, scored on the true pipeline
    straight = KNNDefended(ae, clf, bank, bpda=True).eval()
    x_bpda = pgd(straight, x, y, eps=cfg.eps, alpha=cfg.alpha, steps=cfg.steps,
                 generator=torch.Generator().manual_seed(0))
    adaptive = correct_flags(target, x_bpda, y).float().mean().item()
    assert adaptive <= non_adaptive + 0.02 and adaptive < 0.8
    # a plain gradient attack is blind: no step moves it beyond its random start; put in BPDA's place it
    # would fail the comparison above (the check can fail)
    plain = robust_flags(target, x, y, cfg, record_at=[0])
    assert torch.equal(plain[0], plain[cfg.steps])
    assert plain[cfg.steps].float().mean().item() > non_adaptive + 0.02


def test_the_protocol_scores_knn_and_the_plain_ae_on_the_very_same_adversarial_examples(knn_pipeline, mnist,
                                                                                          monkeypatch):
    import aaa_core.evaluation.knn as knn_module
    from aaa_core.evaluation.knn import knn_protocol

    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:40], mnist["y_test"][:40]
    seen = []
    real = knn_module.correct_flags

    def spy(model, inputs, labels):    # every scoring call: which model, on which inputs
        seen.append((type(model).__name__, inputs.clone()))
        return real(model, inputs, labels)

    monkeypatch.setattr(knn_module, "correct_flags", spy)
    # no APGD here (its plain-AE runs score the plain AE too: test_the_plain_ae_gets_the_same_attacks_...)
    report = knn_protocol(ae, clf, bank, x, y, eps=0.3, alpha=0.05, steps=[3, 6], bpda_tolerance=1.0, seed=0,
                          apgd_restarts=0)
    scored = {}
    for name, inputs in seen:
        scored.setdefault(name, []).append(inputs)
    # the plain AE is scored 3 times (clean images, each step count's adversarial examples), and each of
    # those tensors is one the kNN pipeline was scored on too
    assert len(scored["Defended"]) == 3
    for plain_inputs in scored["Defended"]:
        assert any(torch.equal(plain_inputs, knn_inputs) for knn_inputs in scored["KNNDefended"])
    assert not torch.equal(scored["Defended"][0], x)   # adversarial examples first, and they moved
    acc = report.robust_accuracy()
    assert set(acc) == {"non_adaptive", "bpda", "worst_case", "plain_ae_same_examples"}
    for k in ("pgd3", "pgd6"):   # the worst case never exceeds either of its attacks
        assert acc["worst_case"][k] <= min(acc["non_adaptive"][k], acc["bpda"][k]) + 1e-9



class RoundingIdentityAE(torch.nn.Module):
    """A planted masked gradient: the "latent" is the image rounded to 16 grey levels (zero gradient), the
    decoder the identity; kNN on it is kNN on pixels, accurate on MNIST."""

    def encode(self, x):
        return torch.round(x * 15) / 15

    def decode(self, z):
        return z

    def forward(self, x):
        return self.decode(self.encode(x))


def test_square_in_the_knn_worst_case_sees_what_a_masked_gradient_hides(mnist, trained_fc):
    """Both gradient attacks (non-adaptive and BPDA) get a zero gradient through the rounding and find almost
    nothing; Square queries the true kNN pipeline and fools more, the worst case includes it, and
    ``square_only`` counts what only Square fooled. Without a query budget there is no Square entry."""
    from aaa_core.evaluation.knn import knn_protocol

    ae = RoundingIdentityAE().eval()
    bank = LatentBank(encode_all(ae, mnist["x_train"]), k=10)
    x, y = mnist["x_test"][:40], mnist["y_test"][:40]
    report = knn_protocol(ae, trained_fc, bank, x, y, eps=0.3, alpha=0.075, steps=[3, 6], bpda_tolerance=1.0,
                          seed=0, square_queries=200)
    acc = report.robust_accuracy()
    assert set(acc) == {"non_adaptive", "bpda", "worst_case", "plain_ae_same_examples", "square"}
    square = acc["square"]["queries200"]
    assert report.natural.float().mean() > 0.9 and acc["bpda"]["pgd6"] > 0.85   # the mask works on gradients
    assert report.square_only()["pgd6"] >= 5 and square < acc["bpda"]["pgd6"] - 0.1
    for k in ("pgd3", "pgd6"):
        assert acc["worst_case"][k] <= min(acc["non_adaptive"][k], acc["bpda"][k], square) + 1e-9
    plain = knn_protocol(ae, trained_fc, bank, x[:8], y[:8], eps=0.3, alpha=0.075, steps=[3], bpda_tolerance=1.0,
                         seed=0)
    assert "square" not in plain.robust_accuracy() and plain.square_only() == {}


class Recorder(torch.nn.Module):
    """A model that keeps a copy of every input it is called on (which points an attack queried)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def test_apgd_through_the_straight_through_gradient_lowers_knn_accuracy(knn_pipeline, mnist):
    """APGD-CE on the BPDA pipeline, scored on the true one, takes a 98% accurate pipeline to about 60% (measured);
    the same APGD on the true pipeline (zero gradient) moves nowhere beyond its random start (about 97%)."""
    from aaa_core.evaluation.knn import apgd_with_restarts

    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:60], mnist["y_test"][:60]
    target = KNNDefended(ae, clf, bank).eval()
    straight = KNNDefended(ae, clf, bank, bpda=True).eval()
    natural = correct_flags(target, x, y).float().mean().item()
    run = apgd_with_restarts(straight, target, x, y, eps=0.2, steps=20, restarts=1, stage_seed=0, name="knn-apgd")
    blind = apgd_with_restarts(target, target, x, y, eps=0.2, steps=20, restarts=1, stage_seed=0, name="knn-apgd")
    acc, blind_acc = run.flags["all"].float().mean().item(), blind.flags["all"].float().mean().item()
    assert natural > 0.9 and acc < natural - 0.3 and blind_acc > acc + 0.2
    assert run.flags["all"].dtype == torch.bool and run.flags["all"].shape == (60,)


def test_every_apgd_restart_has_its_own_seed_and_starts_from_its_own_point(knn_pipeline, mnist):
    from aaa_core.evaluation.knn import apgd_with_restarts, library_attack_flags, square_attack
    from aaa_core.runtime import attack_seed

    ae, clf, bank = knn_pipeline
    target = KNNDefended(ae, clf, bank).eval()
    x, y = mnist["x_test"][:30], mnist["y_test"][:30]
    keep = correct_flags(target, x, y)
    x, y = x[keep][:8], y[keep][:8]     # APGD attacks only what it classifies correctly: here all of them
    recorder = Recorder(KNNDefended(ae, clf, bank, bpda=True).eval())
    run = apgd_with_restarts(recorder, target, x, y, eps=0.2, steps=3, restarts=3, stage_seed=0, name="knn-apgd")
    seeds = [r.seeds for r in run.restarts]
    assert seeds == [[attack_seed(0, f"knn-apgd-r{i}")] for i in range(3)] and len({s for s, in seeds}) == 3
    assert run.seeds == [s for s, in seeds]
    # each restart first classifies the clean images, then queries its random start
    starts = [recorder.inputs[i + 1] for i, seen in enumerate(recorder.inputs[:-1]) if torch.equal(seen, x)]
    assert len(starts) == 3
    for i in range(3):
        assert 0 < (starts[i] - x).abs().max() <= 0.2 + 1e-6
        for j in range(i):   # every example starts elsewhere in every restart
            assert ((starts[i] - starts[j]).flatten(1).abs().amax(1) > 0).all()
    assert torch.equal(run.flags["all"], run.restarts[0].flags["all"] & run.restarts[1].flags["all"]
                       & run.restarts[2].flags["all"])
    # beyond the first batch, every batch has its own seed too
    _, batch_seeds = library_attack_flags(target, square_attack(target, 0.2, 5), x, y, eps=0.2, stage_seed=0,
                                          name="knn-square", batch_size=3)
    assert batch_seeds == [attack_seed(0, "knn-square"), attack_seed(0, "knn-square/batch1"),
                           attack_seed(0, "knn-square/batch2")]


def test_library_outputs_outside_the_ball_are_refused(knn_pipeline, mnist):
    from aaa_core.evaluation.knn import library_attack_flags

    ae, clf, bank = knn_pipeline
    target = KNNDefended(ae, clf, bank).eval()
    x, y = mnist["x_test"][:4], mnist["y_test"][:4]
    with pytest.raises(ValueError, match="outside the L-inf ball"):
        library_attack_flags(target, lambda seed: lambda xb, yb: (xb + 0.25).clamp(0, 1), x, y, eps=0.2,
                             stage_seed=0, name="planted")


def planted_attacks(monkeypatch, x: torch.Tensor, fooled: dict[str, int]) -> None:
    """Make every attack of ``knn_protocol`` on the clean images ``x`` fool exactly one planted example
    (``fooled``: seed name -> example index; "knn-non-adaptive" on the kNN pipeline and
    "plain-same-examples" on the plain AE for the non-adaptive PGD's examples, which still runs for real)."""
    import aaa_core.evaluation.knn as knn_module
    from aaa_core.runtime import attack_seed

    names = {attack_seed(0, name): name for name in fooled}

    def flags(name):
        f = torch.ones(len(x), dtype=torch.bool)
        f[fooled[name]] = False
        return f

    def fake_correct_flags(model, inputs, labels):
        if torch.equal(inputs, x):
            return torch.ones(len(x), dtype=torch.bool)   # the clean images: all correct
        return flags("knn-non-adaptive" if isinstance(model, KNNDefended) else "plain-same-examples")

    def fake_robust_flags(model, xs, ys, cfg, *, record_at=(), seed=0):
        return {k: flags(names[seed]) for k in {*record_at, cfg.steps}}

    def fake_library(scorer, make_attack, xs, ys, *, eps, stage_seed, name, batch_size=256):
        return flags(name), [attack_seed(stage_seed, name)]

    monkeypatch.setattr(knn_module, "correct_flags", fake_correct_flags)
    monkeypatch.setattr(knn_module, "robust_flags", fake_robust_flags)
    monkeypatch.setattr(knn_module, "library_attack_flags", fake_library)


def planted_report(knn_pipeline, mnist, monkeypatch):
    """``knn_protocol`` on 12 images, steps [2, 4], 2 APGD restarts, Square, every attack planted: kNN's
    attacks fool examples 8, 0, 1, 2, 3 (non-adaptive, BPDA, APGD restarts, Square), the plain AE's 9, 4, 5, 6, 7."""
    from aaa_core.evaluation.knn import knn_protocol

    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:12], mnist["y_test"][:12]
    fooled = {"knn-non-adaptive": 8, "knn-bpda": 0, "knn-apgd-r0": 1, "knn-apgd-r1": 2, "knn-square": 3,
              "plain-same-examples": 9, "knn-plain-pgd": 4, "knn-plain-apgd-r0": 5, "knn-plain-apgd-r1": 6,
              "knn-plain-square": 7}
    planted_attacks(monkeypatch, x, fooled)
    return knn_protocol(ae, clf, bank, x, y, eps=0.2, alpha=0.05, steps=[2, 4], bpda_tolerance=1.0, seed=0,
                        square_queries=10, apgd_restarts=2)


def test_the_worst_case_is_the_per_example_and_of_every_attack(knn_pipeline, mnist, monkeypatch):
    """Each attack (and each APGD restart) fools its own planted example, so the AND differs from every single
    attack: a worst case taken as a mean, as the last attack, from the first restart only or without any one
    attack fails here."""
    from aaa_core.stats import encode_flags

    report = planted_report(knn_pipeline, mnist, monkeypatch)
    for pipeline, planted in (("knn", [8, 0, 1, 2, 3]), ("plain_ae", [9, 4, 5, 6, 7])):
        runs = report.runs[pipeline]
        single = [r.at(k) for r in runs.values() if not r.restarts for k in (2, 4)] + \
            [s.flags["all"] for r in runs.values() for s in r.restarts]
        assert len(single) == 3 * 2 + 2 and all(int((~f).sum()) == 1 for f in single)   # the planted attacks ran
        apgd = runs["apgd_bpda" if pipeline == "knn" else "apgd"]
        assert torch.equal(apgd.flags["all"], apgd.restarts[0].flags["all"] & apgd.restarts[1].flags["all"])
        expected = torch.ones(12, dtype=torch.bool)
        expected[planted] = False
        for k in (2, 4):
            worst = report.worst[pipeline][k]
            assert worst.dtype == torch.bool and torch.equal(worst, expected)
            assert report.worst_case()[pipeline][f"pgd{k}"] == {"accuracy": expected.float().mean().item(),
                                                                 "flags": encode_flags(expected)}
    for k in (2, 4):   # the layout the tables read
        assert torch.equal(report.flags["worst_case"][k], report.worst["knn"][k])
        assert report.robust_accuracy()["worst_case"][f"pgd{k}"] == pytest.approx(7 / 12)
    assert report.worst_case()["attacks"] == {"knn": ["non_adaptive", "bpda", "apgd_bpda", "square"],
                                              "plain_ae": ["pgd_same_examples", "pgd", "apgd", "square"]}


def test_the_plain_ae_gets_the_same_attacks_on_the_same_examples(knn_pipeline, mnist, monkeypatch):
    """Every attack on AE + kNN has its plain-AE twin: the same kind, settings and images, its own seed, the
    plain AE attacked and scored; the paired test compares the two worst cases example by example."""
    import aaa_core.evaluation.knn as knn_module
    from aaa_core.evaluation.knn import knn_protocol
    from aaa_core.runtime import attack_seed
    from aaa_core.stats import encode_flags
    from aaa_core.stats import mcnemar

    ae, clf, bank = knn_pipeline
    x, y = mnist["x_test"][:12], mnist["y_test"][:12]
    calls = {}
    real_library, real_robust = knn_module.library_attack_flags, knn_module.robust_flags

    def spy_library(scorer, make_attack, xs, ys, *, eps, stage_seed, name, batch_size=256):
        def spying(seed):
            attack = make_attack(seed)
            calls[name] = {"scorer": scorer, "x": xs, "y": ys, "attack": attack, "seed": seed}
            return attack
        return real_library(scorer, spying, xs, ys, eps=eps, stage_seed=stage_seed, name=name, batch_size=batch_size)

    def spy_robust(model, xs, ys, cfg, *, record_at=(), seed=0):
        calls[seed] = {"model": model, "x": xs, "cfg": cfg, "record_at": sorted(record_at)}
        return real_robust(model, xs, ys, cfg, record_at=record_at, seed=seed)

    monkeypatch.setattr(knn_module, "library_attack_flags", spy_library)
    monkeypatch.setattr(knn_module, "robust_flags", spy_robust)
    report = knn_protocol(ae, clf, bank, x, y, eps=0.2, alpha=0.05, steps=[2, 4], bpda_tolerance=1.0, seed=0,
                          square_queries=15, apgd_restarts=2)
    settings = ("eps", "steps", "n_restarts", "loss", "n_queries", "p_init", "norm")
    for knn_name, plain_name in (("knn-apgd-r0", "knn-plain-apgd-r0"), ("knn-apgd-r1", "knn-plain-apgd-r1"),
                                 ("knn-square", "knn-plain-square")):
        on_knn, on_plain = calls[knn_name], calls[plain_name]
        assert torch.equal(on_knn["x"], x) and torch.equal(on_plain["x"], x) and torch.equal(on_plain["y"], y)
        assert type(on_knn["attack"]) is type(on_plain["attack"])
        assert all(getattr(on_knn["attack"], s, None) == getattr(on_plain["attack"], s, None) for s in settings)
        assert on_knn["seed"] != on_plain["seed"]
        assert type(on_knn["scorer"]) is KNNDefended and not on_knn["scorer"].bpda   # scored on the true kNN
        assert type(on_plain["scorer"]) is Defended and type(on_plain["attack"].model) is Defended
    assert calls["knn-apgd-r0"]["attack"].model.bpda and calls["knn-apgd-r0"]["attack"].steps == 4
    assert calls["knn-square"]["attack"].n_queries == 15
    bpda, own = calls[attack_seed(0, "knn-bpda")], calls[attack_seed(0, "knn-plain-pgd")]
    assert bpda["model"].bpda and type(own["model"]) is Defended
    assert bpda["cfg"] == own["cfg"] and bpda["record_at"] == own["record_at"] and torch.equal(own["x"], x)
    assert set(report.runs["plain_ae"]) == {"pgd_same_examples", "pgd", "apgd", "square"}
    assert set(report.runs["knn"]) == {"non_adaptive", "bpda", "apgd_bpda", "square"}
    assert all(f.shape == (12,) for runs in report.runs.values() for r in runs.values() for f in r.flags.values())
    seeds = [s for by_name in report.seeds().values() for s in by_name]
    # non-adaptive (one run, scored on both), BPDA, plain PGD, 2 + 2 APGD restarts, 2 Square: none repeats
    assert len(seeds) == len(set(seeds)) == 9
    for k in (2, 4):
        counts = mcnemar(encode_flags(report.worst["knn"][k]), encode_flags(report.worst["plain_ae"][k]))
        paired = report.paired_worst_case()[f"pgd{k}"]
        assert (paired["knn_only"], paired["plain_ae_only"], paired["both"], paired["neither"]) == \
            (counts.first_only, counts.second_only, counts.both, counts.neither)
        assert paired["p_value"] == counts.p_value and sum(paired[c] for c in
                                                           ("knn_only", "plain_ae_only", "both", "neither")) == 12


def test_the_tables_compare_the_two_worst_cases_and_show_apgd(knn_pipeline, mnist, monkeypatch):
    """The stage's metrics of a planted report render: the kNN table shows APGD-BPDA, and the verdict pairs
    kNN's worst case (fooled: 8, 0, 1, 2, 3) with the plain AE's (9, 4, 5, 6, 7), 5 vs 5 discordant, not with
    the plain AE under PGD alone (9 only: 1 vs 5)."""
    import json

    from aaa_core.reporting.tables import knn_table, knn_versus_plain
    from stages.knn_eval import report_metrics
    from stages.render_tables import knn_square_caption

    report = planted_report(knn_pipeline, mnist, monkeypatch)
    m = json.loads(json.dumps(report_metrics(report)))   # what the metrics file holds
    m.update(pipeline={"ae_loss": "ce_mse", "classifier_arch": "fc", "ae": "models/ae_ce_mse.pt",
                       "classifier": "models/fc.pt", "classifier_mode": "natural", "classifier_kwargs": {}},
             attack={"examples": 12, "square": {"queries": 10, "p_init": 0.8, "library": "torchattacks"},
                     "apgd_bpda": report.runs["knn"]["apgd_bpda"].settings})
    assert m["paired_worst_case"]["pgd4"] == {**m["paired_worst_case"]["pgd4"], "knn_only": 5, "plain_ae_only": 5,
                                              "both": 2, "neither": 0, "p_value": 1.0}
    table = knn_table([m], {}, "ce_mse", "fc", [2, 4])
    assert list(table["APGD-CE-4 BPDA x2 (ours)"])[0].startswith("83.33")   # examples 1 and 2 of 12 fooled
    versus = knn_versus_plain([m], "ce_mse", "fc", [2, 4])
    assert list(versus["PGD-4, plain AE, worst case"])[0].startswith("58.33")
    assert list(versus["PGD-4 verdict"]) == ["inconclusive (p = 1; 5 vs 5 discordant)"]
    assert "APGD-CE (4 steps, 2 restarts" in knn_square_caption([m])
