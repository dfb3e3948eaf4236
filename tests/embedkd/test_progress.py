"""StepProgress without a terminal: plain lines on stderr, throttled, the last step always shown."""

from embedkd.progress import StepProgress


def test_lines_every_interval_and_at_the_end(capsys):
    p = StepProgress(3, "job", every_s=0.0)
    for i in range(3):
        p.update({"loss": 1.0 / (i + 1)})
    p.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["job: step 1/3", "job: step 2/3", "job: step 3/3"]
    assert lines[-1].endswith("loss=0.3333")


def test_throttled_to_the_last_step_and_resumes_count(capsys):
    p = StepProgress(10, "job", initial=7, every_s=3600.0)
    for _ in range(3):
        p.update({})
    p.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("job: step 10/10")


def test_disabled_writes_nothing(capsys):
    p = StepProgress(2, "job", enabled=False, every_s=0.0)
    p.update({"loss": 1.0})
    p.update({"loss": 1.0})
    p.close()
    assert capsys.readouterr().err == "" and p.done == 2


def test_unknown_total_shows_the_count_alone(capsys):
    p = StepProgress(0, "general text", every_s=0.0)  # a stage bounded by time, not steps
    p.update({"general": 0.5})
    p.close()
    assert capsys.readouterr().err.startswith("general text: step 1, ")
