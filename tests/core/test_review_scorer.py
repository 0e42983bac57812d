import numpy as np
import pytest

from napari_connectome.core.review_candidates import Candidate
from napari_connectome.core.review_scorer import ReviewScorer


def make(rng, n, kind="merge", informative=0, prior=0.5):
    """Candidates whose feature ``informative`` decides whether they are wrong."""
    out, labels = [], []
    for i in range(n):
        x = rng.normal(size=6)
        x[-1] = np.log(prior / (1 - prior))
        out.append(Candidate(f"{kind}{i}", kind, (i,), (0, 0), (), (), x, prior, 1.0))
        labels.append(x[informative] > 0.5)
    return out, np.array(labels)


def auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean())


def test_learns_which_feature_marks_errors():
    rng = np.random.default_rng(0)
    train, y = make(rng, 200)
    test, y_test = make(rng, 500)
    scorer = ReviewScorer().fit(train, y)
    p = scorer.predict(test)
    assert scorer.fitted_kinds == ["merge"]
    assert auc(p, y_test) > 0.9
    assert np.all((p > 0) & (p < 1))


def test_keeps_the_prior_until_it_has_enough_answers_of_both_kinds():
    rng = np.random.default_rng(1)
    train, y = make(rng, 40, prior=0.2)
    y[:] = False  # only rejections: nothing to learn from
    queue, _ = make(rng, 10, kind="split", prior=0.7)
    scorer = ReviewScorer().fit(train, y)
    assert scorer.fitted_kinds == []
    assert np.allclose(scorer.predict(train + queue), [0.2] * 40 + [0.7] * 10)


def test_one_kind_learned_the_other_keeps_its_prior():
    rng = np.random.default_rng(2)
    merges, y = make(rng, 100, kind="merge")
    splits, _ = make(rng, 5, kind="split", prior=0.3)
    scorer = ReviewScorer().fit(merges + splits, np.concatenate([y, [True] * 5]))
    assert scorer.fitted_kinds == ["merge"]
    assert np.allclose(scorer.predict(splits), 0.3)


def test_bad_labels_are_refused():
    rng = np.random.default_rng(3)
    train, y = make(rng, 10)
    with pytest.raises(ValueError, match="labels"):
        ReviewScorer().fit(train, y[:5])


def test_ranks_ten_thousand_candidates():
    # behaviour only: all candidates get a probability, ordered by the learned feature
    rng = np.random.default_rng(4)
    train, y = make(rng, 300)
    many, y_many = make(rng, 10_000)
    p = ReviewScorer().fit(train, y).predict(many)
    assert p.shape == (10_000,)
    order = np.argsort(-p)
    assert y_many[order[:1000]].mean() > 2 * y_many.mean()
