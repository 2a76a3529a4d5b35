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
    from pipeline.data.samples import decode_all, worker_count
    from pipeline.data.sources import class_names, prepare_data, split_samples
    from pipeline.deploy import card, contract, exporting
    from pipeline.deploy.serving import Predictor
    from pipeline.errors import ConfigError, DataError
    from pipeline.tasks import get_task
    from pipeline.tasks.scoring import evaluate

    name = str(cfg.format)
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
    folder = Path(cfg.output_dir) / export_name(str(cfg.source), source_run) / name
    if folder.exists():
        log.info("replacing the earlier %s export of this source in %s", name, folder)
    log.info("exporting %s as %s to %s", model.name, name, folder)
    terms = tracking.load_contract(str(cfg.source), cfg.tracking.uri)
    if terms is None:  # a model logged or saved without one: only its input is known
        log.warning("source=%s carries no contract (class names, intensity mapping): the export describes only "
                    "its input", cfg.source)  # fmt: skip
        terms = contract.describe(expected, [], "unknown", "outputs", "the model's main output", None, source_run)
    served = exporting.serving_model(model)  # float32, main output: built once for the export and its checks
    path = exporting.export(served, name, folder, terms)
    keras_outputs = Predictor(served, cfg.batch_size).predict(images)
    found = exporting.compare(served, name, path, images, cfg.batch_size, cfg.tolerance, keras_outputs)
    gap, runtime = found.max_abs_diff, exporting.FORMATS[name].runtime
    print(f"parity_max_abs_diff={gap:.3g} ({runtime} vs Keras, {len(images)} {cfg.split} images of {data.name}: "
          f"{found.line(cfg.tolerance)})")  # fmt: skip
    scores = None
    if cfg.max_metric_delta is not None and data.get("task"):  # the metric gate: the whole split, both runtimes
        task = get_task(data.task)
        classes = terms["class_names"] or class_names(data, prepare_data(data, progress=False))
        ignore = ((source or {}).get("loss") or {}).get("ignore_label") if cfg.use_source_data and source_run else None
        options = {"batch_size": cfg.batch_size, "num_examples": 0, "ignore_label": ignore, "confidence": False,
                   "workers": worker_count(data.get("workers", "auto"))}  # fmt: skip
        keras_value = evaluate(task, served, indexed, classes, desc="scoring with Keras", **options).value
        exported = exporting.Exported(name, path)
        exported_value = evaluate(task, exported, indexed, classes, desc=f"scoring with {runtime}", **options).value
        scores = (f"{cfg.split}_{task.headline}", keras_value, exported_value, len(indexed))
        delta = exported_value - keras_value
        print(f"{scores[0]}: {exported_value:.4f} ({runtime}) vs {keras_value:.4f} (Keras) on {len(indexed)} "
              f"{cfg.split} images: delta {delta:+.4f} (max_metric_delta={cfg.max_metric_delta})")  # fmt: skip
    tags = {"stage": "export", "format": name, "source": str(cfg.source), "runtime": runtime}
    with tracking.run(
        cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name, cfg.tracking.artifact_root, tags, source_run
    ):
        tracking.log_params({"source": cfg.source, "format": name, "split": cfg.split, "num_images": len(images)})
        tracking.log_metrics({"parity_max_abs_diff": gap, "parity_values_over_tolerance": found.values_over})
        if found.class_agreement is not None:
            tracking.log_metrics({"parity_class_agreement": found.class_agreement})
        mixed = exporting.precision_gap(model, images, cfg.batch_size, keras_outputs)
        if mixed is not None:  # trained in bfloat16 or float16
            tracking.log_metrics({"float32_vs_trained_max_abs_diff": mixed})
            policy = next(layer.dtype_policy.name for layer in model.layers if layer.dtype_policy.name != "float32")
            log.info("exported in float32; the model was trained in %s: outputs move by up to %.3g", policy, mixed)
        if path.is_dir():
            tracking.log_dir(path, f"export/{name}/{path.name}")
        else:
            tracking.log_artifact(path, f"export/{name}")
        tracking.log_text(json.dumps(terms, indent=1), f"export/{name}/{contract.CONTRACT_FILE}")
        if gap > cfg.tolerance:
            raise DataError(
                f"format={name}: the export differs from the Keras model beyond tolerance={cfg.tolerance} on "
                f"{len(images)} {cfg.split} images ({found.line(cfg.tolerance)}); the artefact is logged for "
                "inspection; tolerance=<bigger> accepts it"
            )
        if scores is not None:
            metric, keras_value, exported_value, count = scores
            tracking.log_metrics({f"{metric}_keras": keras_value, f"{metric}_exported": exported_value,
                                  "metric_images": count})  # fmt: skip
            delta = exporting.metric_gate(name, metric, keras_value, exported_value, cfg.max_metric_delta)
            tracking.log_metrics({"metric_delta": delta})
    if source_run:  # the source's card lists this export's parity and metric delta
        card.log(cfg.tracking.uri, source_run)
    log.info("%s written to %s and logged (max |diff| %.3g)", name, path, gap)
    return gap


if __name__ == "__main__":
    main()
