"""Export stage: a trained model as a SavedModel, an ONNX file or a LiteRT flatbuffer, run by that format's own
runtime on the source run's test images and compared with Keras.

    cnn export source=<run id | models:/shapes-unet@champion | file.keras> format=onnx
Writes <output_dir>/<source>/<format>/ (a run id, a model name@alias or -v<version>, a file's stem: exports of
other sources are never overwritten; re-exporting a source replaces its own files and says so) and decodes
only the `num_images` test images it checks, none of the training data.
The artefact carries the source's contract (pipeline.deploy.contract: input name `images`, size, channels,
value range and intensity mapping, class names, output, lineage) in the format's own place. Logs to a run
nested under the source: the artefact (export/<format>/), its contract.json, the metric parity_max_abs_diff
(max |exported - Keras| over every output value) and the runtime's name. Exports compute in float32: a model
trained in mixed precision is exported with its float32 weights, compared with Keras in float32, and the
metric float32_vs_trained_max_abs_diff says how far that moves its outputs. A gap above `tolerance` (1e-4)
ends the run FAILED with the figure; a model the format cannot take is refused in one line naming the
layer and why. Formats go through TensorFlow (pipeline.deploy.exporting): under another backend the stage
re-runs itself with KERAS_BACKEND=tensorflow when TensorFlow is installed.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline.config import stage_main

log = logging.getLogger(__name__)


def export_name(source: str, run_id: str | None) -> str:
    """The folder of one source's exports: models:/shapes-unet@champion -> shapes-unet@champion, a run id as it
    is, a file by its stem; so exporting another model never overwrites this one's files."""
    if source.startswith("models:/"):
        return source.removeprefix("models:/").replace("/", "-v")
    if source.endswith(".keras") or "/" in source:
        return Path(source).stem
    return run_id or source


def _rerun_on_tensorflow(backend: str) -> None:
    """The formats' converters are TensorFlow's; Keras' backend is fixed once imported: a fresh process."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    log.info("Keras runs on %s here: exporting in a TensorFlow-backend process", backend)
    raise SystemExit(subprocess.call([sys.executable, "-m", "pipeline.commands.export", *sys.argv[1:]], env=env))


@stage_main("export")
def main(cfg: DictConfig) -> float:
    import importlib.util

    import keras

    from pipeline.config.schema import check_schema

    check_schema(cfg)
    if keras.config.backend() != "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
        _rerun_on_tensorflow(keras.config.backend())
    from pipeline import tracking
    from pipeline.data.samples import decode_all
    from pipeline.data.sources import prepare_data, split_samples
    from pipeline.deploy import card, contract, exporting
    from pipeline.errors import ConfigError, DataError

    names = list(exporting.FORMATS) if cfg.format == "all" else [str(cfg.format)]
    if cfg.artefact is not None and len(names) > 1:
        raise ConfigError(f"artefact={cfg.artefact} names one file: give its format (format=onnx), not format=all")
    for name in names:  # every format's packages before any work
        exporting.check_requirements(name)
    model, source_run = tracking.load_model(str(cfg.source), cfg.tracking.uri)
    data, source = cfg.data, None
    if cfg.use_source_data and source_run and (source := tracking.load_run_config(source_run)):
        data = OmegaConf.create(source["data"])
    indexed = split_samples(data, prepare_data(data, progress=False), cache=False)[cfg.split]  # an index: no decoding
    picked = indexed.subset(range(min(cfg.num_images, len(indexed))))
    images, _ = decode_all(picked, desc=f"decoding {cfg.split}").arrays()  # only the images the check runs on
    expected = tuple(model.inputs[0].shape[1:])
    if images.shape[1:] != expected:
        raise ConfigError(f"data.image_size gives {images.shape[1:]} images but the model expects {expected}")
    terms = tracking.load_contract(str(cfg.source), cfg.tracking.uri)
    if terms is None:  # a model logged or saved without one: only its input is known
        log.warning("source=%s carries no contract (class names, intensity mapping): the export describes only "
                    "its input", cfg.source)  # fmt: skip
        terms = contract.describe(expected, [], "unknown", "outputs", "the model's main output", None, source_run)
    checked = Checked(cfg, model, source_run, source, data, indexed, images, terms)
    rows, failed = [], []
    for name in names:
        try:
            rows.append(checked.format(name))
        except (ConfigError, DataError) as err:  # format=all: every format is tried, its failure tabled
            if len(names) == 1:
                raise
            rows += [checked.last_row] if checked.last_row else []
            failed.append(str(err))
    if len(names) > 1:
        table = exporting.table(rows, checked.keras_row(), f"{cfg.split}_{checked.headline}")
        folder = Path(cfg.output_dir) / export_name(str(cfg.source), source_run)
        (folder / "formats.md").write_text(table)
        print("\n" + table)
        if source_run:
            tracking.client(cfg.tracking.uri).log_text(source_run, table, "export/formats.md")
    if source_run:  # the source's card lists each export's parity and metric delta
        card.log(cfg.tracking.uri, source_run)
    if failed:
        raise DataError(f"format=all: {len(failed)} of {len(names)} formats failed: " + " | ".join(failed))
    return max((row.parity for row in rows), default=float("nan"))


class Checked:
    """One source's exports, each checked in its own run nested under the source: parity on `images`, the
    metric gate on the whole split (streamed), latency; `last_row` is the row of the latest format, failed
    or not."""

    def __init__(self, cfg, model, source_run, source, data, indexed, images, terms):
        from pipeline.deploy import exporting
        from pipeline.deploy.serving import Predictor
        from pipeline.tasks import get_task

        self.cfg, self.model, self.source_run, self.data = cfg, model, source_run, data
        self.indexed, self.images, self.terms = indexed, images, terms
        self.served = exporting.serving_model(model)  # float32, main output: built once for every format
        self.keras_outputs = Predictor(self.served, cfg.batch_size).predict(images)
        self.task = get_task(data.task) if data.get("task") else None
        self.headline = self.task.headline if self.task else "metric"
        self.ignore = ((source or {}).get("loss") or {}).get("ignore_label") if cfg.use_source_data else None
        self._keras_value = None
        self.last_row = None

    def score(self, runner, desc: str) -> float:
        from pipeline.data.samples import worker_count
        from pipeline.data.sources import class_names, prepare_data
        from pipeline.tasks.scoring import evaluate

        classes = self.terms["class_names"] or class_names(self.data, prepare_data(self.data, progress=False))
        workers = worker_count(self.data.get("workers", "auto"))
        return evaluate(self.task, runner, self.indexed, classes, self.cfg.batch_size, num_examples=0,
                        ignore_label=self.ignore, confidence=False, workers=workers, desc=desc).value  # fmt: skip

    def keras_value(self) -> float:
        if self._keras_value is None:
            self._keras_value = self.score(self.served, "scoring with Keras")
        return self._keras_value

    def mixed_gap(self) -> float | None:
        """How far float32 moves a mixed-precision model's outputs (None for a float32 model): once per source."""
        from pipeline.deploy import exporting

        if not hasattr(self, "_mixed"):
            self._mixed = exporting.precision_gap(self.model, self.images, self.cfg.batch_size, self.keras_outputs)
        return self._mixed

    def keras_row(self):
        from pipeline.deploy import exporting

        timing = exporting.latency(self.served.predict_on_batch, self.images, self.cfg.latency_runs)
        value = self.keras_value() if self.task and self.cfg.max_metric_delta is not None else None
        return exporting.Row("keras (float32)", None, 0.0, value, None, timing, "reference")

    def format(self, name: str):
        """Export (or take `artefact`), check, log in a run of its own; the row, or a DataError after logging
        every figure when parity or the metric gate fails."""
        from pipeline import tracking
        from pipeline.deploy import contract, exporting
        from pipeline.errors import DataError

        cfg, images = self.cfg, self.images
        self.last_row = None
        folder = Path(cfg.output_dir) / export_name(str(cfg.source), self.source_run) / name
        runtime = exporting.FORMATS[name].runtime
        if cfg.artefact is not None:
            path = Path(str(cfg.artefact))
            log.info("checking %s as %s against %s", path, name, cfg.source)
        else:
            if folder.exists():
                log.info("replacing the earlier %s export of this source in %s", name, folder)
            log.info("exporting %s as %s to %s", self.model.name, name, folder)
            path = exporting.export(self.served, name, folder, self.terms)
        exported = exporting.Exported(name, path)  # loaded once: a file its runtime refuses is one line here
        found = exporting.compare(self.served, name, path, images, cfg.batch_size, cfg.tolerance, self.keras_outputs,
                                  exported)  # fmt: skip
        gap = found.max_abs_diff
        print(f"{name}: parity_max_abs_diff={gap:.3g} ({runtime} vs Keras, {len(images)} {cfg.split} images of "
              f"{self.data.name}: {found.line(cfg.tolerance)})")  # fmt: skip
        metric, value, delta = f"{cfg.split}_{self.headline}", None, None
        if cfg.max_metric_delta is not None and self.task is not None:  # the gate: the whole split, both runtimes
            value = self.score(exported, f"scoring with {runtime}")
            delta = value - self.keras_value()
            print(f"{name}: {metric} {value:.4f} ({runtime}) vs {self.keras_value():.4f} (Keras) on "
                  f"{len(self.indexed)} {cfg.split} images: delta {delta:+.4f} (max_metric_delta="
                  f"{cfg.max_metric_delta})")  # fmt: skip
        timing = exporting.latency(exported.run, images, cfg.latency_runs)
        problems = []
        if gap > cfg.tolerance:
            problems.append(
                f"format={name}: the export differs from the Keras model beyond tolerance="
                f"{cfg.tolerance} on {len(images)} {cfg.split} images ({found.line(cfg.tolerance)})"
            )
        if delta is not None and (failed := exporting.metric_gate(name, metric, self.keras_value(), value,
                                                                   cfg.max_metric_delta)):  # fmt: skip
            problems.append(failed)
        self.last_row = exporting.Row(name, exporting.size_on_disk(path), gap, value, delta, timing,
                                      "FAILED" if problems else "passed")  # fmt: skip
        tags = {"stage": "export", "format": name, "source": str(cfg.source), "runtime": runtime}
        with tracking.run(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name,
                          cfg.tracking.artifact_root, tags, self.source_run):  # fmt: skip
            params = {"source": cfg.source, "format": name, "split": cfg.split, "num_images": len(images)}
            tracking.log_params({**params, "artefact": str(cfg.artefact) if cfg.artefact else "exported"})
            tracking.log_metrics({"parity_max_abs_diff": gap, "parity_values_over_tolerance": found.values_over,
                                  "size_bytes": self.last_row.size, **timing.metrics()})  # fmt: skip
            if found.class_agreement is not None:
                tracking.log_metrics({"parity_class_agreement": found.class_agreement})
            mixed = self.mixed_gap()
            if mixed is not None:  # trained in bfloat16 or float16
                tracking.log_metrics({"float32_vs_trained_max_abs_diff": mixed})
                policy = next(p.dtype_policy.name for p in self.model.layers if p.dtype_policy.name != "float32")
                log.info("exported in float32; the model was trained in %s: outputs move by up to %.3g", policy, mixed)
            if path.is_dir():
                tracking.log_dir(path, f"export/{name}/{path.name}")
            else:
                tracking.log_artifact(path, f"export/{name}")
            tracking.log_text(json.dumps(self.terms, indent=1), f"export/{name}/{contract.CONTRACT_FILE}")
            if value is not None:
                tracking.log_metrics({f"{metric}_keras": self.keras_value(), f"{metric}_exported": value,
                                      "metric_images": len(self.indexed), "metric_delta": delta})  # fmt: skip
            if problems:
                raise DataError("; ".join(problems) + "; the artefact is logged for inspection; tolerance=<bigger> "
                                "or max_metric_delta=<bigger> accepts it")  # fmt: skip
        log.info("%s written to %s and logged (max |diff| %.3g)", name, path, gap)
        return self.last_row


if __name__ == "__main__":
    main()
