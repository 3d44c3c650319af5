"""GPU readiness checked on a CPU: which path each device type takes (fused attention and stock
dropout on CUDA, the CPU-only fast paths never there), mixed precision per device, the
deterministic flags, and the CUDA RNG states saved in and restored from last.pt (CUDA mocked)."""

from __future__ import annotations

import io

import pytest
import torch

from msakit import api
from msakit.config import apply_overrides
from msakit.core.errors import MsakitError
from msakit.data.mmsa import load_feature_file
from msakit.encoders import dropout
from msakit.models.base import Dims
from msakit.models.registry import preset
from msakit.training import device, trainer
from msakit.training.inputs import build_model
from msakit.training.trainer import Trainer, rng_state, set_rng_state

SMALL = ["feedforward=32", "common_dim=16", "specific_dim=16", "head_dim=16"]


def test_cpu_speed_settings_apply_on_cpus_only():
    assert device.cpu_speed_settings("cpu", True, True) == {
        "reuse_memory": True, "fast_dropout": True}
    assert device.cpu_speed_settings("cpu", False, True) == {
        "reuse_memory": False, "fast_dropout": True}
    for gpu in ("cuda", "mps", "xpu"):
        assert device.cpu_speed_settings(gpu, True, True) == {
            "reuse_memory": False, "fast_dropout": False}


def test_attention_is_fused_on_cuda_even_with_dropout():
    assert device.attention_kernel("cuda", 0.1) == "fused"
    assert device.attention_kernel("cuda", 0.0) == "fused"
    assert device.attention_kernel("cpu", 0.0) == "fused"
    assert device.attention_kernel("cpu", 0.1) == "written"  # CPU fused kernels take no dropout
    assert device.attention_kernel("cuda", 0.1, unfused=True) == "written"


def test_feed_forward_is_stock_off_cpus_and_under_autocast():
    assert device.packed_feed_forward("cpu", torch.float32, False)
    assert not device.packed_feed_forward("cuda", torch.float32, False)
    assert not device.packed_feed_forward("cpu", torch.bfloat16, False)
    assert not device.packed_feed_forward("cpu", torch.float32, True)


def test_fast_dropout_module_is_stock_dropout_off_cpus(monkeypatch):
    """A FastDropout module on a non-CPU tensor calls F.dropout, never the NumPy masks."""
    calls = []
    monkeypatch.setattr(dropout, "dropout_multiplier",
                        lambda *a: calls.append(a) or pytest.fail("NumPy mask off a CPU"))
    x = torch.ones(4, 8, device="meta")
    out = dropout.FastDropout(0.5).train()(x)
    assert out.device.type == "meta" and out.shape == x.shape and calls == []


def test_mixed_precision_per_device():
    assert device.autocast_settings("cuda", "fp16") == device.Autocast(True, torch.float16, True)
    assert device.autocast_settings("cuda", "bf16") == device.Autocast(True, torch.bfloat16, False)
    assert device.autocast_settings("cpu", "bf16") == device.Autocast(True, torch.bfloat16, False)
    assert not device.autocast_settings("cuda", "off").enabled
    with pytest.raises(MsakitError, match="amp=fp16 needs a CUDA GPU"):
        device.autocast_settings("cpu", "fp16")
    # The older bf16 switch is amp=bf16; the two may not contradict each other.
    assert device.amp_mode("off", bf16=True) == "bf16"
    assert device.amp_mode("fp16") == "fp16"
    config = apply_overrides(preset("clgsi", "mosi"), ["amp=bf16"])
    assert device.amp_mode(config.amp, config.bf16) == "bf16"
    for bad, message in ((["amp=fp32"], "amp must be one of off, bf16, fp16"),
                         (["amp=fp16", "bf16=true"], "contradict")):
        with pytest.raises(MsakitError, match=message):
            apply_overrides(preset("clgsi", "mosi"), bad)


@pytest.fixture
def restore_determinism():
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2:]


def test_deterministic_sets_torch_and_cudnn_flags(restore_determinism, monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    device.apply_determinism(True, "cpu")
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert "CUBLAS_WORKSPACE_CONFIG" not in __import__("os").environ
    device.apply_determinism(True, "cuda")
    assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    device.apply_determinism(False, "cpu")  # off: the process's flags are left as they are
    assert torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(False)
    device.apply_determinism(False, "cpu")
    assert not torch.are_deterministic_algorithms_enabled()
    assert device.determinism_flags(False)["use_deterministic_algorithms"] is False


@pytest.fixture
def small_trainer(tiny_bert, small_mosi_npz, tmp_path):
    def make(*sets: str) -> Trainer:
        config = api.build_config("clgsi", "mosi", text_encoder=str(tiny_bert), epochs=1,
                                  batch=8, overrides=[*SMALL, "cache_text=false", *sets])
        features = load_feature_file(str(small_mosi_npz))
        from msakit.encoders.text import load_text_encoder

        model = build_model(config, Dims.of(features), load_text_encoder(str(tiny_bert)))
        return Trainer(model=model, config=config, train=features.splits["train"],
                       valid=features.splits["valid"], run_dir=tmp_path / "run", seed=1,
                       quiet=True)
    return make


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_trainer_takes_the_cpu_paths_on_cpus_only(kind, small_trainer, monkeypatch,
                                                  restore_determinism):
    mallopt = []
    monkeypatch.setattr(trainer, "reuse_freed_memory", lambda: mallopt.append(1))
    run = small_trainer("reuse_memory=true", "fast_dropout=true", "deterministic=true")
    run.device = torch.device(kind)  # prepare() only decides; nothing is moved to the device
    run.prepare()
    on_cpu = kind == "cpu"
    assert bool(mallopt) == on_cpu
    assert dropout.uses_fast_dropout(run.model) == on_cpu
    assert torch.are_deterministic_algorithms_enabled()
    assert run.prepared.scaler is None and not run.prepared.amp.enabled


def test_fp16_on_a_cpu_trainer_is_one_error(small_trainer):
    with pytest.raises(MsakitError, match="amp=fp16 needs a CUDA GPU"):
        small_trainer("amp=fp16").prepare()


def test_scaled_loss_path_trains_and_resumes_its_scale(small_trainer, tmp_path):
    """The gradient-scaler branch (fp16 on CUDA), run here on a CPU with a CPU scaler."""
    run = small_trainer()
    run.prepare()
    run.prepared.scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    before = [p.detach().clone() for p in run.model.parameters() if p.requires_grad]
    stats = run.train_epoch(0)
    after = [p for p in run.model.parameters() if p.requires_grad]
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(after, before, strict=True))
    run.history.append({"epoch": 1})
    run._save_last(0)
    saved = torch.load(run.run_dir / "last.pt", weights_only=True)
    assert saved["scaler"]["scale"] == run.prepared.scaler.get_scale()
    again = small_trainer()
    again.resume = True
    again.prepare()  # no scaler on a CPU run: the saved scale is ignored, not an error
    assert again.prepared.start_epoch == 1


def test_rng_state_without_cuda_has_no_cuda_entry():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    assert set(rng_state()) == {"torch", "numpy", "python"}


def test_cuda_rng_states_are_saved_and_restored(monkeypatch):
    """With CUDA mocked: one byte tensor per visible GPU is saved (loadable with
    weights_only=True) and each is handed back to its device on resume."""
    states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, device: restored.__setitem__(device, state.clone()))
    state = rng_state()
    assert [s.dtype for s in state["cuda"]] == [torch.uint8, torch.uint8]
    buffer = io.BytesIO()
    torch.save({"rng": state}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["rng"]
    set_rng_state(loaded)
    assert sorted(restored) == [0, 1]
    assert all(torch.equal(restored[i], states[i]) for i in (0, 1))

    # Fewer GPUs on the resuming machine: the devices it has get their states.
    restored.clear()
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    set_rng_state(loaded)
    assert sorted(restored) == [0]
    # A state saved without CUDA leaves the GPUs as seeded.
    restored.clear()
    set_rng_state({k: v for k, v in loaded.items() if k != "cuda"})
    assert restored == {}
