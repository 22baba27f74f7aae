"""Tests for the CIFAR benchmark model zoo and the `create_model` factory (hf_relkd.models)."""

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageClassification, TimmWrapperForImageClassification

from hf_relkd.models import (
    CIFAR_MODELS,
    CifarConfig,
    CifarForImageClassification,
    convert_repdistiller_state_dict,
    create_model,
    list_cifar_models,
)

# Parameter counts (millions, 100 classes) printed in the CRD / RepDistiller benchmark papers.
PAPER_PARAMS_M = {
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_40_2": 2.26,
    "wrn_16_2": 0.70,
    "resnet56": 0.86,
    "resnet20": 0.28,
    "resnet110": 1.74,
    "resnet32": 0.47,
    "wrn_40_1": 0.57,
    "vgg13": 9.46,
    "vgg8": 3.97,
    "ResNet50": 23.71,
    "MobileNetV2": 0.81,
    "ShuffleV1": 0.95,
    "ShuffleV2": 1.36,
}
# The remaining zoo models (not in the paper tables): counts of the same reference definitions.
OTHER_PARAMS_M = {
    "resnet8": 0.08,
    "resnet14": 0.18,
    "resnet44": 0.67,
    "wrn_16_1": 0.18,
    "vgg11": 9.28,
    "vgg16": 14.77,
    "vgg19": 20.09,
}
EMBED_DIMS = {"resnet8x4": 256, "resnet32x4": 256, "ResNet50": 2048, "MobileNetV2": 1280, "ShuffleV1": 960}


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny CPU workloads: one intra-op thread is as fast and avoids oversubscribing a shared machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_zoo_names():
    assert list_cifar_models() == list(CIFAR_MODELS)
    assert len(CIFAR_MODELS) == 22
    assert set(PAPER_PARAMS_M) | set(OTHER_PARAMS_M) == set(CIFAR_MODELS)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_zoo_model_forward_params_and_classifier_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_labels=100).eval()
    assert isinstance(model, CifarForImageClassification)
    assert model.config.architecture == name

    expected = PAPER_PARAMS_M.get(name, OTHER_PARAMS_M.get(name))
    assert round(_num_params(model) / 1e6, 2) == expected

    assert isinstance(model.classifier, nn.Linear)
    assert model.classifier.in_features == model.num_features
    assert model.classifier.out_features == 100
    if name in EMBED_DIMS:
        assert model.num_features == EMBED_DIMS[name]

    captured = {}

    def hook(module, inputs, output):
        captured["x"] = inputs[0]  # returns None: the output is left unchanged

    handle = model.classifier.register_forward_hook(hook)
    x = torch.randn(2, 3, 32, 32)
    labels = torch.tensor([3, 7])
    with torch.no_grad():
        out = model(pixel_values=x, labels=labels, output_hidden_states=True)
        feats = model.forward_features(x)
    handle.remove()

    assert out.logits.shape == (2, 100)
    assert torch.isfinite(out.logits).all()
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, nn.functional.cross_entropy(out.logits, labels))
    assert isinstance(out.hidden_states, tuple) and len(out.hidden_states) >= 2
    assert out.hidden_states[-1].shape == (2, model.num_features)
    assert all(h.ndim == 4 and h.shape[0] == 2 for h in out.hidden_states[:-1])
    assert feats.shape == (2, model.num_features)
    torch.testing.assert_close(captured["x"], feats)
    torch.testing.assert_close(out.hidden_states[-1], feats)
    torch.testing.assert_close(model.classifier(feats), out.logits)


def test_return_tuple_and_default_hidden_states():
    model = create_model("resnet8", num_labels=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        tup = model(x, labels=torch.tensor([0, 1]), return_dict=False)
    assert out.hidden_states is None and out.loss is None
    assert isinstance(tup, tuple) and len(tup) == 2 and tup[1].shape == (2, 10)
    torch.testing.assert_close(tup[1], out.logits)


def test_other_resolution_uses_global_pooling():
    model = create_model("vgg8", num_labels=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, 10)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("mobile_half", "MobileNetV2"),
        ("MobileNetV2_CIFAR", "MobileNetV2"),
        ("shufflev1", "ShuffleV1"),
        ("shufflev2", "ShuffleV2"),
        ("resnet50_cifar", "ResNet50"),
        ("RESNET8X4", "resnet8x4"),
        ("WRN_16_2", "wrn_16_2"),
    ],
)
def test_aliases_are_case_insensitive(alias, canonical):
    assert CifarConfig(architecture=alias).architecture == canonical


def test_create_model_alias_and_labels():
    model = create_model("shufflev1", num_labels=3, id2label={0: "cat", 1: "dog", 2: "frog"})
    assert isinstance(model, CifarForImageClassification)
    assert model.config.architecture == "ShuffleV1"
    assert model.config.num_labels == 3 and model.classifier.out_features == 3
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "frog"}
    assert model.config.label2id == {"cat": 0, "dog": 1, "frog": 2}


def test_fresh_init_follows_benchmark():
    model = create_model("resnet32x4", num_labels=100)
    conv = model.backbone.layer3[1].conv2.weight  # 3x3, 256 -> 256
    expected_std = (2.0 / (3 * 3 * 256)) ** 0.5  # kaiming normal, fan_out, relu
    assert abs(conv.std().item() - expected_std) / expected_std < 0.05
    bn = model.backbone.layer3[1].bn2
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    vgg = create_model("vgg8", num_labels=100)
    assert abs(vgg.classifier.weight.std().item() - 0.01) < 0.002 and torch.all(vgg.classifier.bias == 0)


def _perturb_bn_statistics(model):
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))
    model.eval()


@pytest.mark.parametrize("name", ["resnet8x4", "ShuffleV2"])
def test_save_pretrained_round_trip(tmp_path, name):
    torch.manual_seed(0)
    model = create_model(name, num_labels=100)
    _perturb_bn_statistics(model)
    model.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "relkd_cifar" and saved["architecture"] == name
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_relkd_cifar.CifarConfig",
        "AutoModelForImageClassification": "modeling_relkd_cifar.CifarForImageClassification",
    }
    assert (tmp_path / "configuration_relkd_cifar.py").is_file()
    assert (tmp_path / "modeling_relkd_cifar.py").is_file()

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).logits
    for loader in (CifarForImageClassification, AutoModelForImageClassification):
        loaded = loader.from_pretrained(tmp_path).eval()
        assert isinstance(loaded, CifarForImageClassification)  # local registration, no remote code
        state, loaded_state = model.state_dict(), loaded.state_dict()
        assert state.keys() == loaded_state.keys()
        assert all(torch.equal(state[k], loaded_state[k]) for k in state)
        with torch.no_grad():
            assert torch.equal(loaded(x).logits, ref)


def test_from_pretrained_with_new_head_keeps_backbone(tmp_path):
    model = create_model("resnet8", num_labels=100)
    _perturb_bn_statistics(model)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(
        tmp_path, num_labels=10, ignore_mismatched_sizes=True
    )
    assert loaded.classifier.out_features == 10
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, loaded.backbone.state_dict()[key]), key
    assert torch.isfinite(loaded.classifier.weight).all() and loaded.classifier.weight.std() > 0


_REMOTE_CODE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class _BlockHfRelkd(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname == "hf_relkd" or fullname.startswith("hf_relkd."):
                raise ImportError("hf_relkd is blocked in this test")
            return None

    sys.meta_path.insert(0, _BlockHfRelkd())
    try:
        import hf_relkd  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("hf_relkd should not be importable here")

    import torch
    from transformers import AutoModelForImageClassification

    folder, reference = sys.argv[1], sys.argv[2]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert "hf_relkd" not in type(model).__module__, type(model).__module__
    assert not any(name.split(".")[0] == "hf_relkd" for name in sys.modules)
    x, expected = torch.load(reference)
    with torch.no_grad():
        logits = model(x).logits
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    print("REMOTE_OK", type(model).__module__, type(model).__name__)
    """
)


def test_remote_code_loads_without_hf_relkd(tmp_path):
    torch.manual_seed(0)
    model = create_model("wrn_16_2", num_labels=100)
    _perturb_bn_statistics(model)
    folder = tmp_path / "wrn_16_2-cifar100"
    model.save_pretrained(folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.save((x, model(x).logits), tmp_path / "reference.pt")

    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.update(
        HF_MODULES_CACHE=str(tmp_path / "hf_modules"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        OMP_NUM_THREADS="1",
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _REMOTE_CODE_SCRIPT, str(folder), str(tmp_path / "reference.pt")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REMOTE_OK" in proc.stdout and "CifarForImageClassification" in proc.stdout


def test_convert_repdistiller_state_dict():
    model = create_model("MobileNetV2", num_labels=100)
    # Rebuild a benchmark-style checkpoint: un-prefixed backbone keys, `classifier.0.*` head, DataParallel prefix.
    benchmark = {}
    for key, value in model.state_dict().items():
        key = (
            key.replace("backbone.", "", 1)
            if key.startswith("backbone.")
            else key.replace("classifier.", "classifier.0.")
        )
        benchmark["module." + key] = value
    converted = convert_repdistiller_state_dict({"model": benchmark, "epoch": 240})
    assert converted.keys() == model.state_dict().keys()
    model.load_state_dict(converted, strict=True)


def test_create_model_timm_architecture():
    model = create_model("resnet18", 10)
    assert isinstance(model, TimmWrapperForImageClassification)
    assert model.config.architecture == "resnet18" and model.config.num_labels == 10
    # timm's own initialisation is kept (zero-init of the last BN in each residual branch)
    assert torch.all(model.timm_model.layer1[0].bn2.weight == 0)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).logits.shape == (2, 10)
        assert model(torch.randn(2, 3, 64, 64)).logits.shape == (2, 10)


def test_timm_prefix_bypasses_zoo_name():
    assert isinstance(create_model("resnet50_cifar", 10), CifarForImageClassification)
    model = create_model("timm/resnet14t", 10, drop_rate=0.1)
    assert isinstance(model, TimmWrapperForImageClassification)
    assert model.config.model_args == {"drop_rate": 0.1}


def test_unknown_name_raises_helpful_error():
    with pytest.raises(ValueError) as excinfo:
        create_model("resnet8x5", 100)
    message = str(excinfo.value)
    assert "resnet8x5" in message and "timm" in message
    assert all(name in message for name in CIFAR_MODELS)
    with pytest.raises(ValueError):
        create_model("definitely_not_a_model", 10)
    with pytest.raises(ValueError, match="pretrained"):
        create_model("resnet8", 10, pretrained=True)
    with pytest.raises(ValueError):
        CifarConfig(architecture="resnet9")


def _enable_checkpointing(model, **kwargs):
    # transformers >= 5 names it activation checkpointing; 4.x only has the gradient_checkpointing_* spelling
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs or None)


def _saved_activation_bytes(model, x) -> tuple[int, torch.Tensor]:
    """Bytes of the distinct storages autograd keeps for backward (checkpointed blocks keep only their inputs)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(pixel_values=x).logits
    return sum(seen.values()), logits


# one architecture per block type: basic, bottleneck, wide pre-activation, VGG stage, inverted residual, ShuffleNet
@pytest.mark.parametrize(
    "name, use_reentrant",
    [
        ("resnet8x4", False),
        ("resnet8x4", True),
        ("ResNet50", False),
        ("wrn_16_1", False),
        ("vgg8", False),
        ("MobileNetV2", False),
        ("ShuffleV1", False),
        ("ShuffleV2", False),
    ],
)
def test_activation_checkpointing_keeps_less_and_changes_nothing(name, use_reentrant):
    """With activation checkpointing the zoo networks keep a fraction of the activations for backward, and one
    training step gives bit-for-bit the same logits, gradients and BatchNorm running statistics: the backward re-run
    must not update the running statistics a second time (plain ``torch.utils.checkpoint`` would)."""
    torch.manual_seed(0)
    plain = create_model(name, num_labels=10).train()
    checkpointed = create_model(name, num_labels=10).train()
    checkpointed.load_state_dict(plain.state_dict())
    _enable_checkpointing(checkpointed, use_reentrant=use_reentrant)
    assert checkpointed.supports_gradient_checkpointing
    x, labels = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))

    plain_bytes, plain_logits = _saved_activation_bytes(plain, x)
    kept_bytes, logits = _saved_activation_bytes(checkpointed, x)
    assert kept_bytes < 0.6 * plain_bytes
    torch.testing.assert_close(logits, plain_logits, rtol=0, atol=0)
    for out in (plain_logits, logits):
        nn.functional.cross_entropy(out, labels).backward()
    for (param_name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=param_name)
    for (buffer_name, b), c in zip(plain.named_buffers(), checkpointed.buffers()):
        torch.testing.assert_close(c, b, rtol=0, atol=0, msg=buffer_name)


def test_activation_checkpointing_is_inert_in_evaluation():
    model = create_model("resnet8", num_labels=10)
    _enable_checkpointing(model)
    blocks = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    assert len(blocks) == 3  # the three residual blocks of resnet8
    model.eval()
    kept, _ = _saved_activation_bytes(model, torch.randn(2, 3, 32, 32))
    model.train()
    kept_training, _ = _saved_activation_bytes(model, torch.randn(2, 3, 32, 32))
    assert kept > kept_training  # evaluation with gradients keeps everything; training checkpoints


def _reference_block(block, x):
    """The residual blocks written out of place from their own sub-modules (the textbook formulas)."""
    from hf_relkd.models.cifar.modeling_relkd_cifar import CifarBasicBlock

    relu = nn.functional.relu
    if isinstance(block, CifarBasicBlock):
        identity = x if block.downsample is None else block.downsample(x)
        out = block.bn2(block.conv2(relu(block.bn1(block.conv1(x)))))
        return relu(out + identity)
    out = relu(block.bn2(block.conv2(relu(block.bn1(block.conv1(x))))))
    return relu(block.bn3(block.conv3(out)) + block.shortcut(x))


@pytest.mark.parametrize("name", ["resnet14", "ResNet50"])
@pytest.mark.parametrize("autocast", [False, True])
def test_in_place_block_activations_match_the_out_of_place_formula(name, autocast):
    """The residual blocks add and rectify in place (memory); outputs, input gradients, parameter gradients and
    BatchNorm statistics must equal the out-of-place formula's, for blocks with and without a projection shortcut,
    in float32 and under bfloat16 autocast."""
    from hf_relkd.models.cifar.modeling_relkd_cifar import CifarBasicBlock, CifarBottleneck

    torch.manual_seed(0)
    model = create_model(name, num_labels=10).train()
    blocks = [m for m in model.modules() if isinstance(m, (CifarBasicBlock, CifarBottleneck))]
    projected = [
        getattr(b, "downsample", None) is not None or len(getattr(b, "shortcut", ())) > 0 for b in blocks
    ]
    assert any(projected) and not all(projected)
    checked = 0
    for block, in_planes in [(b, b.conv1.in_channels) for b in blocks][:6]:
        reference = copy.deepcopy(block)
        x = torch.randn(4, in_planes, 8, 8, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out, expected = block(x), _reference_block(reference, x_ref)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        grad = torch.randn_like(out)
        out.backward(grad)
        expected.backward(grad)
        torch.testing.assert_close(x.grad, x_ref.grad, rtol=0, atol=0)
        for (param_name, p), q in zip(block.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, msg=param_name)
        for (buffer_name, b), c in zip(block.named_buffers(), reference.buffers()):
            torch.testing.assert_close(b, c, rtol=0, atol=0, msg=buffer_name)
        checked += 1
    assert checked >= 3
