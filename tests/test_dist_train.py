"""One training run over two processes (gloo on CPU) equals the one-process run, in plain data
parallel (DDP) and with the weights sharded (FSDP2, as `accelerate launch --use_fsdp --fsdp_version 2`
asks through its environment).

Two workers are forked from the test process (so they import nothing again) and given the
environment torchrun gives its workers (RANK, WORLD_SIZE, MASTER_ADDR/PORT on 127.0.0.1); each runs
`trainer.train`. Sampling uses top_k=1 so that which process generates a prompt cannot change its
completions (a sampled token would depend on the process's random stream): everything else (global
token mean, REINFORCE's batch baseline, running normalisation, Lagrange multipliers, summed
gradients) must then reproduce the one-process step to float precision. The workers are interrupted
inside step 3 and resumed, so resume on every process is covered too.
"""
import multiprocessing
import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from moalign.cli import main
from moalign.rl import trainer
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from moalign.rl.sharding import full
from moalign.rl.config import AlgorithmConfig, ModelConfig, OptimConfig, RewardConfig, SamplingConfig, TrackingConfig
from moalign.tracking import NullTracker

from rl_helpers import tiny_config, write_prompts
from tiny import make_tiny_gpt2, make_tiny_llama


class Recorder(NullTracker):
    """What reaches this process's tracker: the trainer must send it nothing but on rank 0."""

    def __init__(self):
        self.events = []

    def start_run(self, run_name=None, tags=None, parent_run_id=None):
        self.events.append(("start_run",))
        return "run0"

    def resume_run(self, run_id):
        self.events.append(("resume_run", run_id))

    def log_metrics(self, run_id, rows):
        self.events += [("metrics", step, metrics.get("loss")) for step, metrics in rows]

    def end_run(self, run_id, status="FINISHED"):
        self.events.append(("end_run", status))


def worker(rank: int, port: int, config, out: Path, launch: dict) -> None:
    """One process of the run: interrupted inside step 3, then resumed from the step-2 checkpoint."""
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **launch)
        torch.set_num_threads(1)
        from accelerate.state import PartialState

        PartialState._reset_state()  # forked from pytest, where another test (TRL's) may have built one: a launch has none
        policies, real_update, calls = [], trainer.policy_update, []

        class Capture(trainer.Policy):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                policies.append(self)

        def interrupt_step_3(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:  # step 3 of the first run, before its update's first collective
                raise KeyboardInterrupt
            return real_update(*args, **kwargs)

        trainer.Policy, trainer.policy_update = Capture, interrupt_step_3  # this forked process's own modules
        recorder = Recorder()
        try:
            trainer.train(config, tracker=recorder)
        except KeyboardInterrupt:
            torch.distributed.barrier()  # as a new launch would: the main process's checkpoint is written
        result = trainer.train(config, resume_run_id="run0", tracker=recorder)
        model = policies[-1].model
        params = {n: full(p.detach()).cpu() for n, p in model.named_parameters() if p.requires_grad}
        held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in model.parameters())
        torch.save({"params": params, "held": held, "whole": sum(p.numel() for p in model.parameters()),
                    "units": sum(isinstance(m, FSDPModule) for m in model.modules()),
                    # full fine-tuning's reference runs no backward: sharded again after each forward, or held whole
                    "reference_sharded": policies[-1].reference is None or all(
                        isinstance(p, DTensor) for p in policies[-1].reference.parameters()),
                    "history": result.history.to_dict("list"), "adapter_dir": str(result.adapter_dir),
                    "events": recorder.events}, out / f"rank{rank}.pt")
    except BaseException:
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


COMPARED = ["reward/total", "reward/scalarized", "rewards/good/mean", "rewards/verbosity/mean",
            "rewards/verbosity/normalized", "constraints/verbosity/lambda", "constraints/verbosity/gap", "loss", "kl",
            "entropy", "clip_frac", "grad_norm", "advantage_std", "completion_tokens/mean", "tokens/generated",
            "samples_dropped"]


def saved_weights(directory) -> dict:
    """The weights a run saved: LoRA's adapter, or full fine-tuning's state dict."""
    adapter = Path(directory) / "adapter_model.safetensors"
    return load_file(str(adapter)) if adapter.exists() else torch.load(Path(directory) / "model.pt", weights_only=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_for(tiny_llama, tmp, lora: bool = True, generations: int = 2):
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(
        tiny_llama, write_prompts(tmp / "prompts.jsonl"), tmp, model=ModelConfig(name=tiny_llama, lora_r=8, lora=lora),
        sampling=SamplingConfig(num_generations=generations, prompts_per_step=4, max_new_tokens=6),
        reward=RewardConfig(objectives={"good": {"type": "word_share"}, "verbosity": {}},
                            constraints=["verbosity <= 3"], lagrange_lr=0.5),
        algorithm=AlgorithmConfig(name="reinforce", kl_coef=0.1, inner_epochs=2),
        optim=OptimConfig(steps=4, lr=1e-2), checkpoint_every=2,
        tracking=TrackingConfig(enabled=False))
    # Set after validation, which refuses truncated sampling for RL (its log-probs do not see it): here
    # top_k=1 makes each completion independent of which process's random stream drew it, and the test
    # compares processes, not what is learnt.
    cfg.sampling.top_k = 1
    return cfg


FSDP = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2"}  # what `accelerate launch --use_fsdp --fsdp_version 2` sets
# fsdp-full-tied: full fine-tuning (its frozen reference sharded too) of a model whose head shares the embeddings;
# fsdp-gpt2-single: weights outside the blocks, embeddings and head (GPT-2's positions), and one sample a prompt,
# so generation never passes through a shared-prompt forward of the root
# fsdp-nowrap: the blocks (and their LoRA weights) in the root unit, which stays gathered between forwards; its
# first checkpoint comes at step 4, so the interrupt in step 3 finds recorded steps no checkpoint holds (sharded, the
# handler does not gather them: the run restarts from its beginning, in the same MLflow run)
LAUNCHES = {"ddp": {}, "fsdp": FSDP, "fsdp-full-tied": FSDP, "fsdp-gpt2-single": FSDP,
            "fsdp-nowrap": {**FSDP, "FSDP_AUTO_WRAP_POLICY": "NO_WRAP"}}


@pytest.mark.parametrize("launch", LAUNCHES)
def test_two_processes_train_as_one_and_resume_on_every_process(tiny_llama, in_tmp, launch, capfd):
    lora, generations = launch != "fsdp-full-tied", 1 if launch == "fsdp-gpt2-single" else 2
    if not lora:
        tiny_llama = str(make_tiny_llama(in_tmp / "tied_llama", tied=True))
    elif launch == "fsdp-gpt2-single":
        tiny_llama = str(make_tiny_gpt2(in_tmp / "gpt2"))
    config = config_for(tiny_llama, in_tmp / "two", lora, generations)
    if launch == "fsdp-nowrap":
        config.checkpoint_every = 4
    fork, port = multiprocessing.get_context("fork"), free_port()
    workers = [fork.Process(target=worker, args=(rank, port, config, in_tmp, LAUNCHES[launch])) for rank in range(2)]
    for w in workers:
        w.start()
    reference = trainer.train(config_for(tiny_llama, in_tmp / "one", lora, generations))  # meanwhile, the one-process run
    for rank, w in enumerate(workers):
        w.join(timeout=240)
        if w.is_alive():
            w.kill()
        assert w.exitcode == 0, (in_tmp / f"rank{rank}.err").read_text() if (in_tmp / f"rank{rank}.err").exists() else w.exitcode
    ranks = [torch.load(in_tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]
    if launch == "fsdp-nowrap":  # each process says where the run continues from
        assert capfd.readouterr().err.count("interrupted after step 2; resume continues from step 1 (no checkpoint yet)") == 2
    if LAUNCHES[launch]:  # units for the decoder layers, embeddings, head and root; each process holds half (+ padding)
        assert ranks[0]["units"] >= (3 if launch == "fsdp-nowrap" else 5) and ranks[0]["whole"] <= ranks[0]["held"] + ranks[1]["held"] < 1.1 * ranks[0]["whole"]
        assert max(ranks[0]["held"], ranks[1]["held"]) < 0.55 * ranks[0]["whole"]
        assert ranks[0]["reference_sharded"] and ranks[1]["reference_sharded"]
    else:
        assert ranks[0]["units"] == 0 and ranks[0]["held"] == ranks[0]["whole"]

    for name, tensor in ranks[0]["params"].items():  # the same optimizer steps on both processes
        assert torch.equal(ranks[1]["params"][name], tensor), name
    saved, expected = saved_weights(ranks[0]["adapter_dir"]), saved_weights(reference.adapter_dir)
    assert saved.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(saved[name], tensor, rtol=1e-4, atol=1e-5)
    if lora:  # it learnt
        assert not (torch.stack([t.abs().sum() for n, t in expected.items() if "lora_B" in n]) == 0).all()
    else:
        base = load_file(str(Path(tiny_llama) / "model.safetensors"))
        assert any(not torch.equal(base[name], expected[name]) for name in base)

    history = {k: torch.tensor(v, dtype=torch.float64) for k, v in ranks[0]["history"].items()}
    assert history["step"].tolist() == [1, 2, 3, 4] and ranks[1]["history"]["loss"] == ranks[0]["history"]["loss"]
    assert history["tokens/generated"].tolist() == reference.history["tokens/generated"].tolist()  # the global batch
    for key in COMPARED:
        torch.testing.assert_close(history[key], torch.tensor(reference.history[key].to_numpy()), rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{key}: {m}")
    if launch != "fsdp-gpt2-single":  # (the tiny GPT-2 writes within the limit: its multiplier stays 0)
        assert history["constraints/verbosity/lambda"][-1] > 0  # the multiplier moved: global gaps, not a share's

    # Only the main process talks to the tracker: one run, each step logged once, resumed in place.
    assert ranks[1]["events"] == []
    metrics = [e for e in ranks[0]["events"] if e[0] == "metrics" and e[2] is not None]
    assert [e[1] for e in metrics] == [1, 2, 3, 4]
    assert [e[2] for e in metrics] == pytest.approx(ranks[0]["history"]["loss"])
    assert [e for e in ranks[0]["events"] if e[0] != "metrics"] == [
        ("start_run",), ("end_run", "KILLED"), ("resume_run", "run0"), ("end_run", "FINISHED")]


def test_prompts_per_step_not_divisible_by_the_processes_is_one_line(tiny_llama, in_tmp, monkeypatch, capsys):
    data = write_prompts(in_tmp / "prompts.jsonl")
    path = in_tmp / "train.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": tiny_llama}, "data": {"train": data},
                                    "sampling": {"prompts_per_step": 3}, "tracking": {"enabled": False}}))
    monkeypatch.setenv("WORLD_SIZE", "2")  # as a launcher of two processes sets it
    assert main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("moalign: error: sampling.prompts_per_step (3) must be divisible by the number of processes (2): "
                   "each process takes whole prompt groups")


def test_a_state_built_before_the_launch_is_refused_not_trained_as_one_process(tiny_llama, tmp_path, monkeypatch):
    """A process that built accelerate's single-process state (another library's Trainer, say)
    and then finds a launcher's environment would run every rank as a lone process: refused."""
    from accelerate.state import PartialState

    from moalign.errors import MoalignError
    from moalign.rl.distributed import Processes

    PartialState._reset_state()
    try:
        assert PartialState(cpu=True).num_processes == 1  # built with no launcher around
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(MoalignError, match="1 process.*launcher 2: start the run in a fresh process"):
            Processes.launched(config_for(tiny_llama, tmp_path))
    finally:
        PartialState._reset_state()


@pytest.mark.parametrize("launch, message", [
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "1"},
     "accelerate config: fsdp_version 1 is not supported by moalign train; set fsdp_version: 2 "
     "(accelerate launch --use_fsdp --fsdp_version 2)"),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_OFFLOAD_PARAMS": "true"},
     "accelerate config: fsdp_offload_params is not supported by moalign train (generation would run on the "
     "offloaded CPU weights); turn it off"),
    ({**FSDP, "FSDP_ACTIVATION_CHECKPOINTING": "true"},
     "accelerate config: fsdp_activation_checkpointing is not supported by moalign train; turn it off"),
    ({**FSDP, "ACCELERATE_MIXED_PRECISION": "fp16"},
     "accelerate config: mixed_precision fp16 is not supported with FSDP by moalign train; use bf16 or no"),
    ({"ACCELERATE_USE_DEEPSPEED": "true"},
     "accelerate config: DeepSpeed is not supported by moalign train; to shard the weights use FSDP2 "
     "(accelerate launch --use_fsdp --fsdp_version 2)"),
], ids=["fsdp1", "offload", "checkpointing", "fp16", "deepspeed"])
def test_a_sharding_mode_this_trainer_does_not_run_is_one_line(tiny_llama, in_tmp, monkeypatch, capsys, launch, message):
    data = write_prompts(in_tmp / "prompts.jsonl")
    path = in_tmp / "train.yaml"
    path.write_text(yaml.safe_dump({"model": {"name": tiny_llama}, "data": {"train": data},
                                    "tracking": {"enabled": False}, "output_dir": str(in_tmp / "runs")}))
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name, value in launch.items():
        monkeypatch.setenv(name, value)
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == f"moalign: error: {message}"
    assert not (in_tmp / "runs").exists()  # refused before anything was written


def test_a_checkpoint_resumes_only_under_the_kind_of_launch_that_wrote_it():
    """An FSDP run keys its optimizer state by parameter name, a plain run by position: resuming
    one under the other would load nothing (or the wrong rows), so it is refused in one line."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    from moalign.errors import MoalignError
    from moalign.rl.sharding import check_resumable

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    plain, named = optimizer.state_dict(), get_optimizer_state_dict(model, optimizer)
    check_resumable(plain, sharded=False, where="c")
    check_resumable(named, sharded=True, where="c")
    with pytest.raises(MoalignError, match=r"^checkpoint c was written by a non-FSDP launch and cannot resume with FSDP; "):
        check_resumable(plain, sharded=True, where="c")
    with pytest.raises(MoalignError, match=r"^checkpoint c was written by an FSDP launch and cannot resume without FSDP; "):
        check_resumable(named, sharded=False, where="c")
