"""GPU tier (`python -m pytest -m gpu`): the same short FedKTL run on CUDA."""
import os

import numpy as np
import pytest
import torch

import main
from tests.helpers import make_tiny_dataset
from utils.result_utils import read_results

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fedktl_two_rounds_on_cuda(tmp_path):
    make_tiny_dataset(str(tmp_path / "data"), num_clients=4)
    argv = ["-data", "Tiny", "--data_root", str(tmp_path / "data"), "-nc", "4", "-gr", "2",
            "-dev", "cuda", "--out", str(tmp_path / "out"), "-se", "3"]
    assert main.main(argv) == 0
    series, config = read_results(os.path.join(tmp_path / "out", "Tiny_FedKTL_test_0.h5"))
    assert config["device"].startswith("cuda")
    assert np.all(np.isfinite(series["rs_test_acc"])) and len(series["rs_test_acc"]) == 3
