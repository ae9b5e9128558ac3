import io

from aaa_core.progress import progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_short_lines_with_the_time_left(monkeypatch):
    monkeypatch.setenv("AAA_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    assert list(progress(range(4), "PGD-40", stream=out)) == [0, 1, 2, 3]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("PGD-40: 1/4 (25%), 0:00 elapsed, about 0:00 left") and len(lines) == 3


def test_a_log_stays_quiet_within_the_interval_and_when_silenced(monkeypatch):
    out = io.StringIO()
    monkeypatch.setenv("AAA_PROGRESS_SECONDS", "60")
    list(progress(range(4), "epoch 1/2", stream=out))
    monkeypatch.setenv("AAA_PROGRESS_SECONDS", "0")
    monkeypatch.setenv("AAA_PROGRESS", "0")
    list(progress(range(4), "epoch 1/2", stream=out))
    assert out.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar_and_other_ranks_stay_silent(monkeypatch):
    out = Terminal()
    list(progress(range(3), "epoch 1/2", stream=out))
    assert "epoch 1/2:   0%|" in out.getvalue() and "0/3" in out.getvalue()   # leave=False clears it at the end
    monkeypatch.setenv("RANK", "1")
    quiet = Terminal()
    list(progress(range(3), "epoch 1/2", stream=quiet))
    assert quiet.getvalue() == ""
