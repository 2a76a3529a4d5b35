"""Models in the store: logging a Keras model, and loading one back from a file, a run or a model URI."""

import types
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import Model, infer_signature


def _save_keras_model(path: str, **kwargs) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)
    mlflow.keras.save_model(path=path, **kwargs)


# mlflow.keras with one fix: mlflow.keras.save_model writes the input example into the model folder
# before creating it, so mlflow.keras.log_model(..., input_example=...) fails with FileNotFoundError
# (mlflow/mlflow#16183, still so in 3.17.2). Model.log takes any object with save_model as the flavor.
_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


def log_keras_model(model: keras.Model, example: np.ndarray, name: str = "model") -> str:
    """Log the model with its input example and a signature inferred from it; returns the model URI.

    Requirements are given explicitly: inferring them would re-import the model in a subprocess.
    """
    example = np.asarray(example, dtype=np.float32)
    signature = infer_signature(example, model.predict(example, verbose=0))
    backend = keras.config.backend()
    backend_module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[backend]
    requirements = [f"keras=={keras.__version__}", f"{backend_module}=={__import__(backend_module).__version__}"]
    info = Model.log(
        artifact_path=None,
        name=name,
        flavor=_KERAS_FLAVOR,
        model=model,
        signature=signature,
        input_example=example,
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
    mlflow.set_tracking_uri(uri)  # mlflow.keras.load_model resolves runs:/ and models:/ in this store
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
        if source.startswith("m-"):
            source = f"models:/{source}"
        if source.startswith(("runs:/", "models:/")):
            model_uri, run_id = source, None
            if source.startswith("runs:/"):
                run_id = source.split("/")[1]
            else:
                run_id = mlflow.get_logged_model(source.split("/")[1]).source_run_id
        else:
            run = mlflow.get_run(source)
            logged = mlflow.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{source}'",
                output_format="list",
            )
            if not logged:
                raise DataError(f"run {source} logged no model (was it trained with tracking.log_model=false?)")
            model_uri, run_id = logged[0].model_uri, source
        return mlflow.keras.load_model(model_uri), run_id
    except mlflow.exceptions.MlflowException as err:
        message = str(err).splitlines()[0]
        raise DataError(
            f"source={source!r}: not found in the MLflow store at {uri} ({message}); valid: a run id, "
            "runs:/<run id>/model, models:/<model id>, m-<model id>, or a path to a .keras file"
        ) from None


def load_run_config(run_id: str) -> dict | None:
    """The resolved config a run of this pipeline logged (config/resolved.yaml), or None."""
    import yaml

    try:
        return yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run_id}/config/resolved.yaml"))
    except (mlflow.exceptions.MlflowException, OSError):  # not a run of this pipeline: use the stage config
        return None
