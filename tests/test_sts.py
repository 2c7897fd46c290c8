"""STS data readers, Spearman (against scipy), whitening, batches (data/sts.py, evaluation/)."""
import math

import numpy as np
import pytest
import scipy.stats

from data import sts
from data.corpus import DataError
from data.tokenizers import CLS, PAD, SEP, CharTokenizer
from evaluation import whitening
from evaluation.sts import rank_average, spearman, sts_spearman


@pytest.mark.parametrize("seed", range(4))
def test_spearman_matches_scipy_with_and_without_ties(seed):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=50)
  y = x + rng.normal(size=50)
  assert spearman(x, y) == pytest.approx(scipy.stats.spearmanr(x, y)[0], abs=1e-12)
  # heavy ties on both sides (STS scores are often integers)
  xt, yt = rng.integers(0, 5, 60), rng.integers(0, 4, 60) + (rng.random(60) < 0.5)
  assert spearman(xt, yt) == pytest.approx(scipy.stats.spearmanr(xt, yt)[0], abs=1e-12)
  np.testing.assert_allclose(rank_average(xt), scipy.stats.rankdata(xt))


def test_spearman_edge_cases():
  assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
  assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
  assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # undefined, as scipy says
  with pytest.raises(ValueError):
    spearman([1, 2], [1, 2, 3])


def _write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_read_sts_benchmark_with_split_column(tmp_path):
  path = _write(tmp_path, "stsb.tsv",
                "split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2\n"
                "train\tmain-captions\tMSRvid\t2012test\t0001\t5.000\tA plane.\tAn air plane.\n"
                "dev\tmain-news\theadlines\t2013\t0002\t1.5\tCats sleep.\tDogs bark.\n"
                "train\tmain-forums\tdeft\t2014\t0003\t4.2\tHi there\tHello there\n")
  all_rows = sts.read_sts(path)
  assert all_rows.s1 == ["A plane.", "Cats sleep.", "Hi there"]
  np.testing.assert_allclose(all_rows.scores, [5.0, 1.5, 4.2])
  dev = sts.read_sts(path, "dev")
  assert (dev.s1, dev.s2, list(dev.scores)) == (["Cats sleep."], ["Dogs bark."], [1.5])
  assert sts.read_sts(path, "train").positives(4.0).s2 == ["An air plane.", "Hello there"]
  with pytest.raises(DataError, match="valid names"):
    sts.read_sts(path, "validation")


def test_read_official_sts_and_plain_formats(tmp_path):
  official = _write(tmp_path, "sts-dev.csv",
                    "main-captions\tMSRvid\t2012test\t0000\t5.000\tA man.\tA guy.\textra\tmore\n")
  d = sts.read_sts(official)
  assert (d.s1, d.s2, list(d.scores)) == (["A man."], ["A guy."], [5.0])
  plain = _write(tmp_path, "STS-B.valid.data", "一架飞机要起飞了。\t一架飞机正在起飞。\t5\n\n猫\t狗\t0\n")
  d = sts.read_sts(plain)
  assert d.s2 == ["一架飞机正在起飞。", "狗"] and list(d.scores) == [5.0, 0.0]
  assert d.sentences() == ["一架飞机要起飞了。", "一架飞机正在起飞。", "猫", "狗"]


@pytest.mark.parametrize("text,message", [
    ("a\tb\t5\nonly one field\n", r"bad\.tsv:2: expected 3 tab-separated fields"),
    ("a\tb\tfive\n", r"bad\.tsv:1: score 'five' is not a number"),
    ("a\tb\tnan\n", r"bad\.tsv:1: score 'nan' is not finite"),
    ("a\t \t3\n", r"bad\.tsv:1: empty sentence"),
    ("\n\n", r"no scored pairs"),
])
def test_malformed_sts_lines_name_the_line(tmp_path, text, message):
  with pytest.raises(DataError, match=message):
    sts.read_sts(_write(tmp_path, "bad.tsv", text))


def test_split_on_a_file_without_split_column_is_refused(tmp_path):
  with pytest.raises(DataError, match=r"plain\.tsv:1: split='dev' was requested"):
    sts.read_sts(_write(tmp_path, "plain.tsv", "a\tb\t1\n"), "dev")


def test_pairs_and_sentences_files(tmp_path):
  d = sts.read_pairs(_write(tmp_path, "pairs.tsv", "a b\tc d\nx\ty\t4.5\n"))
  assert d.s1 == ["a b", "x"] and math.isnan(d.scores[0]) and d.scores[1] == 4.5
  with pytest.raises(DataError, match=r"p2\.tsv:2: expected `sentence1 TAB sentence2"):
    sts.read_pairs(_write(tmp_path, "p2.tsv", "a\tb\nlonely\n"))
  assert sts.read_sentences(_write(tmp_path, "s.txt", "one\n\n two \n")) == ["one", "two"]
  with pytest.raises(DataError, match="does not exist"):
    sts.read_sts(str(tmp_path / "missing.tsv"))


def test_synthetic_sets_are_deterministic_and_graded():
  a, b = sts.synthetic_sts(200, seed=3), sts.synthetic_sts(200, seed=3)
  assert a.s1 == b.s1 and a.s2 == b.s2
  assert set(a.scores) == {0.0, 1.25, 2.5, 3.75, 5.0}
  pairs = sts.synthetic_pairs(50, seed=0)
  assert len(pairs) == 50 and (pairs.scores == 5).all()
  assert sum(x != y for x, y in zip(pairs.s1, pairs.s2)) > 40  # paraphrases, not copies


def test_encodings():
  tok = CharTokenizer.train(["abcd"])
  ids = sts.encode_sentences(tok, ["ab", "abcdabcd"], 6)
  assert ids[0].tolist() == [CLS] + tok.encode("ab") + [SEP, PAD, PAD]
  assert ids[1].tolist() == [CLS] + tok.encode("abcd") + [SEP]  # truncated, [SEP] kept
  tokens, seg = sts.encode_seq2seq(tok, ["ab"], ["cd"], 9)
  assert tokens[0].tolist() == [CLS] + tok.encode("ab") + [SEP] + tok.encode("cd") + [SEP, PAD, PAD]
  assert seg[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0]


def test_batches_are_a_function_of_step_without_repeats():
  arrays = {"tokens": np.arange(10)[:, None]}
  b = sts.ExampleBatches(arrays, 4, seed=0)
  assert b.per_epoch == 2
  first = [b.batch(s)["tokens"][:, 0].tolist() for s in range(4)]
  assert first == [sts.ExampleBatches(arrays, 4, seed=0).batch(s)["tokens"][:, 0].tolist()
                   for s in range(4)]
  assert all(len(set(x)) == 4 for x in first)
  assert not set(first[0]) & set(first[1])  # one epoch: disjoint batches
  with pytest.raises(DataError, match="fewer than one batch"):
    sts.ExampleBatches(arrays, 16, seed=0)


def np_whitening(x, k):
  """mu and W = U S^-1/2 from numpy's eigh of the covariance, the k largest eigenvalues first."""
  x = np.asarray(x, np.float64)
  mu = x.mean(axis=0)
  eigenvalues, eigenvectors = np.linalg.eigh(np.cov(x, rowvar=False))  # ascending
  order = np.argsort(eigenvalues)[::-1][:k]
  return mu, eigenvectors[:, order] / np.sqrt(eigenvalues[order])


def _same_up_to_column_signs(got, want):
  signs = np.sign(np.sum(got * want, axis=0))
  np.testing.assert_allclose(got * signs, want, rtol=1e-7, atol=1e-10)


def test_whitening_gives_zero_mean_identity_covariance():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6)) + 3.0
  mu, w = whitening.fit(x)
  y = whitening.transform(x, mu, w)
  np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12)
  np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-10)
  np.testing.assert_allclose(np.cov(y, rowvar=False), np.eye(6), atol=1e-6)


def test_whitening_keeps_the_largest_variance_directions_by_hand():
  # columns with standard deviations 1, 4, 0.5, 2 and exactly zero sample correlation: the
  # covariance is diag(1, 16, 0.25, 4), so k=2 keeps column 1 (scaled 1/4) and column 3 (1/2)
  z = np.random.default_rng(1).normal(size=(40, 4))
  q, _ = np.linalg.qr(z - z.mean(axis=0))  # orthonormal columns in the span of centred ones
  x = q * np.array([1.0, 4.0, 0.5, 2.0]) * np.sqrt(39) + 7.0
  mu, w = whitening.fit(x, 2)
  want = np.array([[0, 0], [0.25, 0], [0, 0], [0, 0.5]])
  _same_up_to_column_signs(w, want)
  np.testing.assert_allclose(mu, 7.0, rtol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_whitening_is_u_s_minus_half_of_numpys_eigh(k):
  rng = np.random.default_rng(k)
  x = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) - 2.0
  mu, w = whitening.fit(x, k)
  want_mu, want_w = np_whitening(x, k)
  assert w.shape == (6, k)
  np.testing.assert_allclose(mu, want_mu, rtol=1e-12)
  _same_up_to_column_signs(w, want_w)
  # each kept direction has unit variance: its eigenvalue was divided out
  np.testing.assert_allclose(np.var(whitening.transform(x, mu, w), axis=0, ddof=1), 1.0,
                             rtol=1e-6)


def test_sts_spearman_of_cosines():
  vectors = {"a": [1, 0, 0], "b": [0, 1, 0], "c": [1, 1, 0], "d": [0, 0, 1]}
  embed = lambda sentences: np.array([vectors[s] for s in sentences], float)
  # cosines: a-a 1, a-c 0.71, b-d 0, c-d 0 -> ranks 4, 3, 1.5, 1.5
  data = sts.StsData(["a", "a", "b", "c"], ["a", "c", "d", "d"], np.array([5.0, 3.0, 1.0, 0.0]))
  assert sts_spearman(embed, data) == pytest.approx(scipy.stats.spearmanr(
      [1.0, 2 ** -0.5, 0.0, 0.0], data.scores)[0])


def test_sts_spearman_with_whitening_equals_numpy_and_scipy():
  rng = np.random.default_rng(5)
  table = {f"s{i}": v for i, v in enumerate(rng.normal(size=(16, 5)) @ rng.normal(size=(5, 5)))}
  embed = lambda sentences: np.array([table[s] for s in sentences])
  s1, s2 = [f"s{i}" for i in range(10)], [f"s{(3 * i + 1) % 16}" for i in range(10)]
  data = sts.StsData(s1, s2, rng.uniform(0, 5, 10))
  # fitted on the 20 evaluation embeddings, k = 2, cosines written out
  e1, e2 = embed(s1), embed(s2)
  mu, w = np_whitening(np.concatenate([e1, e2]), 2)
  y1, y2 = (e1 - mu) @ w, (e2 - mu) @ w
  cos = np.sum(y1 * y2, 1) / np.linalg.norm(y1, axis=1) / np.linalg.norm(y2, axis=1)
  want = scipy.stats.spearmanr(cos, data.scores)[0]
  assert sts_spearman(embed, data, whitening_k=2) == pytest.approx(want, abs=1e-12)
  # the whitening changes the answer on this data (so the comparison above says something)
  raw = np.sum(e1 * e2, 1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
  assert abs(scipy.stats.spearmanr(raw, data.scores)[0] - want) > 0.1
