"""A model card: what a trained model is, what it takes, how well it does and where it came from, in one page.

Logged with every trained model (`model_card.md` and `model_card.json` in its run, and beside its checkpoint)
and refreshed when the model is exported (each export's parity and metric delta). `cnn card source=...`
prints it for a run id, `models:/name@alias`, `models:/name/version` or a `.keras` file. Sections, after
Mitchell et al., "Model Cards for Model Reporting" (FAT* 2019), as far as a pipeline can know them: model
details, intended input, data, metrics (validation: what chose the model; test: the held-out estimate with
its bootstrap interval over images), per-class scores, configuration, lineage, exports.

`build` is a plain function of what a run recorded; `for_run` reads that from an MLflow store.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

CARD_JSON, CARD_MARKDOWN = "model_card.json", "model_card.md"
VERSION = 1
CONFIG_SECTIONS = ("model", "optimizer", "trainer", "loss", "augment", "seed")  # what made the model
LINEAGE_TAGS = {"git.commit": "code commit", "git.dirty": "uncommitted changes", "system.backend": "backend",
                "system.keras": "Keras", "system.devices": "devices", "transfer_source": "transferred from",
                "mlflow.parentRunId": "sweep parent run"}  # fmt: skip


def per_class(metrics: dict[str, float], class_names: list[str], prefix: str = "test") -> dict[str, dict[str, float]]:
    """{class: {score: value}} from metrics named <prefix>_<score>_<class> (test_iou_circle,
    test_recall_7, test_mae_circle); a longer class name claims its metrics before a shorter one it ends with."""
    found: dict[str, dict[str, float]] = {}
    claimed: set[str] = set()
    for name in sorted(class_names, key=len, reverse=True):
        for key, value in sorted(metrics.items()):
            if key in claimed or not key.startswith(f"{prefix}_") or not key.endswith(f"_{name}"):
                continue
            score = key[len(prefix) + 1 : -len(name) - 1]
            if score and not score.endswith("_ci"):
                found.setdefault(name, {})[score] = value
                claimed.add(key)
    return {name: found[name] for name in class_names if name in found}


def build(run: dict, contract: dict | None, config: dict | None, profile: dict | None, exports: list[dict]) -> dict:
    """The card of a run (pipeline.tracking's plain run dict: run_id, run_name, status, start_time, tags,
    params, metrics), its model's contract, resolved config, data profile and its export runs."""
    metrics, tags = run["metrics"], run["tags"]
    contract = contract or {}
    headline = tags.get("headline_metric", "")
    selection = tags.get("selection_metric", "")
    classes = contract.get("class_names") or []
    config = config or {}
    return {
        "card_version": VERSION,
        "model": {
            "architecture": (config.get("model") or {}).get("name") or run["params"].get("model.name"),
            "task": contract.get("task") or tags.get("task"),
            "run_id": run["run_id"],
            "run_name": run["run_name"],
            "status": run["status"],
            "trained": datetime.fromtimestamp(run["start_time"] / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "parameters": int(metrics["num_params"]) if "num_params" in metrics else None,
        },
        "input": {**contract.get("input", {}), "class_names": classes},
        "output": contract.get("output", {}),
        "data": {
            "name": (contract.get("data") or {}).get("name") or tags.get("data"),
            "train_digest": (contract.get("data") or {}).get("train_digest"),
            "splits": {split: info.get("count") for split, info in ((profile or {}).get("splits") or {}).items()},
            "warnings": list((profile or {}).get("warnings") or []),
        },
        "validation": {
            "metric": selection,
            "mode": tags.get("selection_mode"),
            "value": metrics.get(selection),
            "epoch": _whole(metrics.get("selection_epoch")),
        },  # fmt: skip
        "test": {
            "metric": headline,
            "value": metrics.get(headline),
            "ci_low": metrics.get(f"{headline}_ci_low"),
            "ci_high": metrics.get(f"{headline}_ci_high"),
            "confidence": 0.95,
            "images": _whole(metrics.get(headline.split("_", 1)[0] + "_images")) if headline else None,
            "scores": {k: v for k, v in sorted(metrics.items()) if k.startswith("test_") and "_ci_" not in k},
        },
        "per_class": per_class(metrics, classes),
        "config": {key: config[key] for key in CONFIG_SECTIONS if key in config},
        "lineage": {label: tags[tag] for tag, label in LINEAGE_TAGS.items() if tag in tags},
        "exports": [
            {
                "format": e["tags"].get("format"),
                "run_id": e["run_id"],
                "status": e["status"],
                "parity_max_abs_diff": e["metrics"].get("parity_max_abs_diff"),
                "metric_delta": e["metrics"].get("metric_delta"),
                **{k: v for k, v in e["metrics"].items() if k.endswith(("_keras", "_exported"))},
            }
            for e in exports
        ],
    }


def _whole(value) -> int | None:
    return None if value is None else int(value)


def _number(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def markdown(card: dict) -> str:
    """The card as a Markdown page."""
    model, test, val, data = card["model"], card["test"], card["validation"], card["data"]
    shape = card["input"].get("shape") or []
    lines = [
        f"# Model card: {model['architecture']} ({model['task']})",
        "",
        f"Run `{model['run_id']}` ({model['run_name']}, {model['status']}), trained {model['trained']}; "
        f"{_number(model['parameters'])} parameters.",
        "",
        "## Intended input",
        "",
    ]
    if shape:
        intensity = card["input"].get("intensity")
        lines += [
            f"- input `{card['input']['name']}`: {card['input']['dtype']} {card['input']['layout']} "
            f"{shape[1]}x{shape[2]}x{shape[3]} ({card['input']['color']}), values 0..255; {card['input']['resize']}",
            f"- intensity of the files' values: {json.dumps(intensity) if intensity else '8-bit values as they are'}",
            f"- output `{card['output'].get('name')}`: {card['output'].get('meaning')}",
        ]
    lines += [f"- classes: {', '.join(card['input']['class_names']) or '–'}", "", "## Data", ""]
    splits = ", ".join(f"{split} {count}" for split, count in data["splits"].items())
    lines += [f"- {data['name']}: {splits or 'splits not profiled'}; training split digest {data['train_digest']}"]
    lines += [f"- warning: {w}" for w in data["warnings"]]
    interval = ""
    if test["ci_low"] is not None:
        interval = f" (95 % bootstrap interval over test images: {_number(test['ci_low'])}..{_number(test['ci_high'])})"
    lines += [
        "",
        "## Metrics",
        "",
        f"- chosen by {val['metric']} ({val['mode']}) = {_number(val['value'])} at epoch {_number(val['epoch'])} "
        "(validation split)",
        f"- held-out test: {test['metric']} = {_number(test['value'])}{interval}"
        + (f", {int(test['images'])} images" if test["images"] else ""),
    ]
    if card["per_class"]:
        scores = sorted({score for row in card["per_class"].values() for score in row})
        lines += ["", "## Per class (test)", "", "| class | " + " | ".join(scores) + " |",
                  "|---|" + "---|" * len(scores)]  # fmt: skip
        lines += [f"| {name} | " + " | ".join(_number(row.get(s)) for s in scores) + " |"
                  for name, row in card["per_class"].items()]  # fmt: skip
    if card["config"]:
        lines += ["", "## Configuration", "", "```json", json.dumps(card["config"], indent=1), "```"]
    if card["lineage"]:
        lines += ["", "## Lineage", ""] + [f"- {label}: {value}" for label, value in card["lineage"].items()]
    lines += ["", "## Exports", ""]
    if not card["exports"]:
        lines.append("None yet (`cnn export source=<this run> format=onnx`).")
    else:
        lines += ["| format | run | status | parity max abs diff | test metric delta |", "|---|---|---|---|---|"]
        lines += [f"| {e['format']} | `{e['run_id']}` | {e['status']} | {_number(e['parity_max_abs_diff'], 6)} | "
                  f"{_number(e['metric_delta'])} |" for e in card["exports"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def for_run(uri: str, run_id: str, contract: dict | None = None) -> dict:
    """The card of a run of this pipeline, from what the store holds now (its metrics, tags, config, data
    profile, its model's contract unless given, and the export runs nested under it)."""
    from pipeline import tracking

    run = tracking.get_run(uri, run_id)
    if run is None:
        from pipeline.errors import DataError

        raise DataError(f"run {run_id}: not found in the MLflow store at {uri}")
    tracking.use_store(uri)

    def artifact(path: str):
        try:
            return json.loads(Path(tracking.download_artifact(uri, run_id, path)).read_text())
        except Exception:  # an older run, or one that logged no such file: the card says what is known
            return None

    config = tracking.load_run_config(run_id)
    exports = [r for r in tracking.child_runs(uri, run_id) if r["tags"].get("stage") == "export"]
    contract = contract or _logged_contract(uri, run_id)
    return build(run, contract, config, artifact("data/profile.json"), exports)


def _logged_contract(uri: str, run_id: str) -> dict | None:
    from pipeline import tracking

    try:
        return tracking.load_contract(tracking.run_model_uri(run_id), uri)
    except Exception:  # a run that logged no model: its card has no contract
        return None


def log(uri: str, run_id: str, folder: str | Path | None = None, contract: dict | None = None) -> dict:
    """Build the card of `run_id`, log model_card.json and model_card.md to it (replacing earlier ones) and,
    with `folder`, write them there too (beside a checkpoint); returns the card."""
    from pipeline import tracking

    card = for_run(uri, run_id, contract)
    text = markdown(card)
    store = tracking.client(uri)
    store.log_text(run_id, json.dumps(card, indent=1) + "\n", CARD_JSON)
    store.log_text(run_id, text, CARD_MARKDOWN)
    if folder is not None:
        (Path(folder) / CARD_JSON).write_text(json.dumps(card, indent=1) + "\n")
        (Path(folder) / CARD_MARKDOWN).write_text(text)
    return card
