"""Register stage: a run's logged model becomes a new version of a registered model in the MLflow registry.

    cnn register source=<run id> name=shapes-unet alias=champion
    cnn evaluate source=models:/shapes-unet@champion      # any stage, by alias or version
A sweep registers its best child itself with `sweep.register=<name>` (alias champion). Nothing half-written
is left: the alias is checked before anything is written, and a version whose alias fails is deleted.
"""

import logging

from omegaconf import DictConfig

from pipeline.config import stage_main

log = logging.getLogger(__name__)


@stage_main("register")
def main(cfg: DictConfig) -> None:
    from pipeline.config.schema import check_schema

    check_schema(cfg)
    import mlflow

    from pipeline import tracking
    from pipeline.errors import DataError

    tracking.use_store(cfg.tracking.uri)
    source = str(cfg.source)
    try:
        run_id = source if "/" not in source else tracking.load_model(source, cfg.tracking.uri)[1]
        version = tracking.register_model(run_id, str(cfg.name), cfg.alias, tags={"source_run": run_id})
    except mlflow.exceptions.MlflowException as err:
        raise DataError(f"source={source!r}: {str(err).splitlines()[0]}; valid: a run id of this pipeline") from None
    alias = f" as {cfg.name}@{cfg.alias}" if cfg.alias else ""
    log.info("registered run %s's model as %s version %s%s", run_id, cfg.name, version.version, alias)
    print(f"models:/{cfg.name}/{version.version}" + (f"  (models:/{cfg.name}@{cfg.alias})" if cfg.alias else ""))


if __name__ == "__main__":
    main()
