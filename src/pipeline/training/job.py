"""One training job of the train stage, step by step: its data, model, checkpoints, fit and test.

The bridge between the Hydra config and the plain library functions below it (data sources, model
builders, the task, the runtime); pipeline.commands.train only composes the config, opens the run and calls these.
"""

import json
import logging
from pathlib import Path

import keras
import numpy as np
import yaml

from pipeline import tracking
from pipeline.config import parse_seconds
from pipeline.config.spec import JobPlace, Spec, plain
from pipeline.console import progress_verbosity
from pipeline.data.augment import build_augmentation
from pipeline.data.folders import BadFiles
from pipeline.data.pixels import served_mapping
from pipeline.data.profile import check_profile
from pipeline.data.profile import figure as profile_figure
from pipeline.data.samples import cache_splits, worker_count
from pipeline.data.sequence import ImageBatches, StopOnDataError
from pipeline.data.shapes import read_manifest
from pipeline.data.sources import class_names, intensity, prepare_data, split_samples
from pipeline.deploy import card, contract
from pipeline.lecture.arithmetic import layer_flops
from pipeline.plots import viz
from pipeline.sweeps import sweep, tuning
from pipeline.tasks import get_task, scoring
from pipeline.tasks.targets import target_of
from pipeline.tasks.tta import check as check_views
from pipeline.training.callbacks import CheckMonitor, EarlyStop, StopOnNonFiniteLoss, Target, TimeBudget
from pipeline.training.fit import compile_model, log_selection, shift_curve, test_and_log
from pipeline.training.recipe import Factory, enter_phase, scratch
from pipeline.training.resume import Checkpoints, resume_dir
from pipeline.training.runtime import Distribution, Throughput, build_optimizer

log = logging.getLogger(__name__)


class Job:
    """Data loaded and checked, model built and compiled, resume folder opened: ready to fit."""

    def __init__(
        self,
        cfg: Spec,
        dist: Distribution,
        output_dir: str | Path = ".",
        place: JobPlace | None = None,
        factory: Factory = scratch,
    ):
        """`factory` makes the model and its phases (pipeline.training.recipe): the train stage's `scratch`, or
        the transfer stage's reused backbone."""
        self.cfg, self.dist, self.output_dir = cfg, dist, Path(output_dir)  # the Hydra job folder
        self.place = place or JobPlace()  # in a sweep: its folder and job number (an Optuna trial reports to its study)
        self.task = get_task(cfg.data.task)
        self.root = prepare_data(cfg.data)
        self.classes = class_names(cfg.data, self.root)
        policy = cfg.data.get("on_bad_file", "error")
        dist.check_bad_file_policy(policy)
        self.bad_files = BadFiles(policy)
        self.workers = worker_count(cfg.data.get("workers", "auto"))
        self.indexes = indexes = split_samples(cfg.data, self.root, self.bad_files, self.workers, cache=False)
        for split, samples in indexes.items():
            if samples.targets is not None:  # labels and boxes are known from the index; masks checked when read
                self.task.check_targets(samples.targets, self.classes, split, cfg.data.name)
        self.intensity = intensity(cfg.data)
        batch_size = dist.global_batch(cfg.trainer.batch_size)
        self.profile = check_profile(indexes, self.classes, batch_size, cfg.data, self.intensity)  # warns, or stops
        data = cfg.data
        self.splits = cache_splits(indexes, data.get("cache", "auto"), data.get("cache_budget", "2GiB"),
                                   self.bad_files, self.workers)  # fmt: skip
        dist.check_split_sizes({split: len(samples) for split, samples in self.splits.items()})
        shape = self.splits["train"].image_shape
        self.input_channels = shape[-1]
        with dist.scope():  # variables mirrored on every replica
            self.built = factory(cfg, shape, len(self.classes))
        self.model = self.built.model
        check_views(cfg.get("tta"), self.task, tuple(self.model.inputs[0].shape[1:3]))  # before, not after, training
        dist.check_placement(self.model)
        self.checkpoints = Checkpoints(resume_dir(plain(cfg), dist.worker), cfg.trainer.resume)
        augment = build_augmentation(cfg.augment.train, cfg.seed, target=self.task.target, channels=self.input_channels)
        outputs, batch = len(self.model.outputs), dist.global_batch(cfg.trainer.batch_size)
        first = self.checkpoints.done_epochs
        loader = {"target": self.task.target, "workers": self.workers, "bad": self.bad_files, "defer_errors": True,
                  "shard": dist.shard}  # fmt: skip
        self.train_batches = ImageBatches(self.splits["train"], None, batch, augment, True, cfg.seed, outputs, first,
                                          **loader)  # fmt: skip
        self.val_batches = ImageBatches(self.splits["val"], None, batch, outputs=outputs, **loader)
        max_time = cfg.trainer.get("max_time")
        self.budget = TimeBudget(parse_seconds(max_time), dist.agree) if max_time is not None else None
        self.early = self.target = None
        self.phase = None  # the phase the model is compiled for
        self.extra_callbacks: list[keras.callbacks.Callback] = []  # a notebook's own, after the epoch is recorded
        self.compile_phase(0)

    def compile_phase(self, index: int) -> None:
        """Make phase `index`'s weights trainable and compile with its optimizer (its learning rate, scaled to
        the global batch, its schedule over its epochs); sets the monitored metric and its direction."""
        if self.phase == index:
            return
        cfg, phase, dist = self.cfg, self.built.phases[index], self.dist
        trainable, unfrozen = enter_phase(self.built, phase)
        with dist.scope():
            options = {**plain(cfg.optimizer), "lr": dist.scaled_lr(phase.lr, cfg.trainer.lr_scaling)}
            optimizer = build_optimizer(steps_per_epoch=len(self.train_batches), epochs=phase.epochs, **options)
            self.monitor, self.mode = compile_model(
                self.model,
                self.task,
                plain(cfg.loss),
                optimizer,
                len(self.classes),
                cfg.trainer.monitor,
                cfg.trainer.jit_compile,
                cfg.trainer.get("steps_per_execution", 1),
            )
        self.phase, self.phase_weights = index, (trainable, unfrozen)
        if len(self.built.phases) > 1 or self.built.backbone is not None:
            first = sum(p.epochs for p in self.built.phases[:index])
            log.info("phase %d: epochs %d-%d at lr %.2g, %d trainable weights, backbone blocks %s", index + 1,
                     first + 1, first + phase.epochs, phase.lr, trainable, unfrozen)  # fmt: skip

    def store(self) -> tuple[str, str]:
        """The tracking URI and artifact root: the configured store for the chief, a local one for other workers
        (so a run is logged once)."""
        if self.dist.is_chief:
            return self.cfg.tracking.uri, self.cfg.tracking.artifact_root
        worker = self.dist.worker
        return f"sqlite:///{self.output_dir}/worker{worker}-mlflow.db", str(self.output_dir / "mlartifacts")

    def log_inputs(self) -> None:
        """Datasets (lineage), the config files, model size, and the files data.on_bad_file=skip left out."""
        cfg = self.cfg
        checksum = (read_manifest(self.root) or {}).get("checksum")  # generated sets carry a sha256 manifest
        for split, samples in self.splits.items():
            tracking.log_dataset(cfg.data.name, str(self.root.resolve()), split, samples, checksum)
        if (self.output_dir / ".hydra").is_dir():  # a Hydra job's composed config (not from a notebook)
            tracking.log_dir(self.output_dir / ".hydra", "config")
        tracking.log_text(yaml.safe_dump(plain(cfg), sort_keys=False), "config/resolved.yaml")
        flops = sum(layer_flops(layer) for layer in self.model.layers) / 1e9
        counts = {"num_params": self.model.count_params(), "gflops": flops, "train_images": len(self.splits["train"])}
        tracking.log_metrics(counts)
        tracking.log_text(json.dumps(self.profile, indent=1), "data/profile.json")
        tracking.log_figure(profile_figure(self.profile), "data/profile.png")
        tracking.set_tags({"data_warnings": len(self.profile["warnings"]), "input_channels": self.input_channels})
        self.log_skipped()

    def log_skipped(self) -> None:
        """How many files data.on_bad_file=skip left out so far, and which (streamed splits find theirs mid-fit)."""
        tracking.log_metrics({"skipped_files": len(self.bad_files.skipped)})
        if self.bad_files.skipped:
            listing = "".join(f"{path}: {reason}\n" for path, reason in self.bad_files.skipped.items())
            tracking.log_text(listing, "data/skipped_files.txt")

    def record(self, tags: dict, params: dict, model_choice: str) -> float:
        """Fit and test inside one MLflow run (nested under its sweep's parent, named by what the sweep varies,
        the resumed run when resuming); returns the selected validation score (a pruned trial's last one)."""
        cfg = self.cfg
        uri, artifacts = self.store()  # only the chief records into the shared store
        parent = sweep.parent_run_id(self.place) if self.dist.is_chief else None  # a multirun job nests under it
        name = sweep.job_name(self.place) or cfg.tracking.run_name  # a sweep's child is named by what it varies
        tags = {**tags, **sweep.job_tags(self.place), "replicas": self.dist.replicas}  # devices x hosts
        try:
            where = (uri, cfg.tracking.experiment, name, artifacts, tags, parent, self.checkpoints.run_id)
            with tracking.run(*where, system_metrics=cfg.tracking.system_metrics) as run:
                if not self.checkpoints.resuming:  # a resumed run has its params, config, data and counts already
                    tracking.log_params(params)
                    self.log_inputs()
                self.fit(run.info.run_id)
                headline = self.test(model_choice)
        except tracking.Stopped:  # an Optuna sweep's trial, pruned: KILLED with its epochs so far
            self.checkpoints.discard()
            return self.pruned
        self.checkpoints.discard()  # the run is complete: nothing left to resume
        if self.dist.is_chief:  # the finished run's card, in the run and beside its checkpoint
            card.log(uri, run.info.run_id, self.checkpoint_path.parent, self.contract)
        link = tracking.ui_link(uri, run.info.experiment_id, run.info.run_id)
        averaged = "" if self.tta_headline is None else f" ({self.tta_headline:.4f} with tta={cfg.tta})"
        log.info("done: chosen by %s %.4f (validation); held-out test %s %.4f%s", self.monitor, self.selected,
                 self.task.headline, headline, averaged)  # fmt: skip
        log.info("checkpoint %s; job folder %s; run %s (cnn ui to browse)", self.checkpoint_path, self.output_dir,
                 link)  # fmt: skip
        return self.selected

    def fit(self, run_id: str) -> None:
        """Keras fit, phase by phase, with the best checkpoint (by the monitored metric, in its direction),
        backups and every epoch's metrics; then the kept epoch's model is loaded (the best one, or the last for
        a factory that keeps the last) and its validation score kept in `selected`: the value a sweep ranks by.
        A resumed run skips the phases its backups finished and goes on inside the one that was in flight."""
        checkpoints, phases = self.checkpoints, self.built.phases
        checkpoints.start(run_id)
        pruning = tuning.pruning_callbacks(self.monitor, self.mode, self.place)  # in an Optuna sweep's job: its trial
        current = checkpoints.latest_phase()  # 0 unless a later phase has a backup
        start = sum(p.epochs for p in phases[:current])
        try:
            for index in range(current, len(phases)):
                end = start + phases[index].epochs
                self.compile_phase(index)
                if index == current:  # trainer.jit_compile=auto resolved by Keras for this backend and device
                    tracking.set_tags({"jit_compile": str(bool(self.model.jit_compile)).lower()})
                if self.built.backbone is not None and checkpoints.done_epochs <= start:  # not replayed on resume
                    trainable, unfrozen = self.phase_weights
                    tracking.log_metrics({"trainable_params": trainable, "unfrozen_blocks": len(unfrozen)}, step=start)
                if end <= checkpoints.done_epochs and index + 1 < len(phases):  # finished before the run stopped
                    checkpoints.restore(self.model, index)
                else:
                    self.fit_phase(index, start, end, pruning)
                if pruning and pruning[0].pruned is not None:
                    break
                if any(stop is not None and stop.exhausted for stop in (self.budget, self.target)):
                    break  # the time budget or the target ends the run, not only the phase
                start = end
        finally:
            self.train_batches.close()
            self.val_batches.close()
        self.pruned = pruning[0].pruned if pruning else None
        if self.pruned is not None:  # its epochs so far are recorded; no test, no model
            tracking.set_tags({"pruned": "true", "pruned_at_epoch": self.pruned.epoch + 1})
            raise tracking.Stopped("KILLED", f"pruned by the Optuna study after epoch {self.pruned.epoch + 1}")
        self.log_skipped()
        for reason, stop in (("stop_at", self.target), ("max_time", self.budget), ("early_stopping", self.early)):
            if stop is not None and stop.stopped_epoch is not None:
                tracking.set_tags({"stopped_by": reason, "stopped_at_epoch": stop.stopped_epoch + 1})
                log.info("stopped by trainer.%s after epoch %d", reason, stop.stopped_epoch + 1)
                break
        if self.target is not None:  # time to target: reached, with its seconds, or not
            reached = self.target.seconds is not None
            tracking.set_tags({"target_reached": str(reached).lower()})
            if reached:
                tracking.log_metrics({"time_to_target_s": self.target.seconds})
                log.info("%s reached %g after epoch %d: %.1f s of training", self.monitor, self.target.value,
                         self.target.stopped_epoch + 1, self.target.seconds)  # fmt: skip
        last = self.built.keep == "last"
        self.checkpoint_path = self.output_dir / "checkpoints" / ("last.keras" if last else "best.keras")
        if last:  # the model in memory is the last epoch's
            self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.checkpoint_path)
        else:
            checkpoints.keep_best(self.checkpoint_path)
        self.dist.localize()  # several JAX processes: each tests its own copy of the kept model
        if not last or self.dist.processes > 1:
            self.model = keras.models.load_model(self.checkpoint_path)
        history = checkpoints.history()
        kept = len(history.get(self.monitor, [])) - 1 if last else None
        self.selected = log_selection(history, self.monitor, self.mode, kept=kept)  # what a sweep ranks by

    def stops(self, start: int) -> list[keras.callbacks.Callback]:
        """The recipes that end a phase early: trainer.early_stopping (its patience counted over this phase's
        epochs, the resumed ones included) and trainer.max_time (one budget over every phase)."""
        found: list[keras.callbacks.Callback] = []
        patience = (self.cfg.trainer.get("early_stopping") or {}).get("patience")
        if patience:
            earlier = self.checkpoints.history().get(self.monitor, [])[start:]
            min_delta = float(self.cfg.trainer.early_stopping.get("min_delta") or 0.0)
            self.early = EarlyStop(self.monitor, self.mode, int(patience), min_delta, earlier)
            found.append(self.early)
        if self.budget is not None:
            found.append(self.budget)
        stop_at = self.cfg.trainer.get("stop_at")
        if stop_at is not None:
            self.target = self.target or Target(self.monitor, self.mode, float(stop_at))  # one over every phase
            found.append(self.target)
        return found

    def fit_phase(self, index: int, start: int, end: int, pruning: list) -> None:
        """Epochs start..end-1 of phase `index` (a backup of this phase, when resuming, is restored first)."""
        cfg, checkpoints = self.cfg, self.checkpoints
        # Keras advances a PyDataset's epoch between the epochs of one fit, not at its end: a phase starts its own
        self.train_batches.epoch = max(start, checkpoints.done_epochs)
        self.model.fit(
            self.train_batches,
            validation_data=self.val_batches,
            initial_epoch=start,
            epochs=end,
            verbose=progress_verbosity(cfg.trainer.verbose),
            shuffle=False,  # ImageBatches shuffles, by (seed, epoch), so a resumed run sees the same batches
            callbacks=[
                StopOnDataError(self.train_batches, self.val_batches),  # first: before anything records
                StopOnNonFiniteLoss(cfg.optimizer.lr, checkpoints.folder),
                CheckMonitor(self.monitor),
                Throughput(len(self.splits["train"])),  # before the callbacks that record each epoch's logs
                *checkpoints.callbacks(
                    self.monitor,
                    self.mode,
                    index,
                    best=self.built.keep == "best",
                    ema=bool(cfg.optimizer.get("use_ema")),
                ),  # fmt: skip
                tracking.MetricsCallback(),
                *self.extra_callbacks,
                *self.stops(start),  # after the epoch is recorded
                *pruning,  # last: the epoch is recorded before the trial may stop here
            ],
        )

    def served_inputs(self, mapped: np.ndarray) -> tuple[list, dict]:
        """(input example, preprocessing record) of the logged model: the first test files' bytes as base64 (what
        a client sends: the served model reads them as `cnn predict` reads files), or the first test images'
        values where the split has no files (bundled sets)."""
        import base64

        mapping = served_mapping(self.intensity, self.profile["kinds"])
        preprocessing = {"channels": self.input_channels, "intensity": mapping.as_dict() if mapping else None}
        items = getattr(self.indexes["test"], "items", None)
        if items:
            return [base64.b64encode(Path(path).read_bytes()).decode("ascii") for path, _ in items[:2]], preprocessing
        return list(mapped), preprocessing

    def test(self, model_choice: str) -> float:
        """Scores and pictures of the test split (the chosen model's held-out estimate), the training curves,
        and the model; returns the test headline."""
        cfg = self.cfg
        test = self.splits["test"]  # streamed batch by batch from its files, or cached
        batch, examples = self.dist.global_batch(cfg.trainer.batch_size), cfg.tracking.num_examples
        read = {"bad": self.bad_files, "workers": self.workers}
        ignore = cfg.loss.get("ignore_label")
        headline, self.tta_headline = test_and_log(self.model, self.task, test, self.classes, batch, examples, ignore,
                                                   cfg.get("tta", "none"), **read)  # fmt: skip
        if cfg.data.get("test_shifts"):
            shifts = list(cfg.data.test_shifts)
            shift_curve(self.model, self.task, test, self.classes, batch, shifts, model_choice, **read)
        tracking.log_figure(viz.training_curves(self.checkpoints.history()), "plots/training_curves.png")
        target = target_of(self.task.target)
        example, preprocessing = self.served_inputs(next(scoring.batches(test, 2, self.bad_files))[1])
        run_id, digests = tracking.active_run_datasets()
        data = {"name": cfg.data.name, "train_digest": digests.get(f"{cfg.data.name}-train")}
        terms = contract.describe(self.model.inputs[0].shape[1:], self.classes, self.task.name, target.served_output,
                                  target.served_meaning, preprocessing["intensity"], run_id, data,
                                  {"name": f"test_{self.task.headline}", "value": headline})  # fmt: skip
        contract.write(terms, self.checkpoint_path.parent)  # beside the checkpoint: `cnn export source=<.keras>`
        self.contract = terms
        if cfg.tracking.log_model:
            tracking.log_keras_model(self.model, example, output=target.served_output, contract=terms)
        return headline
