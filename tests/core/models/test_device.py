from __future__ import annotations

import warnings

import pytest
import torch

from napari_microseg.core.models import device as device_module
from napari_microseg.core.models.device import DeviceWarning, available_devices, select_device


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(device_module, "_mps_available", lambda torch_module: False)


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU 8GB")
    monkeypatch.setattr(device_module, "_mps_available", lambda torch_module: False)


def test_auto_on_a_cpu_only_machine(no_gpu):
    choice = select_device()
    assert (choice.kind, choice.name, choice.note) == ("cpu", "CPU", "")
    assert choice.device == torch.device("cpu") and not choice.is_gpu


def test_auto_prefers_cuda_and_names_the_gpu(one_gpu):
    choice = select_device("auto")
    assert choice.spec == "cuda:0" and str(choice) == "cuda:0 (Fake GPU 8GB)"
    assert select_device("gpu").spec == "cuda:0"


def test_mps_comes_after_cuda(monkeypatch, no_gpu):
    monkeypatch.setattr(device_module, "_mps_available", lambda torch_module: True)
    assert select_device().spec == "mps"
    assert select_device("mps").name == "Apple GPU (MPS)"


def test_explicit_cpu_is_honoured_even_with_a_gpu(one_gpu):
    assert select_device("cpu").spec == "cpu"
    assert select_device(torch.device("cpu")).spec == "cpu"


@pytest.mark.parametrize("request_", ["cuda", "cuda:0", "gpu", "mps"])
def test_missing_gpu_falls_back_to_cpu_with_a_clear_note(no_gpu, request_):
    with pytest.warns(DeviceWarning, match="requested but .* running on the CPU"):
        choice = select_device(request_)
    assert choice.spec == "cpu" and choice.requested == request_
    assert "requested" in choice.note
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: the note only
        assert select_device(request_, warn=False).spec == "cpu"


def test_missing_cuda_index_uses_the_first_gpu(one_gpu):
    with pytest.warns(DeviceWarning, match=r"cuda:3 does not exist.*using cuda:0"):
        assert select_device("cuda:3").spec == "cuda:0"


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", "cpu:1"])
def test_unknown_devices_are_refused(bad):
    with pytest.raises(ValueError, match="Unknown device"):
        select_device(bad)


def test_available_devices_lists_the_cpu_last(one_gpu):
    assert [d.spec for d in available_devices()] == ["cuda:0", "cpu"]
