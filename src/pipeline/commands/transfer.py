"""Transfer stage: the lecture's recipe — train on a large set, then reuse the network on a small one.

    cnn transfer transfer.source=<run id> transfer.strategy=feature_extraction
    cnn transfer transfer.source=MobileNetV2 transfer.weights=mnv2.weights.h5 transfer.alpha=0.35
    cnn transfer data=shapes transfer.source=path/to/resnet_preset transfer.strategy=fine_tune   # KerasHub
    cnn transfer -m experiment=transfer_study          # strategy x k, then pipeline.commands.transfer_study

Strategies (scratch, feature_extraction, fine_tune, full) are described in pipeline.training.transfer. It
trains through the train stage's Job with the transfer factory, so it streams, resumes (trainer.resume),
prunes, distributes and logs alike. Batch norm in a reused backbone always runs in inference mode. The
last epoch is kept (no checkpoint picked on a validation set that may be larger than the training set);
its validation score is what the stage returns and a sweep ranks by (selection_<monitor>), its test score
the held-out estimate.
"""

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from pipeline.config import job_place, stage_main


@stage_main("transfer")
def main(cfg: DictConfig) -> float:
    from pipeline.config.schema import check_schema

    check_schema(cfg)  # not the train stage's model checks: the model here comes from transfer.source
    from pipeline import tracking
    from pipeline.sweeps import sweep

    tracking.check_reachable(cfg.tracking.uri)
    place = job_place()
    if (recorded := sweep.finished_job(place)) is not None:  # a resumed sweep: this job FINISHED before
        return recorded
    if sweep.resuming(place):
        cfg.trainer.resume = True
    import keras

    from pipeline.config.spec import spec
    from pipeline.training import transfer
    from pipeline.training.job import Job
    from pipeline.training.runtime import configure_distribution, configure_runtime

    keras.utils.clear_session()  # a multirun runs its jobs in one process
    dist = configure_distribution(cfg.trainer.strategy, cfg.trainer.memory_growth)
    precision = configure_runtime(cfg.seed, cfg.trainer.precision, cfg.trainer.deterministic)
    job = Job(spec(cfg), dist, place=place, factory=transfer.factory)  # the source's backbone under a new head
    job.output_dir = Path(HydraConfig.get().runtime.output_dir)
    t, k = cfg.transfer, cfg.data.get("k_per_class")
    tags = {"stage": "transfer", "task": job.task.name, "data": cfg.data.name, "strategy": t.strategy}
    tags.update({"source": str(t.source), "k_per_class": str(k if k is not None else "all"), "precision": precision})
    tags.update(job.built.tags)  # source_run, when the source is a run
    if place.sweep_dir:  # lets pipeline.commands.transfer_study find the runs of one sweep
        tags["sweep_dir"] = str(place.sweep_dir.resolve())
    params = OmegaConf.to_container(cfg, resolve=True)
    params.pop("model")  # the transfer stage's model is the source's backbone plus a new head
    return job.record(tags, params, f"transfer_{t.strategy}")


if __name__ == "__main__":
    main()
