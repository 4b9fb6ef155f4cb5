"""The Optuna study of a recipe search: its storage (an SQLite file in the sweep folder, or a database that workers
on several machines share), TPE sampling, median pruning, and the bookkeeping that lets a stopped sweep go on:
the trials a dead process left retried, finished and running ones counted against --trials, the search space kept
with the study so that every worker searches the same one."""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.distributions import BaseDistribution
from optuna.pruners import MedianPruner
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import RDBStorage
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunecv.errors import UserError

# another machine's worker that stops writing its heartbeat for GRACE_S is dead: its trial is failed and retried
HEARTBEAT_S, GRACE_S, RETRIES = 60, 300, 3
PRUNER_STARTUP_TRIALS = 3  # trials that finish unpruned before the median means anything
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HELD = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)  # what takes one of the sweep's --trials
OPEN_ATTEMPTS = 5  # workers that start together race to create a new database's tables and the study

optuna_logger = logging.getLogger("optuna")


def quiet_optuna(verbose: bool) -> None:
    """Optuna's lines go through tunecv's logging (train.log, and the console with -v); its warning with a
    traceback for each failed trial stays out (the sweep says in one line what failed)."""
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def default_storage(out_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'sweep.db'}"


def shown(url: str) -> str:
    """The storage URL without its password, for messages."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def direction(metric: str) -> StudyDirection:
    """Scores are maximized (top1, the mAPs: what `best_metric` chooses by), a loss minimized."""
    return StudyDirection.MINIMIZE if "loss" in metric.lower() else StudyDirection.MAXIMIZE


class PerTrialTPE(BaseSampler):
    """TPE whose random draws for trial n come from seed + n: a sweep stopped and resumed draws what it would have,
    and workers started together (one config, one seed) draw different recipes rather than the same ones."""

    def __init__(self, seed: int, startup_trials: int) -> None:
        self.seed, self.startup_trials = seed, startup_trials
        self._tpe = self._create(seed)

    def _create(self, seed: int) -> TPESampler:
        # constant_liar: a running trial counts as a poor one, so parallel workers spread out
        return TPESampler(seed=seed, n_startup_trials=self.startup_trials, constant_liar=True)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._tpe = self._create(self.seed + trial.number)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self._tpe.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()


def startup_trials(trials: int) -> int:
    """Random trials before TPE models the results: Optuna's 10, fewer for a short sweep (a third of it, 3 at
    least), so that most of a 12-trial sweep is guided."""
    return max(3, min(10, trials // 3))


def open_study(url: str, name: str, search: dict[str, Any], seed: int, trials: int) -> Study:
    """The study `name` in `url`, created or joined; UserError when the storage cannot be opened, or the study
    searches another space or metric than `search` ({"search": {key: spec}, "metric": name})."""
    for attempt in range(OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # Optuna marks the heartbeat experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = RDBStorage(url, engine_kwargs=_engine_options(url), heartbeat_interval=HEARTBEAT_S,
                                     grace_period=GRACE_S, **_retry_stale_trials())
            study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                                        sampler=PerTrialTPE(seed, startup_trials(trials)),
                                        pruner=MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=1),
                                        direction=direction(search["metric"]))
            break
        except sqlalchemy.exc.DatabaseError as err:
            if attempt < OPEN_ATTEMPTS - 1 and _racing(err):
                time.sleep(0.2 * (attempt + 1))  # another worker is creating the tables or the study
                continue
            fix = "check --storage and that the database server is reachable" \
                if isinstance(err, sqlalchemy.exc.OperationalError) and not _racing(err) else \
                "check --storage, or create the study first with `optuna create-study` if workers keep colliding"
            raise UserError(f"cannot open the study storage {shown(url)} ({_reason(err, url)}); {fix}") from None
        except ImportError as err:
            raise UserError(_missing_driver(err, url)) from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as err:
            raise UserError(f"cannot open the study storage {shown(url)} ({_reason(err, url)}); give --storage as "
                            "postgresql://user:password@host/db, mysql://... or sqlite:///path/sweep.db (with its "
                            "database driver installed)") from None
    _check_same_search(study, search, url)
    return study


def _retry_stale_trials() -> dict[str, Any]:
    """RDBStorage's callback that queues a stale trial's values again (renamed in Optuna 4.9)."""
    storages = optuna.storages
    if hasattr(storages, "RetryHeartbeatStaleTrialCallback"):
        return {"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(RETRIES)}
    return {"failed_trial_callback": storages.RetryFailedTrialCallback(RETRIES)}


RACING = ("locked", "already exists", "unique constraint", "duplicate entry", "deadlock")


def _racing(err: BaseException) -> bool:
    """The database's answer while another worker creates the same tables or study: SQLite's write lock and
    "already exists", PostgreSQL's "duplicate key value violates unique constraint" and "relation ... already
    exists", MySQL's "Duplicate entry" and "Deadlock found"."""
    text = str(err).lower()
    return any(words in text for words in RACING)


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}  # seconds a worker waits for another's write to the file
    return {"pool_pre_ping": True}  # a server connection dropped during a long trial is opened again


# the pip package of each database driver SQLAlchemy imports (postgresql:// means psycopg 3 from SQLAlchemy 2.1)
DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "pymysql": "pymysql",
           "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000"}


def _missing_driver(err: ImportError, url: str) -> str:
    """The sentence for a storage URL whose database driver does not import (Optuna hides the module's name)."""
    cause: BaseException | None = err
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen and not getattr(cause, "name", None):
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    module = str(getattr(cause, "name", None) or "").split(".")[0]
    if module in DRIVERS:
        return (f"cannot open the study storage {shown(url)}: its database driver {module} does not import "
                f"({_reason(cause, url)}); pip install \"{DRIVERS[module]}\" on every machine that runs a worker")
    scheme = url.split(":", 1)[0]
    return (f"cannot open the study storage {shown(url)}: its database driver does not import "
            f"({_reason(cause or err, url)}); install the SQLAlchemy driver for {scheme} on every machine that runs "
            "a worker")


def _reason(err: BaseException, url: str) -> str:
    """The driver's first line about `err`, without the URL's password."""
    text = str(getattr(err, "orig", None) or err).strip()
    return (text.splitlines()[0] if text else type(err).__name__).replace(url, shown(url))


def _check_same_search(study: Study, search: dict[str, Any], url: str) -> None:
    stored = study.user_attrs.get("search")
    if stored is None:
        study.set_user_attr("search", search)
    elif stored != search:
        raise UserError(f"study {study.study_name!r} in {shown(url)} searches {_spec(stored)}, but this command "
                        f"searches {_spec(search)}; give the study's --search (and best_metric), or another "
                        "--study_name or ckpt_save_dir")


def _spec(search: dict[str, Any]) -> str:
    return " ".join(f"{key}={spec}" for key, spec in search["search"].items()) + f" by {search['metric']}"


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` of this machine runs (a zombie does not). Where that cannot be told, True: the
    heartbeat decides instead."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) sends Ctrl-C there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def retry_dead_trials(study: Study, host: str) -> list[int]:
    """RUNNING trials that a process of this machine left when it died: failed (they count for nothing) and their
    values queued again. Other machines' dead trials fail by their heartbeat (RetryFailedTrialCallback)."""
    dead = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs  # a trial without its pid yet is one another worker is starting now
        if attrs.get("host") == host and "pid" in attrs and not pid_alive(attrs["pid"]):
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            retry(study, trial)
            dead.append(trial.number)
    return dead


def retry(study: Study, trial: FrozenTrial) -> None:
    """Queue `trial`'s values for the next trial (a trial that did not finish is tried again)."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def held(trials: list[FrozenTrial], below: int | None = None) -> int:
    """Trials that take one of --trials: finished, running or queued (numbered below `below`)."""
    return sum(1 for t in trials if t.state in HELD and not t.user_attrs.get("surplus")
               and (below is None or t.number < below))


def busy(trials: list[FrozenTrial]) -> int:
    """Trials finished or running: a worker goes on while fewer than --trials are (a queued trial is run by the
    next worker that asks, so it does not stop one)."""
    return sum(1 for t in trials if t.state in (*FINISHED, TrialState.RUNNING) and not t.user_attrs.get("surplus"))


def finished(trials: list[FrozenTrial]) -> int:
    return sum(1 for t in trials if t.state in FINISHED)


def best_trial(trials: list[FrozenTrial], metric: str) -> FrozenTrial | None:
    """The COMPLETE trial with the best value (the first of equals)."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    sign = -1 if direction(metric) == StudyDirection.MINIMIZE else 1
    return max(done, key=lambda t: (sign * t.value, -t.number))
