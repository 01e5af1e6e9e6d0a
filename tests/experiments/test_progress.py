"""Progress inside a trial: the sequences seen, reported as a trial runs, in this process or
from a worker process."""

from __future__ import annotations

import queue

from carousel.experiments import report, reproduce


def test_a_trial_reports_the_sequences_it_has_seen():
    for config, budget in (("faithful", 300), ("gru", 48)):
        seen = []
        result = reproduce.run_trial("4-T100", config, 0, 0, budget, progress=seen.append)
        step = seen[0]  # a chunk (faithful) or a batch (trained through the loop)
        assert step < budget and seen == list(range(step, budget + 1, step)), config
        assert result["sequences"] == budget


def test_a_worker_reports_its_trial_at_most_every_report_interval_and_at_its_end(monkeypatch):
    reports = queue.Queue()
    monkeypatch.setattr(reproduce, "_reports", reports)
    job = ("4-T100", "faithful", 1, 0, 500)
    result = reproduce._run_job(job)
    sent = [reports.get() for _ in range(reports.qsize())]
    assert 1 <= len(sent) <= 3  # the first chunk, maybe one more within a second, the end
    assert all(key == reproduce._key(job) for key, _ in sent)
    assert sent[-1][1] == 500 == result["sequences"]


def test_the_progress_bar_counts_the_sequences_seen(capsys):
    results = reproduce._run_jobs([("4-T100", "faithful", 0, 0, 200)], 1, False, lambda r: None)
    assert results[0]["sequences"] == 200
    err = capsys.readouterr().err
    assert "sequences seen: 200seq" in err and "1/1" in err


def test_results_plot_of_one_row_shows_the_papers_mean_and_names_only_what_it_draws(
    tmp_path, monkeypatch
):
    from matplotlib import pyplot

    closed = []
    monkeypatch.setattr(pyplot, "close", closed.append)
    trials = tmp_path / "trials.csv"
    trials.write_text("row,solved,sequences\n4-T100,True,50000\n4-T100,True,90000\n")
    summary = {"row": "4-T100", "config": "faithful", "paper_sequences_mean": 74000}
    report.plot_results(trials, tmp_path / "results.png", [summary])
    (axes,) = closed[0].axes
    assert [text.get_text() for text in axes.get_legend().get_texts()] == [
        "paper (mean)",
        "ours: solved",
    ]
    bottom, top = axes.get_ylim()
    assert bottom < 50000 and 90000 < top and top / bottom < 100  # not squashed
    assert (tmp_path / "results.png").stat().st_size > 1000
