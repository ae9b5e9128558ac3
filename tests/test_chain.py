"""stages.chain: several stage commands in one process, in order, stopping at the first that fails."""
from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
from pathlib import Path

import click
import pytest
import torch
import yaml

import stages.chain
from aaa_core import distributed
from stages.chain import split_commands

ROOT = Path(__file__).resolve().parents[1]


def stage(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd``, with this repository's stages importable."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)})


def chain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return stage("stages.chain", *args, cwd=cwd)


def write_params(folder: Path, data: dict | None = None, **changes) -> None:
    """params.yaml in ``folder``: the repository's, offline data (and ``data``'s keys), with ``changes`` to its
    top-level keys."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(download=False, user_dir="", offline_dir=str(ROOT / "data" / "offline"), **(data or {}))
    params.update(changes)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("argv, message", [
    (["stages.prepare_data", "--dataset", "mnist", "::", "::", "stages.summarize"], "an empty command in the chain"),
    (["prepare_data", "--dataset", "mnist"], "'prepare_data': expected a stage module"),
    (["stages.no_such_stage"], "'stages.no_such_stage': expected a stage module"),
])
def test_a_bad_chain_is_refused_naming_the_command(argv, message):
    with pytest.raises(click.UsageError, match=message):
        split_commands(argv)


def test_split_keeps_each_commands_arguments_in_order():
    assert split_commands(["stages.summarize", "--a", "1", "::", "stages.render_tables", "--b"]) == [
        ("stages.summarize", ["--a", "1"]), ("stages.render_tables", ["--b"])]


def test_commands_run_in_order_as_their_own_processes_would_and_the_chain_stops_at_a_failure(tmp_path):
    write_params(tmp_path, data={"test_images": 1000})

    def prepare(name: str) -> list[str]:
        return ["stages.prepare_data", "--dataset", "mnist", "--out", f"{name}.pt", "--metrics", f"{name}.json"]

    alone = stage(*prepare("alone"), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    proc = chain(*prepare("first"), "::", *prepare("second"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert md5(tmp_path / "first.pt") == md5(tmp_path / "second.pt") == md5(tmp_path / "alone.pt")
    # a planted failure in the middle: its one-line error, the chain's exit status, and the last command not run
    proc = chain(*prepare("third"), "::", "stages.prepare_data", "--dataset", "nope", "--out", "x.pt", "--metrics",
                 "x.json", "::", *prepare("fourth"), cwd=tmp_path)
    assert proc.returncode != 0
    assert (tmp_path / "third.pt").is_file() and not (tmp_path / "fourth.pt").exists()
    assert "stages.prepare_data (2 of 3) failed; the rest did not run" in proc.stderr


FAKE_STAGES = {
    "exits": "@click.pass_context\ndef main(ctx):\n    ctx.exit(3)",
    "click_error": "def main():\n    err = click.ClickException('no such file')\n    err.exit_code = 4\n    raise err",
    "aborted": "def main():\n    raise click.Abort()",
    "bug": "def main():\n    raise RuntimeError('a bug in the stage')",
    "ok": "def main():\n    Path('ok.ran').touch()",
}


@pytest.fixture
def fake_stages(tmp_path, monkeypatch):
    """``stages._fake_<name>``: a click command each (``FAKE_STAGES``), run in ``tmp_path``; the chain's
    changes to this process (sys.argv, the environment, imported modules) are undone afterwards."""
    folder = tmp_path / "fake_stages"
    folder.mkdir()
    for name, body in FAKE_STAGES.items():
        (folder / f"_fake_{name}.py").write_text(
            f"from pathlib import Path\n\nimport click\n\n\n@click.command()\n{body}\n")
    monkeypatch.setattr(stages, "__path__", [*stages.__path__, str(folder)])
    importlib.invalidate_caches()
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setenv(distributed.CHAIN_ENV, "")
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for name in FAKE_STAGES:
        sys.modules.pop(f"stages._fake_{name}", None)


@pytest.mark.parametrize("failing, code, message", [
    ("exits", 3, None), ("click_error", 4, "Error: no such file"), ("aborted", 1, "Aborted!")])
def test_a_job_that_ends_non_zero_stops_the_chain_with_its_status(fake_stages, capsys, failing, code, message):
    assert stages.chain.main([f"stages._fake_{failing}", "::", "stages._fake_ok"]) == code
    err = capsys.readouterr().err
    assert f"chain: stages._fake_{failing} (1 of 2) failed; the rest did not run" in err
    assert message is None or message in err
    assert not (fake_stages / "ok.ran").exists()


def test_a_job_that_succeeds_lets_the_chain_go_on(fake_stages):
    assert stages.chain.main(["stages._fake_ok", "::", "stages._fake_ok"]) == 0
    assert (fake_stages / "ok.ran").exists()


def test_a_job_with_a_bug_stops_the_chain_with_its_traceback_and_the_summary(fake_stages, capsys):
    with pytest.raises(RuntimeError, match="a bug in the stage"):
        stages.chain.main(["stages._fake_bug", "::", "stages._fake_ok"])
    assert "chain: stages._fake_bug (1 of 2) failed; the rest did not run" in capsys.readouterr().err
    assert not (fake_stages / "ok.ran").exists()


def test_a_chained_stage_runs_torchrun_as_a_child_and_the_chain_goes_on(monkeypatch):
    calls = []
    monkeypatch.setattr(distributed.subprocess, "call", lambda args, env: calls.append((args, env)) or 0)
    monkeypatch.setattr(distributed.os, "execv", lambda *a: pytest.fail("a chained stage replaced the chain"))
    monkeypatch.delenv(distributed.TORCHRUN_ENV, raising=False)
    monkeypatch.setenv(distributed.CHAIN_ENV, "1")
    monkeypatch.setattr(sys, "argv", ["stages.evaluate", "--dataset", "mnist"])
    with pytest.raises(SystemExit) as exit_:
        distributed.relaunch(2, "stages.evaluate")
    assert exit_.value.code == 0
    (args, env), = calls
    assert args[-4:] == ["-m", "stages.evaluate", "--dataset", "mnist"] and "--nproc_per_node=2" in args
    assert distributed.CHAIN_ENV not in env      # the relaunched stage runs as a stage of its own
    distributed.relaunch(1, "stages.evaluate")    # one process: nothing to relaunch
    assert len(calls) == 1


def test_a_seeded_job_chained_after_another_draws_what_it_draws_alone(tmp_path):
    """Madry training draws batches, starts and initial weights at random: chained after a natural training it
    must produce the weights its own process produces, and a job repeated in the chain the same file."""
    write_params(tmp_path, scale="smoke")
    prepare = stage("stages.prepare_data", "--dataset", "mnist", "--out", "data.pt", "--metrics", "data.json",
                    cwd=tmp_path)
    assert prepare.returncode == 0, prepare.stderr

    def train(mode: str, name: str) -> list[str]:
        return ["stages.train_classifier", "--dataset", "mnist", "--arch", "fc", "--mode", mode, "--data", "data.pt",
                "--out", f"{name}.pt", "--metrics", f"{name}.json"]

    alone = stage(*train("adversarial", "alone_adv"), cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr
    proc = chain(*train("natural", "first"), "::", *train("adversarial", "chained_adv"), "::",
                 *train("natural", "again"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    weights = {name: torch.load(tmp_path / f"{name}.pt", weights_only=True)["weights_sha256"]
               for name in ("alone_adv", "chained_adv", "first", "again")}
    assert weights["chained_adv"] == weights["alone_adv"] and weights["again"] == weights["first"]
    assert weights["first"] != weights["alone_adv"]   # the comparison can fail: other training, other weights
