"""An MLM workdir laid out as train.py leaves it, without training: for init_from= tests."""
import jax

from configs import mlm_extrapolation
from data.tokenizers import CharTokenizer
from model.encoder import MlmModel
from training import mlm
from training import workdir as wd
from training.checkpoint import Checkpointer
from training.optimizer import make_optimizer
from training.state import TrainState


def mlm_workdir(path: str, text: str, seed: int, step: int = 3):
  """The smoke MLM config, a char tokenizer of `text` and random parameters (PRNGKey(seed))
  checkpointed at `step` in path; returns (tokenizer, MlmModel, params)."""
  cfg = mlm_extrapolation.get_config("smoke")
  wd.prepare(path, cfg)
  tok = CharTokenizer.train([text])
  tok.save(path)
  model = MlmModel(mlm.model_config(cfg, tok.vocab_size))
  params = jax.jit(lambda k: mlm.init_params(model, k, 16))(jax.random.PRNGKey(seed))
  ckpt = Checkpointer(path, async_save=False)
  ckpt.save(step, TrainState.create(params, make_optimizer(cfg.train)), force=True)
  ckpt.close()
  return tok, model, params
