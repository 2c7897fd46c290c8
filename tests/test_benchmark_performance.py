"""benchmarks/performance.py's count of what autodiff saves for the backward pass, the figure
that says whether model.remat took effect before XLA compiles anything."""
from benchmarks.performance import saved_residual_bytes
from utils.cli import load_config_file

LENGTH, BATCH, VOCAB = 32, 2, 50


def test_saved_residuals_shrink_to_the_block_inputs_under_remat():
  saved = {}
  for remat in (False, True):
    config = load_config_file("configs/mlm_extrapolation.py:smoke")
    config.model.remat = remat
    saved[remat] = saved_residual_bytes(config, LENGTH, BATCH, VOCAB)
  m = config.model
  probabilities = m.num_layers * BATCH * m.num_heads * LENGTH * LENGTH * 4  # float32
  block_inputs = m.num_layers * BATCH * LENGTH * m.width * 4
  # without remat every block keeps at least its attention probabilities; with it, its input
  # (and the head's and the loss's few residuals), far less
  assert saved[False] > probabilities
  assert block_inputs <= saved[True] < saved[False] / 2
