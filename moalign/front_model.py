"""A whole front as an MLflow model (`moalign register --search`), served per request at any
weights: see `moalign.serving`. Logged as "models from code": MLflow stores this file beside the
artifact `front` and runs it to load the model, so it imports only mlflow and pandas at the top;
the served model needs moalign (and peft) installed."""
from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

ARTIFACT = "front"


class FrontModel(PythonModel):
    """Completions for a DataFrame's `prompt` column (other string columns, e.g. `source`, reach
    the objectives of a best-of-n front), each a dict: completion, weights, policy. Params:
    `weights` ({objective: weight}, unnamed ones 0; default equal) and `max_new_tokens`."""

    def load_context(self, context):
        from moalign.serving import FrontServer

        settings = dict(context.model_config or {})
        self.server = FrontServer(context.artifacts[ARTIFACT], settings.get("cache_size", 4))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[dict]:
        return self.server.answer(model_input, params)


def signature(objectives: list[str], settings: dict):
    """Input: a `prompt` string column; params: `weights` (an object of one optional number per
    objective) and `max_new_tokens`."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
    from mlflow.types.schema import DataType, Object, Property

    weights = Object([Property(o, DataType.double, required=False) for o in objectives])
    return ModelSignature(inputs=Schema([ColSpec("string", "prompt")]),
                          params=ParamSchema([ParamSpec("weights", weights, {o: 1.0 / len(objectives) for o in objectives}),
                                              ParamSpec("max_new_tokens", "long", int(settings["max_new_tokens"]))]))


mlflow.models.set_model(FrontModel())
