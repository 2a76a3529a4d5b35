"""Models in the store: logging a Keras model, and loading one back from a file, a run or a model URI."""

import logging
import re
import types
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import Model

from pipeline.models import model_input
from pipeline.tracking.store import quiet_downloads, use_store


def _save_keras_model(path: str, mlflow_model: Model, contract: dict | None = None, **kwargs) -> None:
    """mlflow.keras.save_model, then this package's code into code/ and pipeline.deploy.serving as the
    python_function loader, so the model loads where `pipeline` was never imported (see pipeline.deploy.serving);
    the model's contract (pipeline.deploy.contract: input, intensity mapping, classes, output) as contract.json
    beside MLmodel."""
    import shutil

    from mlflow.pyfunc import add_to_model

    import pipeline
    from pipeline.deploy import contract as contracts

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    signature = kwargs.pop("signature", None)  # the served model's (any images): mlflow.keras takes tensors only
    quiet = logging.getLogger("mlflow.keras.save")  # it warns that the Keras flavour got no signature: it is set below
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        mlflow.keras.save_model(path=path, mlflow_model=mlflow_model, **kwargs)
    finally:
        quiet.setLevel(level)
    mlflow_model.signature = signature
    if contract:
        contracts.write(contract, folder)
    source = Path(pipeline.__file__).parent
    shutil.copytree(source, folder / "code" / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    keras_pyfunc = mlflow_model.flavors["python_function"]
    mlflow_model.flavors.pop("python_function")
    add_to_model(mlflow_model, loader_module="pipeline.deploy.serving", data=keras_pyfunc.get("data"), code="code",
                 env=keras_pyfunc.get("env"), python_version=keras_pyfunc.get("python_version"))  # fmt: skip
    mlflow_model.save(str(folder / "MLmodel"))


# mlflow.keras with two changes: mlflow.keras.save_model writes the input example into the model folder
# before creating it, so mlflow.keras.log_model(..., input_example=...) fails with FileNotFoundError
# (mlflow/mlflow#16183, still so in 3.17.2); and the python_function flavor is pipeline.deploy.serving's, with the
# package's code carried. Model.log takes any object with save_model as the flavor.
_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


def inference_model(model: keras.Model) -> keras.Model:
    """The model as served: its main output only (no auxiliary heads), no loss, optimizer or metrics."""
    return keras.Model(model_input(model), model.outputs[0], name=model.name)


def log_keras_model(
    model: keras.Model,
    example,
    name: str = "model",
    output: str = "probabilities",
    contract: dict | None = None,
) -> str:
    """Log the inference model with an input example and its signature; returns the model URI. It loads
    anywhere and answers per image at the image's own size (see pipeline.deploy.serving). `example`: images as
    a client sends them (base64 text of image files, or arrays (H, W, C); an (N, H, W, C) array is N images).
    Its `contract` (pipeline.deploy.contract) is kept beside it as contract.json and in the MLmodel's
    metadata: the served model applies its intensity mapping to raw file values. `output` names the raw
    tensor the exports give (the contract's).

    Requirements are given explicitly: inferring them would re-import the model in a subprocess.
    """
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import AnyType
    from PIL import Image

    import pipeline.deploy.serving
    from pipeline.deploy import contract as contracts

    model = inference_model(model)
    items = [item if isinstance(item, str) else np.asarray(item).tolist() for item in example]
    mapping = (contract or {}).get("input", {}).get("intensity")
    intensity = None
    if mapping:
        from pipeline.data.pixels import Intensity

        intensity = Intensity.from_config(mapping)
    pipeline.deploy.serving.Predictor(model, intensity=intensity, contract=contract).predict({"images": items})
    signature = ModelSignature(
        inputs=Schema([ColSpec(AnyType(), contracts.INPUT_NAME)]),  # a file's bytes (base64) or an array, any size
        params=ParamSchema([ParamSpec("probabilities", "boolean", False)]),
    )
    backend = keras.config.backend()
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    requirements = [f"keras=={keras.__version__}", f"{backend_module}=={__import__(backend_module).__version__}"]
    requirements += [f"numpy=={np.__version__}", f"omegaconf=={__import__('omegaconf').__version__}"]
    requirements += [f"pillow=={Image.__version__}"]
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=_KERAS_FLAVOR,
        model=model,
        contract=contract,
        metadata={"contract": contract} if contract else None,
        signature=signature,
        input_example=pd.DataFrame({contracts.INPUT_NAME: items}),
        pip_requirements=requirements,
    )
    return info.model_uri


def load_model(source: str, uri: str) -> tuple[keras.Model, str | None]:
    """A Keras model and the id of the run that produced it, from any of:

    a `.keras` file path; `runs:/<run id>/<path>`, `models:/<name or model id>/...` or a logged
    model id `m-...`; or a bare run id of this pipeline (its logged model is used). Files are loaded
    with Keras safe_mode, which refuses to run code stored in a model file.
    """
    from pipeline.errors import DataError
    from pipeline.models import register_all

    register_all()  # the custom classes a saved model may name
    use_store(uri)  # mlflow.keras.load_model resolves runs:/ and models:/ in this store
    path = Path(source)
    if source.endswith(".keras") or path.is_file():
        if not path.is_file():
            raise DataError(f"{source}: model file not found")
        try:
            return keras.models.load_model(path, safe_mode=True), None
        except (ValueError, OSError) as err:
            if "safe_mode" in str(err):  # Keras refuses to deserialize code (a Lambda layer's function)
                raise DataError(
                    f"{source}: refused to load: the model file holds Python code (e.g. a Lambda layer), which "
                    "safe_mode never runs; valid: models built from Keras layers and this project's registered layers"
                ) from None
            raise DataError(f"{source}: not a loadable .keras model ({err})") from None
    try:
        model_uri, run_id = _model_uri(source)
        return mlflow.keras.load_model(model_uri), run_id
    except mlflow.exceptions.MlflowException as err:
        raise _not_found(source, uri, err) from None


def model_run(source: str, uri: str) -> str:
    """The id of the run that produced the model `source` names (a run id, runs:/, models:/ or m-), without
    loading the model; one line when the store has no such run or model."""
    use_store(uri)
    try:
        if not source.startswith(("runs:/", "models:/", "m-")):
            return mlflow.get_run(source).info.run_id
        return _model_uri(source)[1]
    except mlflow.exceptions.MlflowException as err:
        raise _not_found(source, uri, err) from None


def _model_uri(source: str) -> tuple[str, str | None]:
    """(model URI, run id) of a run id, runs:/, models:/ or m- source."""
    if source.startswith("m-"):
        source = f"models:/{source}"
    if source.startswith("models:/") and not source.startswith("models:/m-"):
        return source, registered_version(source).run_id  # the registry: name@alias, name/version
    if source.startswith("runs:/"):
        return source, source.split("/")[1]
    if source.startswith("models:/"):
        return source, mlflow.get_logged_model(source.split("/")[1]).source_run_id
    return run_model_uri(source), source


def _not_found(source: str, uri: str, err: Exception):
    from pipeline.errors import DataError

    message = str(err).splitlines()[0]
    return DataError(
        f"source={source!r}: not found in the MLflow store at {uri} ({message}); valid: a run id, "
        "runs:/<run id>/model, models:/<model id>, m-<model id>, models:/<name>@<alias>, models:/<name>/<version>, "
        "or a path to a .keras file"
    )


def load_contract(source: str, uri: str) -> dict | None:
    """The contract (pipeline.deploy.contract) of the model `source` names, as load_model takes it: from the
    logged model's metadata, or contract.json beside a .keras file; None when it has none."""
    from pipeline.deploy import contract

    path = Path(source)
    if source.endswith(".keras") or path.is_file():
        return contract.read(path.parent)
    use_store(uri)
    try:
        model_uri, _ = _model_uri(source)
        return (mlflow.models.get_model_info(model_uri).metadata or {}).get("contract")
    except mlflow.exceptions.MlflowException as err:
        raise _not_found(source, uri, err) from None


def run_model_uri(run_id: str) -> str:
    """The URI of the model a run of this pipeline logged (models:/m-...)."""
    from pipeline.errors import DataError

    run = mlflow.get_run(run_id)
    logged = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
    )
    if not logged:
        raise DataError(f"run {run_id} logged no model (was it trained with tracking.log_model=false?)")
    return logged[0].model_uri


def registered_version(source: str):
    """The registry's model version that models:/<name>@<alias> or models:/<name>/<version> names; a name, alias or
    version that does not exist is one line saying which and what exists."""
    from pipeline.errors import DataError

    client = mlflow.MlflowClient()
    reference = source.removeprefix("models:/")
    name, alias, version = reference, None, None
    if "@" in reference:
        name, alias = reference.split("@", 1)
    elif "/" in reference:
        name, version = reference.split("/", 1)
    try:
        registered = client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        names = [m.name for m in client.search_registered_models()]
        raise DataError(
            f"source={source!r}: no registered model named {name!r}; registered: {', '.join(names) or 'none'}"
        ) from None
    if alias is not None:
        if alias not in registered.aliases:
            have = ", ".join(f"{a} (version {v})" for a, v in registered.aliases.items()) or "none"
            raise DataError(f"source={source!r}: model {name!r} has no alias {alias!r}; its aliases: {have}")
        return client.get_model_version_by_alias(name, alias)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    if version is None or not version.isdigit() or int(version) not in versions:
        raise DataError(
            f"source={source!r}: model {name!r} has no version {version!r}; its versions: "
            f"{', '.join(map(str, versions)) or 'none'} (or models:/{name}@<alias>)"
        )
    return client.get_model_version(name, version)


ALIAS_RULE = re.compile(r"^(?!v\d+$)(?!latest$)[A-Za-z0-9_-]{1,255}$")


def register_model(run_id: str, name: str, alias: str | None = None, tags: dict | None = None):
    """Register the model a run logged as a new version of `name` (created if new), optionally pointing
    `alias` at it; returns the ModelVersion. The alias is checked before anything is written, and a version
    whose alias cannot be set is deleted again, so a failure leaves the registry as it was."""
    from pipeline.errors import ConfigError

    if alias is not None and not ALIAS_RULE.match(alias):
        raise ConfigError(
            f"alias={alias!r} is invalid: letters, digits, _ and - only, not 'latest' or v<number> (MLflow's rule)"
        )
    model_uri = run_model_uri(run_id)
    client = mlflow.MlflowClient()
    version = mlflow.register_model(model_uri, name, tags=tags)
    if alias is not None:
        try:
            client.set_registered_model_alias(name, alias, version.version)
        except BaseException:
            client.delete_model_version(name, version.version)
            raise
    return version


def load_run_config(run_id: str) -> dict | None:
    """The resolved config a run of this pipeline logged (config/resolved.yaml), or None."""
    import yaml

    try:
        with quiet_downloads():
            return yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config/resolved.yaml"))
    except (mlflow.exceptions.MlflowException, OSError):  # not a run of this pipeline: use the stage config
        return None
