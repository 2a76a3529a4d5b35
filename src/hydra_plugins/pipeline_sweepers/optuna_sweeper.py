"""`hydra/sweeper=pipeline_optuna` (conf/sweep/optuna.yaml): Optuna >= 4 behind a Hydra multirun, with a study
that persists, resumes to exactly n_trials, and prunes.

Why our own and not hydra-optuna-sweeper: 1.3.0 pins optuna < 3 and its database storage fails under
SQLAlchemy 2 (hydra #2562); the 1.4.0rc3 line needs hydra-core and omegaconf release candidates, and tried
here on a sweep started again on its folder it asked n_trials more trials (8 of 4) and numbered the new jobs
from 0 again, writing into the first jobs' folders; neither lets a job see its trial, so neither can prune.

What it optimises: each job returns its validation score (trainer.monitor at the kept epoch), so the study's
direction is that metric's (`direction: null`); the test split never steers it.

What it does: the study (`study_name`, default: the sweep folder) lives in `storage` (default: SQLite beside
the MLflow store, pipeline.sweeps.tuning) and records the MLflow parent run. Trials are asked n_jobs at a time and
launched through any Hydra launcher (basic, joblib, submitit) with job number = trial number, so a job finds
its trial (pipeline.sweeps.tuning.job_trial) to report each epoch for the `pruner`. Started again on a sweep folder,
it relaunches the trials a killed launcher left RUNNING (same number, same params) and asks only what is
missing to reach n_trials in total. Search space: Hydra's override grammar, as hydra-optuna-sweeper's
(`choice(4, 8)`, `interval(1e-4, 3e-2)`, `tag(log, interval(...))`, `range(1, 5)`, `a,b,c`).
A failed trial (its job raised, or returned no finite score) is FAIL in the study and the search goes on, as
Optuna's do; once every trial has run, the sweep stops in one line naming them (exit status 2) and its parent
run ends FAILED, as a failed job ends the basic sweeper's.
"""

import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def distribution(override: Override):
    """An Optuna distribution for a sweep override (choice, range, interval, a,b,c); None for a fixed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop - value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - int(value.step), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


def search_space(params: DictConfig | None, arguments: list[str]) -> tuple[dict, dict]:
    """(distributions, fixed overrides) from hydra.sweeper.params and the command line."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space, fixed = {}, {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        found = distribution(override)
        if found is None:
            fixed[key] = override.get_value_element_as_str()
            space.pop(key, None)
        else:
            space[key] = found
            fixed.pop(key, None)
    return space, fixed


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        direction: str | None = None,
        study_name: str | None = None,
        storage: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 2,
        sampler: Any = None,
        pruner: Any = None,
        params: DictConfig | None = None,
    ) -> None:
        self.direction, self.study_name, self.storage = direction, study_name, storage
        self.n_trials, self.n_jobs = int(n_trials), max(1, int(n_jobs))
        self.sampler, self.pruner, self.params = sampler, pruner, params  # configs (_recursive_: false)
        self.failures: list[tuple[int, str]] = []  # (trial, why) of the trials this sweep saw fail
        self.launched = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def _direction(self) -> str:
        """The study's direction: the monitored validation metric's (maximize a score, minimize a loss), which
        is what every job returns; a configured direction that contradicts it is refused."""
        from pipeline.errors import ConfigError
        from pipeline.tasks.base import direction

        monitor = OmegaConf.select(self.config, "trainer.monitor") or "val_score"
        wanted = "maximize" if direction(monitor) == "max" else "minimize"
        if self.direction not in (None, wanted):
            raise ConfigError(
                f"hydra.sweeper.direction={self.direction} contradicts trainer.monitor={monitor}, which each trial "
                f"returns (its best validation value); valid: {wanted}, or leave it null"
            )
        return wanted

    def _study(self):
        import optuna

        from pipeline.sweeps import sweep, tuning

        folder = Path(self.config.hydra.sweep.dir)
        storage = self.storage or tuning.default_storage(str(self.config.tracking.uri), folder)
        name = self.study_name or tuning.default_study_name(folder, Path(self.config.paths.output_dir))
        pruner = instantiate(self.pruner) if self.pruner else optuna.pruners.NopPruner()
        database = tuning.open_storage(storage)
        done = _existing_trials(database, name)
        sampler = None
        if self.sampler:  # a seeded sampler restarted on a resumed study would draw its first trials again
            seed = self.sampler.get("seed")
            sampler = instantiate(self.sampler, **({"seed": seed + done} if seed is not None and done else {}))
        study = optuna.create_study(
            storage=database, study_name=name, sampler=sampler, pruner=pruner, direction=self._direction(),
            load_if_exists=True,
        )  # fmt: skip
        parent = sweep.read_record(folder) or {}
        study.set_user_attr("mlflow_parent_run_id", parent.get("run_id"))
        study.set_user_attr("mlflow_tracking_uri", parent.get("tracking_uri"))
        study.set_user_attr("sweep_dir", str(folder.resolve()))
        pruner_config = OmegaConf.to_container(self.pruner, resolve=True) if self.pruner else None
        tuning.write_study_record(folder, storage, name, pruner_config)
        log.info("Optuna study '%s' in %s: %d of %d trials already", name, storage, len(study.trials), self.n_trials)
        return study

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from pipeline.config import one_line_errors
        from pipeline.errors import TrainingError

        space, fixed = search_space(self.params, arguments)
        with one_line_errors("the sweep"):  # an unreachable study database: one line, before any training
            study = self._study()
        states = optuna.trial.TrialState
        orphans = [t for t in study.get_trials(deepcopy=False) if t.state in (states.RUNNING, states.WAITING)]
        for batch in _consecutive(orphans, self.n_jobs):  # a killed launcher's trials: again, same number
            log.info("relaunching trials %s, left unfinished by a stopped sweep", [t.number for t in batch])
            self._launch(study, [t.number for t in batch], [t.params for t in batch], fixed)
        while len(study.trials) < self.n_trials:
            size = min(self.n_jobs, self.n_trials - len(study.trials))
            trials = [study.ask(space) for _ in range(size)]
            self._launch(study, [t.number for t in trials], [t.params for t in trials], fixed)
        done = [t for t in study.trials if t.state == states.COMPLETE]
        counts = {state.name: sum(t.state == state for t in study.trials) for state in states}
        log.info("study '%s': %s", study.study_name, ", ".join(f"{n} {s}" for s, n in counts.items() if n))
        if done:
            log.info("best trial %d: %.4f with %s", study.best_trial.number, study.best_value, study.best_params)
        if self.failures:  # every trial ran (a failed one is FAIL in the study); the sweep itself failed
            with one_line_errors():
                raise TrainingError(failed_trials(self.failures, launched=self.launched))

    def _launch(self, study, numbers: list[int], params: list[dict], fixed: dict) -> None:
        import optuna

        overrides = [tuple(f"{key}={value}" for key, value in {**p, **fixed}.items()) for p in params]
        returns = self.launcher.launch(overrides, initial_job_idx=numbers[0])
        self.launched += len(numbers)
        for number, result in zip(numbers, returns, strict=True):
            try:
                value = result.return_value  # raises the job's exception if it failed
            except Exception as err:  # noqa: BLE001 - a failed trial: FAIL in the study, the sweep fails at its end
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                log.error("trial %d failed: %s", number, reason)
                self.failures.append((number, reason))
                study.tell(number, state=optuna.trial.TrialState.FAIL)
                continue
            if getattr(value, "pruned", False):
                study.tell(number, state=optuna.trial.TrialState.PRUNED)
            elif value is None or not math.isfinite(float(value)):
                self.failures.append((number, f"its validation score is {value}"))
                study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(number, float(value))


def failed_trials(failures: list[tuple[int, str]], launched: int) -> str:
    """The one line a sweep with failed trials ends on: how many, the first's reason, what is kept."""
    numbers = ", ".join(str(number) for number, _ in failures)
    number, reason = failures[0]
    return (
        f"{len(failures)} of the {launched} trials this sweep ran failed (trials {numbers}; trial {number}: "
        f"{reason[:300]}); the study keeps them as FAIL beside its complete trials, and the sweep's parent run "
        "ends FAILED; valid: fix what the trial's run names in its `error` tag, then run the sweep again"
    )


def _existing_trials(storage, name: str) -> int:
    """How many trials the study `name` already has in storage (0 for a new study)."""
    import optuna

    try:
        return len(optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:  # no such study yet
        return 0


def _consecutive(trials: list, size: int) -> list[list]:
    """Trials in launches of at most `size` whose numbers follow each other (job number = trial number)."""
    batches: list[list] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if batches and len(batches[-1]) < size and batches[-1][-1].number + 1 == trial.number:
            batches[-1].append(trial)
        else:
            batches.append([trial])
    return batches
