"""A policy as an MLflow model (pyfunc) in the Model Registry (`moalign register`), so that
`mlflow.pyfunc.load_model("models:/NAME@ALIAS")` generates text and `mlflow models serve` serves it.

The model is logged as "models from code": MLflow stores this file beside the merged checkpoint
(the artifact `checkpoint`, what `moalign export` writes) and runs it to load the model. So this
module imports only mlflow and pandas at the top, `PolicyModel` uses transformers alone, and the
served model needs neither moalign nor peft; registering (below) imports moalign where it is used.
"""
from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

ARTIFACT = "checkpoint"
REQUIREMENTS = ("mlflow", "torch", "transformers", "pandas")  # pinned to this environment's versions


class PolicyModel(PythonModel):
    """Completions for a DataFrame's `prompt` column, one a prompt. Params `max_new_tokens` and
    `temperature` (0: greedy) override the defaults logged with the model (the run's held-out
    evaluation settings)."""

    def load_context(self, context):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = context.artifacts[ARTIFACT]
        self.settings = dict(context.model_config or {})
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()

    def _text(self, prompt: str) -> str:
        if self.settings.get("use_chat_template", True) and self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                      add_generation_prompt=True)
        return prompt

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        import torch

        settings = {**self.settings, **{k: v for k, v in (params or {}).items() if v is not None}}
        temperature = float(settings.get("temperature", 0.0))
        sampling = (dict(do_sample=True, temperature=temperature, top_k=settings.get("top_k") or None,
                         top_p=settings.get("top_p", 1.0)) if temperature > 0 else dict(do_sample=False))
        templated = bool(settings.get("use_chat_template", True) and self.tokenizer.chat_template)
        prompts = [str(p) for p in model_input["prompt"]]
        out = []
        for start in range(0, len(prompts), 16):
            batch = self.tokenizer([self._text(p) for p in prompts[start : start + 16]], return_tensors="pt",
                                   padding=True, add_special_tokens=not templated).to(self.model.device)
            with torch.no_grad():
                ids = self.model.generate(**batch, max_new_tokens=int(settings.get("max_new_tokens", 64)),
                                          pad_token_id=self.tokenizer.pad_token_id, **sampling)
            completions = self.tokenizer.batch_decode(ids[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [c.strip() for c in completions]
        return out


def signature(settings: dict):
    """Input: a `prompt` string column; output: one string a row; params with the logged defaults."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(inputs=Schema([ColSpec("string", "prompt")]), outputs=Schema([ColSpec("string")]),
                          params=ParamSchema([ParamSpec("max_new_tokens", "long", int(settings["max_new_tokens"])),
                                              ParamSpec("temperature", "double", float(settings["temperature"]))]))


def example() -> pd.DataFrame:
    """The input example MLflow stores and, once at logging, checks that serving it works. Its
    column labels are objects: MLflow compares them with a `range`, which pandas 3 deprecates for
    its string dtype."""
    return pd.DataFrame({"prompt": ["Hello"]}, columns=pd.Index(["prompt"], dtype=object))


def requirements() -> list[str]:
    """Pinned from the installed packages: MLflow must not resolve them over the network. Local
    version labels (torch's `+cpu`) are dropped: pip cannot install them from PyPI."""
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in REQUIREMENTS]


def check_names(name: str, alias: str | None) -> None:
    """MLflow's own rules for names and aliases, checked before the model is built and logged
    (a bad alias found after registering would leave a version without it)."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved, _validate_model_name

    from moalign.errors import MoalignError

    checks = [("name", name, _validate_model_name)]
    if alias is not None:
        checks += [("alias", alias, _validate_model_alias_name), ("alias", alias, _validate_model_alias_name_reserved)]
    for flag, value, check in checks:
        try:
            check(value)
        except MlflowException as exc:
            raise MoalignError(f"--{flag} {value!r}: {exc.message}".splitlines()[0]) from None


def register_policy(ref: str, name: str, alias: str | None = None, tracking_uri: str | None = None,
                    trust_remote_code: bool = False):
    """Log policy `ref` (see `moalign.load_policy`) as an MLflow pyfunc model linked to its run,
    register it as a new version of `name` and point `alias` at it; returns the ModelVersion.

    The Model Registry needs a database-backed store (the default `sqlite:///mlflow.db` is one) or
    a tracking server.

    After `make demo` (an example, not a doctest: it needs the demo's store)::

        register_policy("quickstart/soups@0.5,0.5", "summariser", "champion")
        mlflow.pyfunc.load_model("models:/summariser@champion").predict(pd.DataFrame({"prompt": ["Hi"]}))
    """
    import tempfile
    from pathlib import Path

    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from moalign.export import check_exportable, eval_samples, reward_objectives, save_checkpoint
    from moalign.policies import check_remote_code, find_policy, guard
    from moalign.rl.config import SamplingConfig
    from moalign.tracking import MlflowTracker

    check_names(name, alias)
    record = find_policy(ref, tracking_uri)
    check_exportable(record, ref)
    check_remote_code(record, trust_remote_code)
    tracker = MlflowTracker(None, tracking_uri)
    uri = tracker.uri
    sampling = record.config.sampling if record.config else SamplingConfig()
    settings = {"max_new_tokens": sampling.max_new_tokens, "temperature": sampling.eval_temperature,
                "top_k": sampling.top_k, "top_p": sampling.top_p, "use_chat_template": record.model.use_chat_template}
    params = {"moalign.role": record.role, "base_model": record.model.name}
    if record.weights is not None and record.config is not None:
        names = reward_objectives(record, eval_samples(record))
        params.update({f"weight/{o}": f"{w:g}" for o, w in zip(names, record.weights)})
    experiment_id = tracker.get_run(record.run_id).info.experiment_id if record.run_id else None
    with tempfile.TemporaryDirectory(prefix="moalign-register-") as tmp:
        checkpoint = Path(tmp) / ARTIFACT
        checkpoint.mkdir()
        save_checkpoint(record, checkpoint, device="cpu", trust_remote_code=trust_remote_code)
        # MLflow's fluent logging reads a process-wide tracking URI: set for this call only
        with guard(uri, f"register {name!r}"), _use_tracking_uri(uri):
            logged = mlflow.initialize_logged_model(name="policy", source_run_id=record.run_id, experiment_id=experiment_id,
                                                    params=params, tags={"moalign.ref": str(ref)})
            info = mlflow.pyfunc.log_model(name="policy", python_model=__file__, artifacts={ARTIFACT: str(checkpoint)},
                                           model_config=settings, signature=signature(settings),
                                           input_example=(example(), {"max_new_tokens": 1}),
                                           pip_requirements=requirements(), model_id=logged.model_id,
                                           registered_model_name=name)
            version = tracker.client.get_model_version(name, str(info.registered_model_version))
            if alias:
                tracker.client.set_registered_model_alias(name, alias, version.version)
    return version


# Run by MLflow when it loads the logged copy of this file; importing moalign.mlflow_model only sets
# a reference MLflow reads during such a load.
mlflow.models.set_model(PolicyModel())
