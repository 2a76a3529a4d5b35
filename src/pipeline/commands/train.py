"""Training stage: data -> model -> Keras fit (best checkpoint kept) -> test evaluation -> MLflow.

    cnn train                          # the default shapes U-Net (`make train`)
    cnn train --cfg job                # print the config
    cnn train -m optimizer.lr=1e-3,3e-4
Every task (segmentation masks, classification labels, localization boxes) trains the same way. The value
returned to Hydra sweepers is the validation score the run is chosen by (trainer.monitor at the kept epoch,
metric selection_<monitor>): sweeps, pipeline.commands.compare and sweep.register never see the test split, whose
scores (test_*) are logged as the chosen model's held-out estimate.
The library is imported inside main, so --help and --cfg answer before TensorFlow loads.
"""

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.config import job_place, stage_main

log = logging.getLogger(__name__)


@stage_main("config")
def main(cfg: DictConfig) -> float:
    from pipeline.config.schema import check_schema, dry_build

    check_schema(cfg)  # before TensorFlow loads: a bad override answers at once
    from pipeline import tracking
    from pipeline.sweeps import sweep

    tracking.check_reachable(cfg.tracking.uri)  # a server nobody runs: one line before any data is read
    place = job_place()  # its sweep folder and number in a multirun, and its overrides
    if (recorded := sweep.finished_job(place)) is not None:  # a resumed sweep: this job FINISHED before
        return recorded
    if sweep.resuming(place):  # a job killed part-way continues its own run from its last backed-up epoch
        cfg.trainer.resume = True
    from pipeline.config.spec import spec
    from pipeline.training.job import Job
    from pipeline.training.runtime import configure_distribution, configure_runtime

    # collective ops need a fresh TensorFlow runtime, before the dry build of the model
    dist = configure_distribution(cfg.trainer.strategy, cfg.trainer.memory_growth)
    dry_build(cfg)  # impossible conv arithmetic stops here, naming the layer
    precision = configure_runtime(cfg.seed, cfg.trainer.precision, cfg.trainer.deterministic)
    job = Job(spec(cfg), dist, place=place)  # data read and checked, model built and compiled, resume folder opened
    hydra_cfg = HydraConfig.get()
    job.output_dir = Path(hydra_cfg.runtime.output_dir)
    # the config's name (vgg11) rather than its builder's (convnet), so the zoo compares cleanly
    model_choice = hydra_cfg.runtime.choices.get("model", cfg.model.name)
    tags = {"stage": "train", "task": job.task.name, "model": model_choice, "builder": cfg.model.name}
    tags.update({"data": cfg.data.name, "precision": precision})  # precision: what auto chose
    return job.record(tags, OmegaConf.to_container(cfg, resolve=True), model_choice)


if __name__ == "__main__":
    main()
