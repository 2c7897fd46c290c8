"""GlobalPointer NER pieces against independent formulas and hand cases: the multi-label loss
(numpy formula, finite differences), the head's scores (q.k with RoPE rotated by hand, the
efficient head's biases, the span mask, dependence on j - i only), span labels, decoding and
entity F1 with nested spans, the BIO / CLUENER readers and their refusals, and encoding."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data import ner
from data.corpus import DataError
from data.tokenizers import CLS, PAD, SEP, CharTokenizer
from evaluation.ner import decode, entity_f1
from model.globalpointer import NEG, GlobalPointer, span_mask
from objectives.globalpointer import globalpointer_loss, multilabel_crossentropy, span_labels


def _numpy_loss(scores, labels):
  """The formula written out: per (example, type), log(1 + sum_neg e^s) + log(1 + sum_pos
  e^-s) over the flattened (i, j) grid; then the mean."""
  s = np.asarray(scores, np.float64)
  out = []
  for b in range(s.shape[0]):
    for t in range(s.shape[1]):
      x, y = s[b, t].ravel(), labels[b, t].ravel()
      out.append(np.log1p(np.exp(x[~y]).sum()) + np.log1p(np.exp(-x[y]).sum()))
  return np.mean(out)


def _random_case(seed=0, b=2, t=3, n=5):
  rng = np.random.default_rng(seed)
  scores = rng.normal(0, 2, (b, t, n, n)).astype(np.float32)
  labels = rng.random((b, t, n, n)) < 0.2
  labels[0, 0] = False  # a type with no entity: only the negative term
  return scores, labels


def test_loss_equals_the_formula():
  scores, labels = _random_case()
  loss = jax.jit(globalpointer_loss)  # one program, not an eager dispatch per operation
  got = float(loss(jnp.asarray(scores), jnp.asarray(labels)))
  assert got == pytest.approx(_numpy_loss(scores, labels), rel=1e-6)
  # masked spans carry NEG: they add e^NEG = 0, as if absent from the sum
  masked = np.where(np.tril(np.ones((5, 5), bool), -1), NEG, scores).astype(np.float32)
  keep = ~np.tril(np.ones((5, 5), bool), -1)
  labels = labels & keep
  expected = np.mean([np.log1p(np.exp(scores[b, t][keep & ~labels[b, t]]).sum()) +
                      np.log1p(np.exp(-scores[b, t][labels[b, t]]).sum())
                      for b in range(2) for t in range(3)])
  assert float(loss(masked, labels)) == pytest.approx(expected, rel=1e-6)


def test_loss_gradient_equals_finite_differences():
  scores, labels = _random_case(seed=1, b=1, t=2, n=4)
  f = jax.jit(lambda s: multilabel_crossentropy(s.reshape(2, -1), labels.reshape(2, -1)).sum())
  grad = np.asarray(jax.jit(jax.grad(f))(jnp.asarray(scores)), np.float64)
  # central differences of the numpy formula in float64, every coordinate
  numeric = np.zeros_like(grad)
  eps = 1e-6
  for idx in np.ndindex(scores.shape):
    up, down = scores.astype(np.float64), scores.astype(np.float64)
    up[idx] += eps
    down[idx] -= eps
    # (_numpy_loss is the mean over the 2 types; f their sum)
    numeric[idx] = (_numpy_loss(up, labels) - _numpy_loss(down, labels)) * 2 / (2 * eps)
  np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
  # and of the implementation itself along a random direction (float32, larger step)
  v = np.random.default_rng(2).normal(size=scores.shape).astype(np.float32)
  fd = (f(jnp.asarray(scores + 1e-2 * v)) - f(jnp.asarray(scores - 1e-2 * v))) / 2e-2
  assert float(fd) == pytest.approx(float((grad * v).sum()), rel=2e-3)


def _rope_by_hand(x, base=10000.0):
  """x [n, t, d] rotated pair by pair: (x0, x1) at position m by m * base^(-2p/d)."""
  n, _, d = x.shape
  out = np.empty_like(x, dtype=np.float64)
  for m in range(n):
    for p in range(d // 2):
      a = m * base ** (-2 * p / d)
      x0, x1 = x[m, :, 2 * p], x[m, :, 2 * p + 1]
      out[m, :, 2 * p] = x0 * np.cos(a) - x1 * np.sin(a)
      out[m, :, 2 * p + 1] = x0 * np.sin(a) + x1 * np.cos(a)
  return out


@pytest.fixture(scope="module", params=[False, True], ids=["globalpointer", "efficient"])
def head(request):
  """(jitted apply, params, h [1, 9, 8], spannable with the last token padding, efficient) of
  a head with 2 types and d = 4; one compiled program serves every test of a head."""
  rng = np.random.default_rng(0)
  h = rng.normal(size=(1, 9, 8)).astype(np.float32)
  spannable = np.ones((1, 9), bool)
  spannable[0, -1] = False
  module = GlobalPointer(2, 4, efficient=request.param)
  params = jax.jit(module.init)(jax.random.PRNGKey(0), h, spannable)["params"]
  return jax.jit(module.apply), params, h, spannable, request.param


def test_head_scores_equal_rotated_q_dot_k_by_hand(head):
  apply, params, h, spannable, efficient = head
  got = np.asarray(apply({"params": params}, h, spannable))
  n, t, d = h.shape[1], 2, 4
  p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
  qk = h[0].astype(np.float64) @ p["qk"]["kernel"] + p["qk"]["bias"]
  if efficient:  # one q, k for every type, plus start(i) and end(j) biases of the projection
    q, k = _rope_by_hand(qk[:, None, :d]), _rope_by_hand(qk[:, None, d:])
    bias = (qk @ p["bias"]["kernel"] + p["bias"]["bias"]) / 2
    expected = np.array([[[q[i, 0] @ k[j, 0] / np.sqrt(d) + bias[i, a] + bias[j, t + a]
                           for j in range(n)] for i in range(n)] for a in range(t)])
  else:  # a q, k pair per type
    qk = qk.reshape(n, t, 2 * d)
    q, k = _rope_by_hand(qk[..., :d]), _rope_by_hand(qk[..., d:])
    expected = np.array([[[q[i, a] @ k[j, a] / np.sqrt(d) for j in range(n)]
                          for i in range(n)] for a in range(t)])
  span = np.triu(np.ones((n, n), bool)) & spannable[0][:, None] & spannable[0][None, :]
  np.testing.assert_allclose(got[0][:, span], expected[:, span], rtol=1e-5, atol=1e-5)
  assert (got[0][:, ~span] == NEG).all()  # j < i and the padded token: never a span


def test_head_scores_depend_on_j_minus_i_for_fixed_content(head):
  apply, params, h, _, _ = head
  every = np.ones((1, 9), bool)
  base = np.asarray(apply({"params": params}, h, every))
  shifted = np.asarray(apply({"params": params}, np.roll(h, 3, axis=1), every))
  # the same content three positions later: the same score for every span inside it
  np.testing.assert_allclose(shifted[0][:, 3:, 3:], base[0][:, :6, :6], rtol=1e-5, atol=1e-5)
  # and the rotation matters: without shifting the content the scores differ
  assert np.abs(shifted[0][:, 3:, 3:] - base[0][:, 3:, 3:]).max() > 1e-2


def test_span_mask_and_labels():
  spannable = np.array([[False, True, True, False]])  # [CLS] a b [SEP]
  mask = np.asarray(span_mask(spannable))[0, 0]
  assert {tuple(x) for x in np.argwhere(mask)} == {(1, 1), (1, 2), (2, 2)}
  spans = np.array([[[1, 1, 2], [0, 2, 2], [-1, -1, -1]], [[0, 1, 1], [-1, -1, -1],
                                                           [-1, -1, -1]]])
  labels = np.asarray(jax.jit(span_labels, static_argnums=(1, 2))(jnp.asarray(spans), 2, 4))
  assert {tuple(x) for x in np.argwhere(labels)} == {(0, 1, 1, 2), (0, 0, 2, 2), (1, 0, 1, 1)}


def test_decoding_keeps_nested_spans_and_f1_counts_exact_matches():
  types = ["LOC", "ORG"]
  scores = np.full((2, 6, 6), NEG, np.float32)
  scores[:, 1:5, 1:5] = -3.0
  scores[0, 1, 2] = 2.0  # LOC chars 0-1, nested in ...
  scores[1, 1, 4] = 0.5  # ... ORG chars 0-3
  scores[0, 3, 3] = 0.0  # not above the threshold
  assert decode(scores, types) == {("LOC", 0, 1), ("ORG", 0, 3)}
  gold = [{("LOC", 0, 1), ("ORG", 0, 3), ("PER", 5, 6)}, set()]
  pred = [{("LOC", 0, 1), ("ORG", 0, 3), ("LOC", 0, 3)}, {("PER", 1, 1)}]
  # 2 right of 4 predicted, of 3 gold; a right span with the wrong type counts as wrong
  f = entity_f1(gold, pred)
  assert (f["correct"], f["predicted"], f["gold"]) == (2, 4, 3)
  assert f["precision"] == 0.5 and f["recall"] == pytest.approx(2 / 3)
  assert f["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
  assert entity_f1([set()], [set()])["f1"] == 0.0


BIO = """北 B-LOC
京 I-LOC
的 O
王 B-PER
强 I-PER

他 O
在 I-ORG
上 I-ORG
海 B-LOC
"""


def test_bio_reader(tmp_path):
  path = tmp_path / "a.bio"
  path.write_text(BIO + "\n\n", encoding="utf-8")
  got = ner.read_bio(str(path))
  assert [s.text for s in got] == ["北京的王强", "他在上海"]
  assert got[0].entities == {("LOC", 0, 1), ("PER", 3, 4)}
  # an I- that continues nothing starts an entity (conlleval); one at the end is closed
  assert got[1].entities == {("ORG", 1, 2), ("LOC", 3, 3)}


@pytest.mark.parametrize("text, where, what", [
    ("北 B-LOC\n京 E-LOC\n", ":2:", "tag 'E-LOC' is not BIO"),
    ("北 B-LOC\n京 I-LOC extra\n", ":2:", "expected `character tag`"),
    ("北京 B-LOC\n", ":1:", "expected `character tag`"),
    ("\n\n", "", "no sentences"),
])
def test_bio_reader_refusals(tmp_path, text, where, what):
  path = tmp_path / "bad.bio"
  path.write_text(text, encoding="utf-8")
  with pytest.raises(DataError) as e:
    ner.read_bio(str(path))
  assert f"bad.bio{where}" in str(e.value) and what in str(e.value)
  assert "\n" not in str(e.value)


def _cluener(text, label):
  return json.dumps({"text": text, "label": label}, ensure_ascii=False)


def test_cluener_reader(tmp_path):
  path = tmp_path / "a.json"
  path.write_text(_cluener("浙商银行企业信贷部叶老桂", {
      "name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]},
      "address": {"浙商": [[0, 1]]}}) + "\n\n" + _cluener("你好", {}) + "\n", encoding="utf-8")
  got = ner.read_cluener(str(path))
  assert [s.text for s in got] == ["浙商银行企业信贷部叶老桂", "你好"]
  # nested: the address inside the company
  assert got[0].entities == {("name", 9, 11), ("company", 0, 3), ("address", 0, 1)}
  assert got[1].entities == frozenset()
  assert ner.entity_types(got) == ["address", "company", "name"]


@pytest.mark.parametrize("line, what", [
    (_cluener("abc", {"x": {"bc": [[1, 3]]}}), "span [1, 3] is out of range"),
    (_cluener("abc", {"x": {"bc": [[0, 1]]}}), "is 'ab' in the text, not 'bc'"),
    (_cluener("abc", {"x": {"bc": [1, 2]}}), "integer pairs"),
    ('{"text": "abc"}', "an unlabelled file"),
    ("{not json", "not JSON"),
])
def test_cluener_reader_refusals(tmp_path, line, what):
  path = tmp_path / "bad.json"
  path.write_text(_cluener("ab", {}) + "\n" + line + "\n", encoding="utf-8")
  with pytest.raises(DataError) as e:
    ner.read_cluener(str(path))
  assert "bad.json:2:" in str(e.value) and what in str(e.value)
  empty = tmp_path / "empty.json"
  empty.write_text("", encoding="utf-8")
  with pytest.raises(DataError, match="empty.json: no sentences"):
    ner.read_ner(str(empty), "cluener")


def test_encode_shifts_by_cls_and_drops_entities_past_the_cut():
  sentences = [ner.Sentence("abcdef", frozenset({("X", 0, 1), ("Y", 2, 3), ("X", 3, 5)})),
               ner.Sentence("ab", frozenset())]
  tok = CharTokenizer.train([s.text for s in sentences])
  out = ner.encode(sentences, tok, ["X", "Y"], length=6)  # 4 characters fit
  assert out["tokens"][0].tolist() == [CLS] + tok.encode("abcd") + [SEP]
  assert out["tokens"][1].tolist() == [CLS] + tok.encode("ab") + [SEP, PAD, PAD]
  assert out["spans"].tolist() == [[[0, 1, 2], [1, 3, 4]], [[-1, -1, -1], [-1, -1, -1]]]
  assert ner.spannable(out["tokens"]).tolist() == [[False] + [True] * 4 + [False],
                                                   [False, True, True, False, False, False]]


def test_synthetic_set_nests_and_is_deterministic():
  a = ner.synthetic_sentences(200, 0)
  assert a == ner.synthetic_sentences(200, 0) and a != ner.synthetic_sentences(200, 1)
  nested = 0
  for s in a:
    for kind, i, j in s.entities:
      assert 0 <= i <= j < len(s.text)
      if kind == "ORG":  # an organisation holds a place or a person from its first character
        inner = [e for e in s.entities if e[0] != "ORG" and e[1] == i and e[2] < j]
        assert len(inner) == 1
        nested += 1
  assert nested > 50 and ner.entity_types(a) == ["LOC", "ORG", "PER"]
