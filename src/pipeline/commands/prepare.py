"""Data prep stage: generate the synthetic shapes set (or check a user's folder) described by conf/data.

cnn prepare                      # data/shapes, skipped when already current
cnn prepare data.splits.train=5000 data.generator.seed=1
"""

from omegaconf import DictConfig

from pipeline.config import stage_main


@stage_main("config")
def main(cfg: DictConfig) -> None:
    from pipeline.config.schema import check_schema

    check_schema(cfg)
    from pipeline.data.sources import prepare_data

    prepare_data(cfg.data)


if __name__ == "__main__":
    main()
