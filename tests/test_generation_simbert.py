"""SimBERT generation end to end: a tiny SimBERT trained in this process on a deterministic
paraphrase (each lowercase letter of a to a fixed capital in b) regenerates the targets of
held-out inputs, and evaluate.py --generate prints them with their cosine similarity."""
from __future__ import annotations

import dataclasses
import os

import entry_points
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import flags

from configs import contrastive_batch
from data import sts
from data.tokenizers import PAD, CharTokenizer
from generation import similar
from model.config import ModelConfig
from model.sentence import SentenceEncoder
from training import contrastive
from training import workdir as wd
from training.checkpoint import Checkpointer
from training.optimizer import make_optimizer
from training.state import TrainState
from utils.errors import UserError
from utils.files import atomic_write_json

LOWER, UPPER = "abcdefgh", "HGFEDCBA"
STEPS = 120


def paraphrase(a: str) -> str:
  return a.translate(str.maketrans(LOWER, UPPER))


def words(rng, n):
  return ["".join(rng.choice(list(LOWER), 4)) for _ in range(n)]


def simbert_workdir(path, config, tok, model, params, step):
  """A contrastive workdir as train.py leaves it (config, tokenizer, model, checkpoint)."""
  wd.prepare(path, config)
  tok.save(path)
  atomic_write_json(os.path.join(path, contrastive.MODEL_FILE),
                    {"model": dataclasses.asdict(model.cfg), "tokenizer": tok.kind})
  ckpt = Checkpointer(path, async_save=False)
  ckpt.save(step, TrainState.create(params, make_optimizer(config.train)), force=True)
  ckpt.close()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(workdir, held-out inputs): SimBERT's generation loss alone (the target convention of
  training/contrastive.make_embed), STEPS Adam steps of 64 sequences of either ordering, so
  that a -> b and b -> a are both learned."""
  rng = np.random.default_rng(0)
  train = words(rng, 400)
  held_out = [w for w in words(rng, 40) if w not in train][:20]
  config = contrastive_batch.get_config(
      f"smoke,signal=simbert,pairing=all,sts=,steps={STEPS},batch=64,accumulation=none,"
      "max_len=12,lr=1e-2,dropout=0,width=32,heads=2,layers=1")
  pairs = sts.StsData(train, [paraphrase(a) for a in train], np.full(len(train), 5.0))
  tok = CharTokenizer.train(pairs.sentences())
  model_cfg = ModelConfig.for_run(config.model.to_dict(), vocab_size=tok.vocab_size,
                                  train_length=config.data.max_len)
  model = contrastive.sentence_model(config, model_cfg)
  # both orderings of every pair, [CLS] a [SEP] b [SEP] and [CLS] b [SEP] a [SEP]
  arrays = {k: jnp.asarray(v.reshape(-1, v.shape[-1]))
            for k, v in contrastive.example_arrays(config, tok, pairs).items()}
  tx = optax.adam(config.train.learning_rate)

  def loss(params, tokens, segments):  # position t predicts token t + 1 of segment B
    logits = model.apply({"params": params}, tokens, tokens != PAD, segments,
                         method=SentenceEncoder.seq2seq)[1]
    weights = (segments[:, 1:] == 1).astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return jnp.sum(nll * weights) / jnp.sum(weights)

  @jax.jit
  def train_all(key, batches):  # every step in one program: one compilation
    def update(carry, index):
      params, opt = carry
      grads = jax.grad(loss)(params, arrays["tokens"][index], arrays["segments"][index])
      updates, opt = tx.update(grads, opt)
      return (optax.apply_updates(params, updates), opt), None

    params = contrastive.init_params(model, key, config.data.max_len)
    return jax.lax.scan(update, (params, tx.init(params)), batches)[0][0]

  batches = np.stack([rng.choice(len(arrays["tokens"]), 64, replace=False)
                      for _ in range(STEPS)])
  params = train_all(jax.random.PRNGKey(0), batches)
  workdir = str(tmp_path_factory.mktemp("simbert") / "run")
  simbert_workdir(workdir, config, tok, model, params, STEPS)
  return workdir, held_out


def test_greedy_decoding_regenerates_the_paraphrase_of_held_out_inputs(trained):
  workdir, held_out = trained
  # a -> b, and the other ordering, also trained: b -> a
  inputs = held_out + [paraphrase(a) for a in held_out]
  result = contrastive.evaluate(workdir, generate=1, text=inputs)
  assert result["step"] == STEPS
  got = [r["candidates"][0]["text"] for r in result["generations"]]
  assert [r["input"] for r in result["generations"]] == inputs
  n = len(held_out)
  forward = sum(g == paraphrase(a) for g, a in zip(got[:n], held_out))
  backward = sum(g == a for g, a in zip(got[n:], held_out))
  assert forward >= 0.8 * n and backward >= 0.8 * n, list(zip(inputs, got))


def test_evaluate_py_generate_prints_the_candidates_with_their_similarity(trained, capsys,
                                                                          tmp_path):
  workdir, held_out = trained
  inputs = held_out[:3]
  path = tmp_path / "inputs.txt"
  path.write_text("".join(a + "\n" for a in inputs[:2]))
  evaluate = entry_points.module("evaluate")
  flags.FLAGS(["evaluate.py", "--workdir", workdir, "--generate", "1", "--inputs", str(path),
               "--text", inputs[2]])
  try:
    assert evaluate.main(["evaluate.py"]) == 0
  finally:
    flags.FLAGS.unparse_flags()
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == (f"{workdir}: similar sentences at step {STEPS} (greedy, at most 5 "
                      "tokens), by cosine similarity to the input")
  run = contrastive.load(workdir)
  apply = jax.jit(lambda tokens: run.model.apply({"params": run.params}, tokens, tokens != PAD))

  def embedding(s):  # the model's own embedding, outside generation/ and evaluation/
    return np.asarray(apply(sts.encode_sentences(run.tokenizer, [s], run.config.data.max_len)))[0]

  # the file's sentences, then --text's; one candidate each, mostly the paraphrase
  assert lines[1::2] == [f"input: {a}" for a in inputs]
  candidates = [line.split() for line in lines[2::2]]
  assert sum(text == paraphrase(a) for a, (_, text) in zip(inputs, candidates)) >= 2
  for a, (similarity, text) in zip(inputs, candidates):
    e, c = embedding(a), embedding(text)
    assert float(similarity) == pytest.approx(e @ c / np.linalg.norm(e) / np.linalg.norm(c),
                                              abs=1e-4)


def test_generation_options_that_do_not_fit_are_refused_in_one_line(trained, tmp_path):
  workdir, held_out = trained
  cases = [
      (dict(generate=3), "greedy decoding gives one candidate per input, not 3"),
      (dict(generate=1, text=["abcd"], strategy="beam", beam_width=0), "--beam_width 0"),
      (dict(generate=1, text=["abcd"], strategy="greedy", top_k=3), "apply to --strategy "
       "sample"),
      (dict(generate=1), "--generate needs input sentences"),
      (dict(text=["abcd"]), "--text is an option of --generate N"),
      (dict(generate=1, text=["abcd"], strategy="sample", top_p=1.5), "top_p must be in"),
  ]
  for options, words_ in cases:
    with pytest.raises(UserError, match=words_) as e:
      contrastive.evaluate(workdir, **options)
    assert "\n" not in str(e.value)
  # a workdir trained without SimBERT's head: named, before anything is loaded
  other = str(tmp_path / "supervised")
  wd.prepare(other, contrastive_batch.get_config("smoke"))
  with pytest.raises(UserError, match="trained with data.signal=supervised, without a "
                     "language-model head; --generate needs a run trained with signal=simbert"):
    contrastive.evaluate(other, generate=1, text=["abcd"])
  # a model the cache cannot decode, refused before a checkpoint is looked for (it has none)
  shaw = str(tmp_path / "shaw")
  config = contrastive_batch.get_config("smoke,signal=simbert,pairing=all")
  config.model.position = "shaw"
  wd.prepare(shaw, config)
  tok = CharTokenizer.train(["abcd"])
  tok.save(shaw)
  cfg = ModelConfig.for_run(config.model.to_dict(), vocab_size=tok.vocab_size, train_length=24)
  atomic_write_json(os.path.join(shaw, contrastive.MODEL_FILE),
                    {"model": dataclasses.asdict(cfg), "tokenizer": tok.kind})
  with pytest.raises(UserError, match="^position=shaw cannot decode with a key/value cache"):
    contrastive.evaluate(shaw, generate=1, text=["abcd"])


def test_candidates_are_distinct_and_ranked_by_cosine_similarity():
  vectors = {"in": [1.0, 0.0], "far": [0.0, 2.0], "near": [3.0, 1.0], "mid": [1.0, 1.0],
             "opposite": [-1.0, 0.1]}
  embed = lambda texts: np.array([vectors[t] for t in texts])
  out = similar.ranked("in", ["far", "mid", "near", "mid", "opposite"], embed)
  assert [c["text"] for c in out] == ["near", "mid", "far", "opposite"]
  assert [c["similarity"] for c in out] == pytest.approx(
      [3 / np.sqrt(10), 1 / np.sqrt(2), 0.0, -1 / np.sqrt(1.01)])
