"""train_ae: AAA, one autoencoder adversarially trained against one or more frozen natural classifiers."""
from __future__ import annotations

import time
from pathlib import Path

import click

from aaa_core.attacks import PGDConfig, pgd
from aaa_core.checkpoints import load_model, save_model, write_json
from aaa_core.config import AE_LOSSES, load_params
from aaa_core.data import split_train_val
from aaa_core.evaluate import correct_flags, precision_gap
from aaa_core.losses import get_loss
from aaa_core.models import Defended, ae_kwargs, build
from aaa_core.runtime import Resume, load_prepared, seed_everything
from aaa_core.training import TrainConfig, train_ae


@click.command()
@click.option("--dataset", required=True)
@click.option("--loss", type=click.Choice(AE_LOSSES), required=True)
@click.option("--classifier", "classifier_paths", multiple=True, required=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Frozen natural classifier(s); give several for ensemble training.")
@click.option("--data", "data_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--metrics", "metrics_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default="params.yaml", show_default=True)
def main(dataset: str, loss: str, classifier_paths: tuple[Path, ...], data_path: Path, out: Path,
         metrics_path: Path, params_path: Path) -> None:
    start = time.perf_counter()
    params = load_params(params_path)
    budget, threat = params.budget(dataset), params.attack(dataset)
    seed_everything(params.seed)
    data = load_prepared(data_path)
    (x, y), (x_val, y_val) = split_train_val(data["x_train"], data["y_train"], subset=budget.train_subset,
                                             val_size=budget.val_size, seed=params.seed)
    classifiers = [load_model(p, kind="classifier")[0] for p in classifier_paths]
    attack_cfg = PGDConfig(eps=threat.eps, alpha=budget.train_alpha, steps=budget.train_steps)
    cfg = TrainConfig(epochs=budget.ae_epochs, batch_size=budget.batch_size, lr=budget.lr,
                      lr_patience=budget.lr_patience, seed=params.seed, bf16=budget.train_bf16,
                      epoch_images=budget.adv_epoch_images, augment=budget.augment)

    def attack(model, xb, yb, generator, strength):
        return pgd(model, xb, yb, eps=strength * attack_cfg.eps, alpha=strength * attack_cfg.alpha,
                   steps=attack_cfg.steps, generator=generator)

    arch_kwargs = ae_kwargs(dataset, budget)
    ae = build(dataset, "ae", **arch_kwargs)
    description = {"dataset": dataset, "loss": loss, "classifiers": [str(p) for p in classifier_paths],
                   "train": cfg.__dict__, "attack": attack_cfg.describe(), "n_train": len(x),
                   "arch_kwargs": arch_kwargs}
    resume = Resume(out)
    history = train_ae(ae, classifiers, get_loss(loss), x, y, x_val, y_val, cfg, attack=attack,
                       resume=resume.load(description, click.echo), save_state=resume.saver(description),
                       log=click.echo)
    ae.eval()
    save_model(ae, out, kind="ae", dataset=dataset, arch="ae", arch_kwargs=arch_kwargs, loss=loss,
               description=description)
    check = [precision_gap(Defended(ae, c), x_val[:256], y_val[:256], attack_cfg) for c in classifiers]
    natural = [correct_flags(Defended(ae, c), data["x_test"], data["y_test"]).float().mean().item()
               for c in classifiers]
    write_json({**description, "label": data["label"], "natural_test_accuracy": natural,
                "training_attack_precision": check, "history": history,
                "seconds": round(time.perf_counter() - start, 1)}, metrics_path)
    resume.clear()


if __name__ == "__main__":
    main()
