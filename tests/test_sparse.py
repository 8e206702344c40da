"""Sparse X (SciPy CSR, CSC, COO; int32 or int64 indices): never densified, and the same
numbers as the dense path (the sparse first layer sums the stored entries in the order the
GEMM sums a dense row, whose zeros add nothing)."""
import tracemalloc
import warnings

import numba
import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

import fastbp
from conftest import DTYPES, LOSSES, rel_err
from test_gradients import make_problem


def sparse_data(n, d, density, rng, dtype=np.float64):
    X = sp.random(n, d, density=density, format="csr", random_state=np.random.RandomState(
        int(rng.integers(1 << 30))), dtype=np.float64)
    X.data = (X.data * 4 - 2).astype(dtype)
    X.data[X.indptr[3]:X.indptr[4]] = 0        # a row of explicit zeros
    return X


@pytest.mark.parametrize("loss, activation", [(loss, "tanh") for loss in LOSSES]
                         + [("cross_entropy", a) for a in ("relu", "leaky_relu", "gelu")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_equals_dense_bit_for_bit(loss, activation, dtype):
    rng = np.random.default_rng(LOSSES.index(loss))
    sizes = [300, 24, 5]
    Xs = sparse_data(97, 300, 0.05, rng, dtype)
    Xd = Xs.toarray()
    _, y = make_problem(loss, sizes, 97, dtype, rng)
    a = fastbp.MLP(sizes, activation=activation, loss=loss, dtype=dtype, seed=1)
    b = a.copy()
    w = rng.uniform(0, 2, 97)
    assert a.loss_and_grad(Xd, y, l2=0.01, sample_weight=w) == \
        b.loss_and_grad(Xs, y, l2=0.01, sample_weight=w)
    assert np.array_equal(a.grads, b.grads)
    assert np.array_equal(a.forward(Xd), b.forward(Xs))
    if loss in ("cross_entropy", "binary_cross_entropy"):
        assert np.array_equal(a.predict_proba(Xd), b.predict_proba(Xs))
    # three epochs, shuffled, with a validation split: the same parameters
    ha = fastbp.fit(a, Xd, y, optimizer=fastbp.Adam(a, 1e-2), epochs=3, batch_size=16,
                    seed=0, verbose=0, validation_split=0.2)
    hb = fastbp.fit(b, Xs, y, optimizer=fastbp.Adam(b, 1e-2), epochs=3, batch_size=16,
                    seed=0, verbose=0, validation_split=0.2)
    assert rel_err(b.params, a.params) <= (1e-9 if dtype == np.float64 else 1e-5)
    assert np.allclose(hb["loss"], ha["loss"], rtol=1e-9 if dtype == np.float64 else 1e-5)
    assert np.array_equal(b.predict(Xs), b.predict(Xd))


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
@pytest.mark.parametrize("index", [np.int32, np.int64])
def test_formats_and_index_dtypes(fmt, index):
    rng = np.random.default_rng(2)
    Xs = sparse_data(40, 60, 0.1, rng).asformat(fmt)
    for name in ("indices", "indptr", "row", "col"):
        if hasattr(Xs, name):
            setattr(Xs, name, getattr(Xs, name).astype(index))
    y = rng.integers(0, 3, 40)
    model = fastbp.MLP([60, 8, 3], dtype=np.float64, seed=0)
    ref = model.copy()
    assert model.loss_and_grad(Xs, y) == ref.loss_and_grad(Xs.toarray(), y)
    assert np.array_equal(model.predict(Xs), ref.predict(Xs.toarray()))


def test_duplicates_explicit_zeros_and_one_layer_networks():
    rng = np.random.default_rng(3)
    rows, cols = np.array([0, 0, 1, 2, 2]), np.array([4, 4, 0, 1, 3])
    vals = np.array([1.0, 2.0, 0.0, -1.5, 0.5])
    Xs = sp.coo_matrix((vals, (rows, cols)), shape=(3, 5))     # (0, 4) twice: summed
    for sizes in ([5, 3], [5, 4, 3]):
        model = fastbp.MLP(sizes, dtype=np.float64, seed=0)
        assert np.array_equal(model.forward(Xs), model.forward(Xs.toarray()))
        assert np.array_equal(model.predict_proba(Xs), model.predict_proba(Xs.toarray()))
    y = rng.integers(0, 3, 3)
    a, b = (fastbp.MLP([5, 3], dtype=np.float64, seed=0) for _ in range(2))
    assert a.loss_and_grad(Xs, y) == b.loss_and_grad(Xs.toarray(), y)
    assert np.array_equal(a.grads, b.grads)


def test_thread_count_does_not_change_the_bits():
    rng = np.random.default_rng(4)
    Xs = sparse_data(200, 500, 0.02, rng, np.float32)
    y = rng.integers(0, 4, 200)
    results = []
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            model = fastbp.MLP([500, 32, 4], seed=0)
            fastbp.fit(model, Xs, y, optimizer=fastbp.Adam(model, 1e-2), epochs=2,
                       batch_size=50, seed=0, verbose=0)
            results.append((model.params.copy(), model.forward(Xs)))
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


def test_bad_sparse_input_is_a_clear_error():
    model = fastbp.MLP([6, 3], seed=0)
    X = sp.csr_matrix(np.eye(4, 6))
    X.data[1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.forward(X)
    with pytest.raises(ValueError, match="has 5 features, but the model expects 6"):
        model.forward(sp.csr_matrix((3, 5)))
    with pytest.raises(ValueError, match="empty"):
        model.forward(sp.csr_matrix((0, 6)))
    with pytest.raises(TypeError, match="real numbers"):
        model.forward(sp.csr_matrix(np.eye(4, 6, dtype=np.complex128)))


def test_sparse_fit_never_densifies():
    """A 2,000 x 200,000 data set (1.6 GB dense in float32) trains in memory that grows with
    the first layer's weights, not with rows x features (NumPy allocations, traced)."""
    rng = np.random.default_rng(5)
    n, d = 2000, 200_000
    cols = np.sort(rng.choice(d, size=(n, 40)), axis=1).ravel()
    Xs = sp.csr_matrix((rng.random(n * 40).astype(np.float32), cols,
                        np.arange(0, n * 40 + 1, 40)), shape=(n, d))
    y = rng.integers(0, 3, n)
    model = fastbp.MLP([d, 8, 3], seed=0)
    opt = fastbp.Adam(model, 1e-3)
    # compiled before tracing (tracemalloc slows Numba's compiler down a lot)
    fastbp.fit(model, Xs[:256], y[:256], optimizer=opt, epochs=1, batch_size=128, verbose=0)
    model.predict(Xs[:10])
    tracemalloc.start()
    fastbp.fit(model, Xs, y, optimizer=opt, epochs=1, batch_size=128, seed=0, verbose=0)
    model.predict(Xs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    weights = model.params.nbytes
    assert peak < 4 * weights + (16 << 20), (peak, weights)


def test_estimators_on_sparse_text_features():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    docs = ["the cat sat", "the dog ran", "a cat and a dog", "dogs run fast", "cats sit still",
            "a fast cat", "the dog sat", "still dogs"] * 10
    y = np.array(["cat", "dog", "both", "dog", "cat", "cat", "dog", "dog"] * 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipe = make_pipeline(TfidfVectorizer(), fastbp.MLPClassifier(
            (16,), max_iter=100, learning_rate_init=0.01, random_state=0))
        pipe.fit(docs, y)
        assert pipe.score(docs, y) >= 0.9
        X = TfidfVectorizer().fit_transform(docs)
        clf = fastbp.MLPClassifier((16,), max_iter=5, random_state=0, dtype="float64")
        dense = fastbp.MLPClassifier((16,), max_iter=5, random_state=0, dtype="float64")
        clf.fit(X, y, sample_weight=np.linspace(0.5, 1.5, len(y)))
        dense.fit(X.toarray(), y, sample_weight=np.linspace(0.5, 1.5, len(y)))
        assert rel_err(clf.coefs_[0], dense.coefs_[0]) <= 1e-9
        assert np.array_equal(clf.predict_proba(X), dense.predict_proba(X.toarray()))
        reg = fastbp.MLPRegressor((8,), max_iter=5, random_state=0)
        reg.fit(X.tocsc(), X[:, 0].toarray().ravel())
        # the early-stopping split of a sparse X, and of the same rows dense
        es = [fastbp.MLPClassifier((8,), max_iter=4, random_state=0, early_stopping=True,
                                   n_iter_no_change=50, dtype="float64").fit(data, y)
              for data in (X, X.toarray())]
        assert es[0].validation_scores_ == es[1].validation_scores_
        assert np.array_equal(es[0].coefs_[0], es[1].coefs_[0])
        assert reg.predict(X).shape == (len(docs),)
