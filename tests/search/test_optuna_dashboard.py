"""Issue #18 item 1: what people browse after a real search. optuna-dashboard, on the search's optuna.db, shows per
trial the Ray trial id, every validation metric of the trial's best epoch and best_epoch as user attributes, and
the per-epoch val/score as intermediate values; Ray's own TensorBoard events stay in every trial folder.

The dashboard is optuna_dashboard.wsgi(storage), the app `optuna-dashboard sqlite:///...` serves, called
in-process with WSGI environ dicts (no server, no network): the JSON its web page renders from.
"""

from __future__ import annotations

import io
import json
import math
from wsgiref.util import setup_testing_defaults

import optuna
import optuna_dashboard  # the test extra: optuna-dashboard>=0.21
import pytest

from echotune.search.optuna_bridge import BEST_EPOCH_ATTR, RAY_TRIAL_ID_ATTR
from tests.test_metrics import METRIC_KEYS

pytestmark = pytest.mark.ray
VAL_METRICS = set(METRIC_KEYS)  # every validation metric of an epoch (metrics_dict's names)


def get_json(app, path: str) -> dict:
    """GET `path` from a WSGI app; the decoded JSON body of a 200 answer."""
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD="GET", PATH_INFO=path, QUERY_STRING="", **{"wsgi.input": io.BytesIO()})
    answer: dict = {}

    def start_response(status, headers, exc_info=None):
        answer["status"] = status

    body = b"".join(app(environ, start_response))
    assert answer["status"].startswith("200"), (path, answer["status"], body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def dashboard_study(e2e_search):
    """(study detail JSON as the dashboard serves it, the same study read by Optuna, trial folder ids)."""
    cfg, _, experiment = e2e_search
    storage = f"sqlite:///{experiment / 'optuna.db'}"
    app = optuna_dashboard.wsgi(storage)
    studies = get_json(app, "/api/studies")["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == cfg.name)
    detail = get_json(app, f"/api/studies/{study_id}")
    study = optuna.load_study(study_name=cfg.name, storage=storage)
    trial_ids = {p.name.removeprefix("trial_") for p in experiment.glob("trial_*")}
    return detail, study, trial_ids


def attrs_of(trial: dict) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


def test_every_trial_shows_its_ray_trial_id(dashboard_study):
    detail, study, trial_ids = dashboard_study
    assert len(detail["trials"]) == len(study.trials) == len(trial_ids) == 5
    shown = [attrs_of(t)[RAY_TRIAL_ID_ATTR] for t in detail["trials"]]  # FAIL trials too: the folder to look in
    assert sorted(shown) == sorted(trial_ids)
    assert {RAY_TRIAL_ID_ATTR, BEST_EPOCH_ATTR} | VAL_METRICS <= {a["key"] for a in detail["union_user_attrs"]}


def test_scored_trials_show_their_best_epochs_validation_metrics_and_every_epoch(dashboard_study):
    detail, study, _ = dashboard_study
    by_number = {t.number: t for t in study.trials}
    scored = [t for t in detail["trials"] if t["state"] in ("Complete", "Pruned")]
    assert len(scored) >= 2 and detail["has_intermediate_values"]
    for trial in scored:
        attrs, optuna_trial = attrs_of(trial), by_number[trial["number"]]
        assert VAL_METRICS | {BEST_EPOCH_ATTR} <= set(attrs), trial["number"]
        assert all(math.isfinite(float(attrs[k])) for k in VAL_METRICS)
        # the numbers are Optuna's (the dashboard only formats them), the val/score of the best epoch
        assert float(attrs["val/score"]) == pytest.approx(optuna_trial.user_attrs["val/score"])
        steps = {v["step"]: v["value"] for v in trial["intermediate_values"]}
        epochs = len(steps)
        assert sorted(steps) == list(range(1, epochs + 1))  # one value per epoch trained
        assert steps == pytest.approx(optuna_trial.intermediate_values)
        best = int(attrs[BEST_EPOCH_ATTR])
        assert 1 <= best <= epochs and max(steps.values()) == pytest.approx(steps[best])


def test_a_search_keeps_rays_tensorboard_events_per_trial(e2e_search):
    _, _, experiment = e2e_search
    reported = [p.parent for p in experiment.glob("trial_*/progress.csv")]  # trials with at least one epoch
    assert reported and all(list(folder.glob("events.out.tfevents.*")) for folder in reported)
