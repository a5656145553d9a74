"""scripts/boundary_errors.py: a --keep folder's wrong pixels by distance to the boundary."""

from __future__ import annotations

import numpy as np
import pytest
from script_loader import load_script


def _keep_folder(root, shifted_column: int):
    import tifffile

    truth = np.ones((6, 14), dtype=np.uint8)
    truth[:, 6:8] = 0
    pred = truth.copy()
    pred[:, shifted_column] = 0
    for part, image in (("truth", truth), ("pred", pred)):
        (root / part).mkdir(parents=True)
        tifffile.imwrite(root / part / "slice_1.tif", image)
    return root


def test_a_membrane_one_pixel_wide_is_told_as_boundary_error(tmp_path, capsys):
    folder = _keep_folder(tmp_path / "keep", shifted_column=5)
    assert load_script("boundary_errors").main([str(folder)]) == 0
    out = capsys.readouterr().out
    # 6 of 84 pixels wrong, all beside the boundary; moved by a pixel the truth
    # keeps 11 of 13 columns along x and everything along y.
    assert "slice_1                        0.9286  0.0714  0.0000  0.0000  0.0000  0.9231" in out
    assert "100% of the wrong pixels lie <= 1 pixel of the true boundary" in out


def test_a_folder_without_predictions_is_one_clear_line(tmp_path):
    with pytest.raises(SystemExit, match="holds no pred/ and truth/"):
        load_script("boundary_errors").main([str(tmp_path)])
