"""Child process for the bad-input battery: runs one case and reports how it failed.

    python bad_input_child.py CASE

Exit 0 and print "<ExceptionType>: <message>" when the case raised ValueError/TypeError;
exit 3 when it raised nothing, 4 for any other exception.  A crash or hang shows up in the
parent as a signal or a timeout.
"""
import sys

SETUP = """
import numpy as np, fastbp
from fastbp import kernels as K
X = np.zeros((6, 4), np.float32); Y = np.array([0, 1, 2, 0, 1, 2])
m = fastbp.MLP([4, 5, 3], seed=0)
"""

CASES = {
    "label_out_of_range": "m.loss_and_grad(X, np.array([0, 1, 2, 3, 1, 2]))",
    "negative_label": "m.loss_and_grad(X, np.array([0, -1, 2, 0, 1, 2]))",
    "float_labels_for_cross_entropy": "m.loss_and_grad(X, Y.astype(float))",
    "wrong_feature_count": "m.loss_and_grad(np.zeros((6, 5), np.float32), Y)",
    "batch_label_length_mismatch": "m.loss_and_grad(X, Y[:5])",
    "one_d_input": "m.loss_and_grad(np.zeros(4, np.float32), Y)",
    "three_d_input": "m.loss_and_grad(np.zeros((6, 4, 1)), Y)",
    "empty_batch": "m.loss_and_grad(np.zeros((0, 4)), Y[:0])",
    "nan_in_input": "m.loss_and_grad(np.full((6, 4), np.nan), Y)",
    "inf_in_input": "m.predict(np.full((2, 4), np.inf))",
    "string_input": "m.loss_and_grad(np.array([['a'] * 4] * 6), Y)",
    "complex_input": "m.forward(np.zeros((2, 4), complex))",
    "ragged_list_input": "m.forward([[1, 2, 3, 4], [1, 2]])",
    "zero_layer_size": "fastbp.MLP([4, 0, 3])",
    "negative_layer_size": "fastbp.MLP([4, -8, 3])",
    "float_layer_size": "fastbp.MLP([4, 2.5, 3])",
    "unknown_activation": "fastbp.MLP([4, 3], activation='no_such_activation')",
    "unknown_loss": "fastbp.MLP([4, 3], loss='hinge')",
    "integer_dtype": "fastbp.MLP([4, 3], dtype=np.int32)",
    "column_vector_labels": "m.loss_and_grad(X, Y.reshape(6, 1))",
    "bce_target_outside_unit_interval":
        "fastbp.MLP([4, 2], loss='binary_cross_entropy').loss_and_grad(X, np.full((6, 2), 2.0))",
    "mse_target_wrong_columns": "fastbp.MLP([4, 2], loss='mse').loss_and_grad(X, np.zeros((6, 3)))",
    "matmul_inner_mismatch": "K.matmul(np.zeros((3, 4)), np.zeros((5, 2)))",
    "matmul_bad_out": "K.matmul(np.zeros((3, 4)), np.zeros((4, 2)), out=np.zeros((2, 2)))",
    "kernel_ce_label_out_of_range": "K.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))",
    "kernel_linear_shape": "K.linear(np.zeros((2, 3)), np.zeros((4, 5)))",
    "sgd_negative_lr": "fastbp.SGD(m, lr=-0.1)",
    "adam_bad_betas": "fastbp.Adam(m, betas=(0.9, 1.5))",
    "fit_zero_batch": "fastbp.fit(m, X, Y, optimizer=fastbp.SGD(m, 0.1), batch_size=0, verbose=0)",
    "fit_validation_split_all":
        "fastbp.fit(m, X, Y, optimizer=fastbp.SGD(m, 0.1), validation_split=1.0, verbose=0)",
    "fit_optimizer_of_other_model":
        "fastbp.fit(m, X, Y, optimizer=fastbp.SGD(fastbp.MLP([4, 3]), 0.1), verbose=0)",
    "fit_unknown_schedule":
        "fastbp.fit(m, X, Y, optimizer=fastbp.SGD(m, 0.1), lr_schedule='warp', verbose=0)",
    "fit_validation_feature_mismatch":
        "fastbp.fit(m, X, Y, optimizer=fastbp.SGD(m, 0.1), validation_data=(np.zeros((2, 5)), Y[:2]), verbose=0)",
    "load_corrupt_file":
        "open('/tmp/fastbp_bad.npz', 'wb').write(b'PK\\x03\\x04 not really'); fastbp.load('/tmp/fastbp_bad.npz')",
    "state_dict_bad_keys": "fastbp.MLP.from_torch_state_dict({'weight': np.zeros((2, 2))})",
    "estimator_nan_input": "fastbp.MLPClassifier(max_iter=2).fit(np.full((6, 4), np.nan), Y)",
    "estimator_predict_before_fit": "fastbp.MLPClassifier().predict(X)",
    "estimator_lbfgs": "fastbp.MLPClassifier(solver='lbfgs').fit(X, Y)",
}

if __name__ == "__main__":
    name = sys.argv[1]
    ns = {}
    exec(SETUP, ns)
    try:
        exec(CASES[name], ns)
    except (ValueError, TypeError) as exc:
        print(f"{type(exc).__name__}: {exc}")
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a failure
        print(f"UNEXPECTED {type(exc).__name__}: {exc}")
        sys.exit(4)
    print("no exception")
    sys.exit(3)
