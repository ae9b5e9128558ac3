"""``aaa``: AAA for your own classifier and data, from the command line.

    aaa fit --classifier my_models:net --weights net.pt --dataset folder:images/ --eps 0.03 --out ae.pt
    aaa fit --classifier my_models:net --dataset mnist --access query --out ae_query.pt
    aaa evaluate --classifier my_models:net --weights net.pt --ae ae.pt --dataset folder:images/ --metrics m.json

``--device`` is auto (the CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N; the metrics record
which ran. ``--dataset`` is mnist, fashion_mnist or cifar10 (the prepared file ``data/<dataset>/<dataset>.pt`` that
``dvc repro prepare_data@<dataset>`` writes, or ``--data``), or ``folder:PATH``, an image-folder tree of
your own. Defaults for the threat and the budget come from params.yaml's sections of a named dataset (at
its ``scale``); a folder dataset needs ``--eps`` and takes the defaults shown by ``--help``.
"""
from __future__ import annotations

import dataclasses
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import click
import torch
import yaml

from aaa_core import INPUT_SHAPES
from aaa_core.attacks import PGDConfig
from aaa_core.config import AE_LOSSES
from aaa_core.errors import AAAError
from aaa_core.stats import percent_with_interval, wilson_interval

ACCESS = ("gradient", "query")
FOLDER = "folder:"
# budget defaults for a folder dataset (a named dataset takes params.yaml's)
FOLDER_DEFAULTS = {"epochs": 1, "epoch_images": 0, "steps": 10, "eps_ramp": 0, "batch_size": 64, "lr": 0.002,
                   "val_fraction": 0.1, "eval_steps": [40], "subset": 200}


def _params(path: Path | None):
    from aaa_core.config import load_params

    if path is None:
        path = Path("params.yaml")
        if not path.is_file():
            return None
    return load_params(path)


def _blackbox_defaults(params_path: Path | None, dataset: str, scale: str):
    """blackbox.yaml (beside params.yaml) for the query-only defaults of a named dataset, or None."""
    from aaa_core.config import load_blackbox
    from aaa_core.models import zoo_classifiers

    path = (params_path or Path("params.yaml")).with_name("blackbox.yaml")
    if not path.is_file():
        return None
    raw = yaml.safe_load(path.read_text()) or {}
    return load_blackbox(path, dataset, scale, zoo_classifiers(dataset)) if dataset in raw else None


def _dataset(name: str, data: Path | None, seed: int, device: torch.device) -> dict:
    """The dataset with its images and labels resident on ``device``."""
    from aaa_core.data import load_prepared
    from aaa_core.data.folders import load_folder_dataset

    if name.startswith(FOLDER):
        folder = load_folder_dataset(name[len(FOLDER):], seed=seed)
        return {**folder, **{k: folder[k].to(device) for k in ("x_train", "y_train", "x_test", "y_test")}}
    if name not in INPUT_SHAPES:
        raise click.BadParameter(f"{name!r}: expected one of {', '.join(INPUT_SHAPES)} or folder:PATH",
                                 param_hint="--dataset")
    path = data or Path("data") / name / f"{name}.pt"
    if not path.is_file():
        raise AAAError(f"{path}: missing; run `dvc repro prepare_data@{name}` first, or pass --data")
    return load_prepared(path, device)


def _device(name: str) -> torch.device:
    """``--device`` as a torch device; on CUDA, convolutions and matrix products in exact float32 (no TF32):
    the attacks' numbers must not depend on the GPU's reduced-precision modes."""
    from aaa_core.runtime import DeviceError, resolve_device

    try:
        device = resolve_device(name)
    except DeviceError as err:
        raise click.BadParameter(str(err).removeprefix("params: "), param_hint="--device") from None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


def _pick(value, default):
    return default if value is None else value


def _environment(device: torch.device, bf16_training: bool | None = None) -> dict:
    """Where and how the command ran: the device and its name, precision, torch and CUDA versions, the command."""
    from aaa_core.runtime import describe_runtime

    return {**describe_runtime(device, bf16_training=bf16_training),
            "cudnn_tf32": bool(torch.backends.cudnn.allow_tf32) if device.type == "cuda" else None,
            "python": platform.python_version(), "command": " ".join(sys.argv)}


class _Main(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AAAError as err:
            raise click.ClickException(" ".join(str(err).split())) from None


@click.group(cls=_Main)
@click.version_option(package_name="aaa")
def main() -> None:
    """AAA (adversarially trained autoencoder augmentation) for your own classifier and data."""


def _common(f):
    options = [
        click.option("--classifier", "classifier_spec", required=True,
                     help="MODULE:FACTORY: a callable returning an nn.Module from [0, 1] images to logits "
                          "(the current directory is importable)."),
        click.option("--weights", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="The classifier's state dict (loaded with weights_only=True)."),
        click.option("--dataset", required=True, help="mnist, fashion_mnist, cifar10, or folder:PATH."),
        click.option("--data", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="A prepared dataset file for a named dataset (default data/<dataset>/<dataset>.pt)."),
        click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="params.yaml to take defaults from (default: ./params.yaml if present)."),
        click.option("--eps", type=float, default=None, help="L-inf radius, pixels in [0, 1] (params: threat)."),
        click.option("--seed", type=int, default=None, help="(params: seed; 0 without params)"),
        click.option("--device", "device_name", default="auto", show_default=True,
                     help="auto (the CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _setup(classifier_spec, weights, dataset, data, params_path, eps, seed, device_name):
    from aaa_core.evaluation.flags import predictions
    from aaa_core.models.external import check_classifier, load_classifier
    from aaa_core.runtime import seed_everything

    params = _params(params_path)
    named = not dataset.startswith(FOLDER)
    if named and params is None:
        raise AAAError("a named dataset takes its defaults from params.yaml: run in the repository or pass --params")
    seed = _pick(seed, params.seed if params else 0)
    device = _device(device_name)
    seed_everything(seed)
    data_ = _dataset(dataset, data, seed, device)
    shape = tuple(data_["x_train"].shape[1:])
    classes = len(data_["classes"]) if "classes" in data_ else int(max(data_["y_train"].max(), data_["y_test"].max())) + 1
    classifier = load_classifier(classifier_spec, weights).to(device)
    check_classifier(classifier, shape, classes, f"--classifier {classifier_spec}")
    bare = (predictions(classifier, data_["x_test"]) == data_["y_test"]).float().mean().item()
    click.echo(f"the classifier alone: {bare:.2%} natural accuracy on {len(data_['x_test'])} test images", err=True)
    if bare < 1.5 / classes:
        click.echo(f"WARNING: that is near chance ({1 / classes:.0%}): are its weights loaded, and do its outputs "
                   f"follow the class order {data_.get('classes', 'of the dataset')}?", err=True)
    data_["classifier_natural_accuracy"], data_["n_classes"] = bare, classes
    if eps is None:
        if not named:
            raise click.BadParameter("a folder dataset needs --eps (e.g. 0.0313725490 for 8/255)", param_hint="--eps")
        eps = params.attack(dataset).eps
    if not 0 < eps <= 1:
        raise click.BadParameter(f"{eps} is out of range: expected in (0, 1]", param_hint="--eps")
    return params, named, seed, data_, shape, classifier, eps, device


def _query_access(ae, blackbox, classifier_spec, surrogate_spec, defaults, dataset, named, params, x, x_val,
                  surrogate_cfg, attack, *, estimate_images, directions, smoothing, weight):
    """What query-only training needs: (module trained, classifier slot, training attack, description).

    The training attack runs through the AE and a surrogate distilled from the black box's scores (one query per
    training and validation image; ``--surrogate``, else the dataset zoo's blackbox.yaml surrogate, else a fresh
    instance of ``--classifier``'s factory). ``weight`` 1 (the default) trains the AE white-box against the
    surrogate, the best query-only way on the validation split (benchmarks/query_only_pilot.py; scored on the test
    set in reports/blackbox_mnist.md). Below 1 the AE's
    update is the black box's loss with a gradient ``weight`` times the surrogate's plus the rest times a
    zeroth-order estimate (``SurrogateBlend``), taken in the AE's latent (``ThroughLatent``, coordinate-wise)
    where the AE has one smaller than the image, else in pixel space (``ZeroOrder``, random directions); the
    estimator benchmark (benchmarks/zo_estimator.py) is why.
    """
    from aaa_core.models import build
    from aaa_core.models.external import load_classifier
    from aaa_core.training.query_only import (LatentAE, LatentZeroOrder, SurrogateBlend, ThroughLatent, ZeroOrder,
                                              train_surrogate, transferred)

    if surrogate_spec is not None:
        fresh, where = load_classifier(surrogate_spec).train(), f"--surrogate {surrogate_spec}"
    elif named and defaults["surrogate"]:
        kwargs = params.section("models", dataset).get(defaults["surrogate"], {})
        fresh, where = build(dataset, defaults["surrogate"], **kwargs), f"{defaults['surrogate']} (blackbox.yaml)"
    else:
        fresh, where = load_classifier(classifier_spec).train(), f"a fresh {classifier_spec}"
    known, mine = blackbox.model.state_dict(), fresh.state_dict()
    if fresh is blackbox.model or (mine.keys() == known.keys() and all(torch.equal(a.cpu(), known[k].cpu())
                                                                       for k, a in mine.items())):
        raise click.BadParameter(f"{where} gives the classifier's own weights, so it cannot be the surrogate of a "
                                 "classifier that may only be queried: pass --surrogate MODULE:FACTORY returning "
                                 "untrained weights", param_hint="--surrogate")
    surrogate, info = train_surrogate(blackbox, fresh.to(x.device), x, x_val, surrogate_cfg,
                                      log=lambda line: click.echo(line, err=True))
    described = {"surrogate": where, "surrogate_fit": info["fit"], "surrogate_queries": info["queries"],
                 "surrogate_weight": weight}
    if weight == 1:
        if estimate_images is not None or directions is not None or smoothing is not None:
            raise click.BadParameter("1 trains white-box against the surrogate and takes no zeroth-order estimate: "
                                     "--estimate-images, --directions and --smoothing need a weight below 1",
                                     param_hint="--surrogate-weight")
        return ae, surrogate, attack, {**described, "estimate": "none: white-box against the surrogate"}
    with torch.no_grad():
        latent = ae.encode(x[:1]).numel() if hasattr(ae, "encode") and hasattr(ae, "decode") else None
    if latent is not None and latent < x[0].numel():
        if directions is not None:
            raise click.BadParameter("the AE's latent is smaller than the image, so the estimate is coordinate-wise in "
                                     "the latent: directions are not used", param_hint="--directions")
        mu = _pick(smoothing, defaults["smoothing"] or 0.01)
        k = _pick(estimate_images, defaults["estimate_images"])
        target = ThroughLatent(LatentZeroOrder(ae.decoder, blackbox, estimator="cge", smoothing=mu), estimate_images=k)
        return LatentAE(ae), SurrogateBlend(target, surrogate, weight), transferred(attack, surrogate), {
            **described, "estimate": f"latent, coordinate-wise ({latent} queries per estimated image)",
            "estimate_images": k, "smoothing": mu}
    if estimate_images is not None:
        raise click.BadParameter(f"the AE's latent ({latent} values) is not smaller than the image, so the estimate "
                                 "is taken in pixel space for every image (--directions sets its cost)",
                                 param_hint="--estimate-images")
    q, mu = _pick(directions, 20), _pick(smoothing, 0.005)
    target = SurrogateBlend(ZeroOrder(blackbox, directions=q, smoothing=mu), surrogate, weight)
    return ae, target, transferred(attack, surrogate), {
        **described, "estimate": f"pixel, {q} random directions (the AE has no latent smaller than the image)",
        "smoothing": mu, "directions": q}


@main.command()
@_common
@click.option("--loss", type=click.Choice(AE_LOSSES), default=None, help="(params: loss)")
@click.option("--mse-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="ce_mse only: L = ce + W * mse (params: ae.<dataset>.mse_weight; folder: 10; the paper's is 1, "
                   "where the MSE term is about 1% of the loss: reports/ablations_mnist.md)")
@click.option("--access", type=click.Choice(ACCESS), default="gradient", show_default=True,
              help="gradient: white-box AAA; query: the classifier is only queried: a surrogate is distilled from its "
                   "scores, and the AE trains against the surrogate (see --surrogate-weight).")
@click.option("--epochs", type=click.IntRange(1), default=None, help="(params: adversarial; folder: 1)")
@click.option("--epoch-images", type=click.IntRange(0), default=None, help="images per epoch, 0 = all")
@click.option("--steps", type=click.IntRange(1), default=None, help="PGD steps of the training attack (folder: 10)")
@click.option("--alpha", type=float, default=None, help="PGD step of the training attack (folder: eps / 4)")
@click.option("--eps-ramp", type=click.IntRange(0), default=None, help="iterations over which eps grows from 0")
@click.option("--batch-size", type=click.IntRange(1), default=None)
@click.option("--lr", type=float, default=None)
@click.option("--estimate-images", type=click.IntRange(1), default=None,
              help="query access: images per batch whose cross-entropy gradient is estimated from queries in the AE's "
                   "update (params: blackbox; folder: 8)")
@click.option("--directions", type=click.IntRange(1), default=None,
              help="query access, an AE without a latent smaller than the image: random directions of the pixel-space "
                   "estimate (folder: 20)")
@click.option("--smoothing", type=float, default=None,
              help="query access: finite-difference step (params: blackbox; folder: 0.01 latent, 0.005 pixel)")
@click.option("--surrogate-weight", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="query access: 1 trains white-box against the surrogate (the best way on the validation split); below "
                   "1 the update's gradient is this much the surrogate's exact one, the rest a zeroth-order estimate")
@click.option("--surrogate", "surrogate_spec", default=None,
              help="query access: MODULE:FACTORY of the surrogate distilled from the classifier's scores, through "
                   "which the training attack runs (default: the dataset zoo's blackbox.yaml surrogate, or a fresh --classifier)")
@click.option("--output", "bb_output", type=click.Choice(["logits", "probs"]), default=None,
              help="query access: what the classifier returns (default logits)")
@click.option("--warm-epochs", type=click.IntRange(0), default=None,
              help="epochs of clean reconstruction before adversarial training (params: ae.<dataset>.warm_epochs, "
                   "query access: blackbox; folder: 1)")
@click.option("--val-size", type=click.IntRange(1), default=None,
              help="training images held out for validation (params: split; folder: 10%, at most 1000)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The AE checkpoint.")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Training metrics JSON (default: OUT with .json).")
def fit(classifier_spec, weights, dataset, data, params_path, eps, seed, device_name, loss, mse_weight, access, epochs,
        epoch_images, steps, alpha, eps_ramp, batch_size, lr, estimate_images, directions, smoothing, surrogate_weight,
        surrogate_spec, bb_output, warm_epochs, val_size, out, metrics_path):
    """Train an AE in front of your frozen classifier (AAA)."""
    from aaa_core.data import split_train_val
    from aaa_core.evaluation.flags import correct_flags
    from aaa_core.io import write_json
    from aaa_core.models import Defended, ae_kwargs
    from aaa_core.models.generic import build_ae, save_ae
    from aaa_core.training.loops import (
        TrainConfig,
        pretrain_ae,
        train_ae,
        training_attack,
    )
    from aaa_core.training.losses import get_loss
    from aaa_core.training.query_only import QueryOnly

    start = time.perf_counter()
    params, named, seed, data_, shape, classifier, eps, device = _setup(classifier_spec, weights, dataset, data,
                                                                        params_path, eps, seed, device_name)
    if named:
        adv, train, split = (params.section(s, dataset) for s in ("adversarial", "train", "split"))
        bb = _blackbox_defaults(params_path, dataset, params.scale)
        defaults = {"epochs": adv.epochs, "epoch_images": adv.epoch_images, "steps": adv.steps, "alpha": adv.alpha,
                    "eps_ramp": adv.eps_ramp, "batch_size": train.batch_size, "lr": train.lr, "loss": params.loss,
                    "lr_patience": train.lr_patience, "bf16": train.bf16, "augment": train.augment,
                    "estimate_images": bb.estimate_images if bb else 8, "smoothing": bb.smoothing if bb else None,
                    "output": bb.output if bb else "logits", "surrogate": bb.surrogate if bb else None,
                    "surrogate_epochs": params.section("classifier", dataset).epochs,
                    "warm_epochs": bb.warm_epochs if bb and access == "query" else params.section("ae", dataset).warm_epochs,
                    "mse_weight": params.section("ae", dataset).mse_weight}
        default_val, where = split.val_size, f"params split.{dataset}.val_size"
        zoo_kwargs = ae_kwargs(dataset, params.section("ae", dataset))
    else:
        defaults = {**FOLDER_DEFAULTS, "alpha": eps / 4, "loss": "ce_mse", "estimate_images": 8, "smoothing": None,
                    "output": "logits", "surrogate": None, "surrogate_epochs": FOLDER_DEFAULTS["epochs"],
                    "lr_patience": 5, "bf16": False, "augment": False,
                    "warm_epochs": 1, "mse_weight": 10.0}   # the study's measured defaults (ablations)
        n = len(data_["x_train"])
        default_val, where, zoo_kwargs = max(1, min(1000, round(FOLDER_DEFAULTS["val_fraction"] * n))), "10%", None
    loss = _pick(loss, defaults["loss"])
    if mse_weight is not None and loss != "ce_mse":   # given explicitly for another loss
        raise click.BadParameter(f"weighs the MSE term of the ce_mse loss; this run's loss is {loss}",
                                 param_hint="--mse-weight")
    cfg = TrainConfig(epochs=_pick(epochs, defaults["epochs"]), batch_size=_pick(batch_size, defaults["batch_size"]),
                      lr=_pick(lr, defaults["lr"]), lr_patience=defaults["lr_patience"], seed=seed,
                      epoch_images=_pick(epoch_images, defaults["epoch_images"]),
                      eps_ramp=_pick(eps_ramp, defaults["eps_ramp"]), bf16=defaults["bf16"],
                      augment=defaults["augment"])
    attack_cfg = PGDConfig(eps=eps, alpha=_pick(alpha, defaults["alpha"]), steps=_pick(steps, defaults["steps"]))
    val_size = _pick(val_size, default_val)
    if val_size >= len(data_["x_train"]):
        raise click.BadParameter(f"{val_size} validation images ({where if val_size == default_val else 'given'}) "
                                 f"leave none of the {len(data_['x_train'])} training images", param_hint="--val-size")
    (x, y), (x_val, y_val) = split_train_val(data_["x_train"], data_["y_train"], subset=0, val_size=val_size, seed=seed)
    if cfg.epoch_images > len(x):
        raise click.BadParameter(f"{cfg.epoch_images} is more than the {len(x)} training images",
                                 param_hint="--epoch-images")
    ae, arch, arch_kwargs = build_ae(dataset, shape, zoo_kwargs)
    ae = ae.to(device)
    trained, target, attack, blackbox, query_info = ae, classifier, training_attack(attack_cfg), None, {}
    if access == "query":
        blackbox = QueryOnly(classifier, output=bb_output or defaults["output"])
        surrogate_cfg = dataclasses.replace(cfg, epochs=defaults["surrogate_epochs"], epoch_images=0, eps_ramp=0)
        trained, target, attack, query_info = _query_access(
            ae, blackbox, classifier_spec, surrogate_spec, defaults, dataset, named, params, x, x_val, surrogate_cfg,
            attack, estimate_images=estimate_images, directions=directions,
            smoothing=smoothing, weight=surrogate_weight)
    click.echo(f"{dataset}: {len(x)} training images {shape} on {device}, AE {arch}, loss {loss}, access {access}, "
               f"eps {eps}, PGD-{attack_cfg.steps} step {attack_cfg.alpha:g}, {cfg.epochs} epoch(s)", err=True)
    warm_epochs = _pick(warm_epochs, defaults["warm_epochs"])
    warm = pretrain_ae(ae, x, x_val, dataclasses.replace(cfg, epochs=warm_epochs, eps_ramp=0),
                       log=lambda line: click.echo(line, err=True)) if warm_epochs else []
    mse_weight = _pick(mse_weight, defaults["mse_weight"])
    loss_fn = get_loss(loss, mse_weight)
    queries_before = blackbox.queries if blackbox is not None else 0
    history = train_ae(trained, [target], loss_fn, x, y, x_val, y_val, cfg, attack=attack,
                       log=lambda line: click.echo(line, err=True))
    ae.eval()
    images = cfg.epochs * (cfg.epoch_images or len(x))
    description = {"dataset": dataset, "classifier": classifier_spec, "weights": str(weights) if weights else None,
                   "loss": loss, "mse_weight": mse_weight if loss == "ce_mse" else None,
                   "warm_epochs": warm_epochs, "access": access, "train": asdict(cfg), "attack": attack_cfg.describe(),
                   "n_train": len(x), "n_val": len(x_val), "arch": arch, "arch_kwargs": arch_kwargs}
    if blackbox is not None:
        ae_queries = blackbox.queries - queries_before
        description["blackbox"] = {**query_info, "output": blackbox.output, "ae_training_queries": ae_queries,
                                   "queries": blackbox.queries, "queries_per_training_image": blackbox.queries / images}
    save_ae(ae, out, dataset=dataset if named else "folder", arch=arch, arch_kwargs=arch_kwargs, input_shape=shape,
            loss=loss, description=description)
    natural = correct_flags(Defended(ae, classifier), data_["x_test"], data_["y_test"]).float().mean().item()
    metrics = {**description, "natural_test_accuracy": natural, "n_test": len(data_["x_test"]),
               "classifier_natural_test_accuracy": data_["classifier_natural_accuracy"], "warm_start_history": warm,
               "history": history,
               "environment": _environment(device, bf16_training=cfg.bf16),
               "seconds": round(time.perf_counter() - start, 1)}
    write_json(metrics, metrics_path or out.with_suffix(".json"))
    click.echo(f"wrote {out}: natural accuracy of AE + classifier {percent_with_interval(natural, len(data_['x_test']))}% "
               f"(95% Wilson interval) on {len(data_['x_test'])} test images"
               + (f"; {blackbox.queries} queries ({blackbox.queries / images:.0f} per training image)"
                  if blackbox is not None else ""))


@main.command()
@_common
@click.option("--ae", "ae_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The AE from `aaa fit`; omit to evaluate the classifier alone.")
@click.option("--subset", type=click.IntRange(0), default=None, help="test images attacked, a seeded random "
              "subset (aaa_core.data.test_order), 0 = all (params: suite; folder: 200)")
@click.option("--suite/--no-suite", default=True, show_default=True,
              help="The adaptive-attack suite of the study's robustness stage (aaa_core.evaluation.suite.evaluate_suite): "
                   "worst case over white-box, query-only and transfer attacks, with its sanity checks.")
@click.option("--pgd-steps", type=click.IntRange(1), default=None,
              help="suite: steps of PGD with restarts (params: suite; folder: 50)")
@click.option("--apgd-steps", type=click.IntRange(1), default=None, help="suite: APGD iterations (folder: 50)")
@click.option("--square-queries", type=click.IntRange(1), default=None, help="suite: Square's queries (folder: 1000)")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
def evaluate(classifier_spec, weights, dataset, data, params_path, eps, seed, device_name, ae_path, subset, suite,
             pgd_steps, apgd_steps, square_queries, metrics_path):
    """Natural accuracy, PGD (the paper's protocol) and the adaptive suite for AE + your classifier."""
    from aaa_core.data import describe_subset, test_subset
    from aaa_core.evaluation.flags import predictions, robust_flags
    from aaa_core.evaluation.suite import SuiteConfig, evaluate_suite, suite_config
    from aaa_core.io import write_json
    from aaa_core.models.external import defend
    from aaa_core.runtime import attack_seed
    from aaa_core.stats import encode_flags

    start = time.perf_counter()
    params, named, seed, data_, shape, classifier, eps, device = _setup(classifier_spec, weights, dataset, data,
                                                                        params_path, eps, seed, device_name)
    model = defend(classifier, ae_path, shape) if ae_path else classifier.eval()
    if named:
        threat = params.attack(dataset)
        eval_steps, alpha = threat.eval_steps, threat.alpha
        cfg = suite_config(params, dataset, eps=eps, seed=seed)   # the robustness stage's suite.<dataset>
        n = _pick(subset, params.section("suite", dataset).subset)
    else:
        eval_steps, alpha = FOLDER_DEFAULTS["eval_steps"], eps / 4
        # APGD-T's 3 targets are fitted to the dataset's classes by evaluate_suite (limited or skipped, recorded)
        cfg = SuiteConfig(eps=eps, paper_alpha=alpha, paper_steps=eval_steps, pgd_steps=50, pgd_alpha=eps / 8,
                          pgd_restarts=2, apgd_steps=50, apgdt_targets=3, square_queries=1000,
                          transfer_steps=20, curve_eps=[0.0, eps / 2, eps, min(1.0, 2 * eps), 1.0], curve_steps=20,
                          max_acc_at_high_eps=0.05, masking_tolerance=0.02, seed=seed)
        n = _pick(subset, FOLDER_DEFAULTS["subset"])
    cfg = dataclasses.replace(cfg, pgd_steps=_pick(pgd_steps, cfg.pgd_steps), apgd_steps=_pick(apgd_steps, cfg.apgd_steps),
                              square_queries=_pick(square_queries, cfg.square_queries))
    x, y = test_subset(data_["x_test"], data_["y_test"], n, seed)
    natural_full = (predictions(model, data_["x_test"]) == data_["y_test"]).float().mean().item()
    metrics = {"dataset": dataset, "label": data_["label"], "classifier": classifier_spec,
               "weights": str(weights) if weights else None, "ae": str(ae_path) if ae_path else None,
               "natural_accuracy_full_test": natural_full, "examples": len(x),
               "subset": describe_subset(len(data_["x_test"]), n, seed), "seed": seed, "precision": "float32"}
    if suite:
        sources = {"classifier": classifier} if ae_path else {}
        report = evaluate_suite(model, x, y, cfg, transfer_sources=sources, classes=data_["n_classes"],
                                log=lambda line: click.echo(line, err=True))
        metrics.update(report.as_dict(), skipped_attacks=report.skipped)
        metrics["masked_gradients"] = {"detected": any(not c.passed for c in report.checks
                                                       if c.name.startswith("no_masked_gradients"))}
        summary = f"worst case {percent_with_interval(report.worst, len(x))} over {len(report.results)} attacks"
        metrics["wilson_95"] = {"worst_case": wilson_interval(round(report.worst * len(x)), len(x)),
                                **{r.name: wilson_interval(int(r.flags.sum()), len(x)) for r in report.results}}
    else:
        attack = PGDConfig(eps=eps, alpha=alpha, steps=max(eval_steps))
        pgd_seed = attack_seed(seed, "pgd-paper")
        flags = robust_flags(model, x, y, attack, record_at=eval_steps, seed=pgd_seed)
        metrics["robust_accuracy"] = {f"pgd{k}": flags[k].float().mean().item() for k in eval_steps}
        metrics["robust_flags"] = {f"pgd{k}": encode_flags(flags[k]) for k in eval_steps}
        metrics["natural_flags"] = encode_flags(predictions(model, x) == y)
        metrics["attack"] = {**attack.describe(), "examples": len(x), "seed": pgd_seed}
        summary = ", ".join(f"PGD-{k} {percent_with_interval(v, len(x))}"
                            for k, v in zip(eval_steps, metrics["robust_accuracy"].values()))
        metrics["wilson_95"] = {f"pgd{k}": wilson_interval(int(flags[k].sum()), len(x)) for k in eval_steps}
    failed = [c for c in metrics.get("checks", []) if not c["passed"]]
    metrics.update(sanity_passed=not failed, environment=_environment(device),
                   seconds=round(time.perf_counter() - start, 1))
    write_json(metrics, metrics_path)
    n_test = len(data_["x_test"])
    click.echo(f"wrote {metrics_path}: natural {percent_with_interval(natural_full, n_test)} (all {n_test} test images), "
               f"on {len(x)} of them (a seeded random subset): {summary} (%, 95% Wilson intervals)")
    for c in failed:
        click.echo(f"WARNING: sanity check {c['name']} failed: {c['detail']}", err=True)
    if failed:
        raise SystemExit(2)


@main.command()
@_common
@click.option("--ae", "ae_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The AE from `aaa fit`; omit to certify the classifier alone.")
@click.option("--sigma", "sigmas", type=click.FloatRange(min=0, min_open=True), multiple=True,
              help="Gaussian noise std, pixel units; repeatable (params: certify.<dataset>.sigmas; folder: required)")
@click.option("--n", type=click.IntRange(1), default=None,
              help="noise samples bounding pA (params: certify; folder: 100000)")
@click.option("--n0", type=click.IntRange(1), default=None, help="noise samples choosing the class (folder: 100)")
@click.option("--alpha", type=click.FloatRange(0, 0.5, min_open=True), default=None,
              help="probability that a certificate is wrong (folder: 0.001)")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="noisy samples per forward (folder: 1000)")
@click.option("--subset", type=click.IntRange(0), default=None, help="test images certified, a seeded random "
              "subset (aaa_core.data.test_order), 0 = all (folder: 100)")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write Cohen's TSV per sigma (sigma<sigma>.tsv).")
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
def certify(classifier_spec, weights, dataset, data, params_path, eps, seed, device_name, ae_path, sigmas, n, n0, alpha,
            batch_size, subset, out_dir, metrics_path):
    """Certified L2 robustness of (AE +) your classifier by randomized smoothing (Cohen et al., 2019)."""
    from aaa_core.data import describe_subset, test_order, test_subset
    from aaa_core.evaluation.certify import RADII, certify_dataset, summarize, write_tsv
    from aaa_core.io import write_json
    from aaa_core.models.external import defend
    from aaa_core.runtime import attack_seed

    if eps is not None:
        raise click.BadParameter("certify takes --sigma (Gaussian noise, L2); --eps is for the attacks",
                                 param_hint="--eps")
    start = time.perf_counter()
    params, named, seed, data_, shape, classifier, _, device = _setup(classifier_spec, weights, dataset, data,
                                                                      params_path, 1.0, seed, device_name)
    budget = (asdict(params.section("certify", dataset)) if named else
              {"subset": 100, "n0": 100, "n": 100_000, "alpha": 0.001, "batch_size": 1000, "sigmas": []})
    cfg = {"n0": _pick(n0, budget["n0"]), "n": _pick(n, budget["n"]), "alpha": _pick(alpha, budget["alpha"]),
           "batch_size": _pick(batch_size, budget["batch_size"])}
    sigmas, n_images = list(dict.fromkeys(sigmas or budget["sigmas"])), _pick(subset, budget["subset"])
    if not sigmas:
        raise click.BadParameter("a folder dataset needs --sigma (e.g. 0.25)", param_hint="--sigma")
    model = defend(classifier, ae_path, shape) if ae_path else classifier.eval()
    x, y = test_subset(data_["x_test"], data_["y_test"], n_images, seed)
    indices, noise_seed = test_order(len(data_["x_test"]), seed)[: len(x)], attack_seed(seed, "certify")
    results = {}
    for sigma in sigmas:
        records = certify_dataset(model, x, y, sigma, **cfg, seed=noise_seed, indices=indices, desc=f"sigma {sigma:g}")
        if out_dir is not None:
            write_tsv(records, out_dir / f"sigma{sigma:g}.tsv")
        results[f"{sigma:g}"] = {"sigma": sigma, **summarize(records, RADII)}
        click.echo(f"sigma {sigma:g}: certified accuracy " + ", ".join(
            f"r={row['radius']:g} {percent_with_interval(row['accuracy'], len(x))}"
            for row in results[f"{sigma:g}"]["certified_accuracy"]) + " (%, 95% Wilson intervals)")
    write_json({"dataset": dataset, "label": data_["label"], "classifier": classifier_spec,
                "weights": str(weights) if weights else None, "ae": str(ae_path) if ae_path else None,
                "settings": {**cfg, "sigmas": sigmas, "radii": list(RADII)}, "examples": len(x),
                "subset": describe_subset(len(data_["x_test"]), n_images, seed), "seed": seed, "noise_seed": noise_seed,
                "sigmas": results, "environment": _environment(device),
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    click.echo(f"wrote {metrics_path}")


if __name__ == "__main__":
    main()
