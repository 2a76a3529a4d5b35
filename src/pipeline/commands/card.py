"""Card stage: print a trained model's card, rebuilt from what its run holds now (its exports included).

    cnn card source=<run id>
    cnn card source=models:/shapes-unet@champion
    cnn card source=outputs/.../checkpoints/best.keras json=true
The card (pipeline.deploy.card) is logged with every trained model as model_card.md and model_card.json; this
command rebuilds it (exports made since are added) and, with refresh=true, logs it back to the run. A .keras
file's card comes from its run when the store has that run, else from model_card.json beside the file.
"""

import logging

from omegaconf import DictConfig

from pipeline.config import stage_main

log = logging.getLogger(__name__)


@stage_main("card")
def main(cfg: DictConfig) -> None:
    from pipeline.config.schema import check_schema

    check_schema(cfg)
    import json
    from pathlib import Path

    from pipeline import tracking
    from pipeline.deploy import card, contract
    from pipeline.errors import DataError

    source, uri = str(cfg.source), cfg.tracking.uri
    path = Path(source)
    run_id = None
    if source.endswith(".keras") or path.is_file():
        if not path.is_file():
            raise DataError(f"{source}: model file not found")
        run_id = (contract.read(path.parent) or {}).get("source_run")
        if run_id is None or tracking.get_run(uri, run_id) is None:
            beside = path.parent / card.CARD_JSON
            if not beside.is_file():
                found = ", ".join(sorted(p.name for p in path.parent.iterdir())) or "nothing"
                raise DataError(f"{source}: no {card.CARD_JSON} beside it and its run {run_id} is not in the store at "
                                f"{uri}; beside it: {found}")  # fmt: skip
            shown = json.loads(beside.read_text())
            print(json.dumps(shown, indent=1) if cfg.json else card.markdown(shown), end="")
            return
    else:
        run_id = tracking.model_run(source, uri)
    shown = card.log(uri, run_id) if cfg.refresh else card.for_run(uri, run_id)
    print(json.dumps(shown, indent=1) if cfg.json else card.markdown(shown), end="")


if __name__ == "__main__":
    main()
