"""fastbp warmup: compiles each asked combination's training and prediction code (what the
first run of a new process would compile) and refuses unknown names in one line."""
import pytest

from fastbp import cli
from fastbp.warmup import SHAPES, combinations, warmup


def test_combinations_are_the_product_of_the_lists():
    assert combinations(("relu", "tanh"), ("float32",), ("mse",), ("sgd", "adam")) == [
        ("relu", "float32", "mse", "sgd"), ("relu", "float32", "mse", "adam"),
        ("tanh", "float32", "mse", "sgd"), ("tanh", "float32", "mse", "adam")]


def test_warmup_trains_and_predicts_each_combination():
    """On the small network only: the wide one's parallel paths would add their compile to
    the suite (fastbp warmup runs both)."""
    lines = []
    done = warmup(combinations(("relu",), ("float32",), ("cross_entropy", "mse")),
                  report=lines.append, shapes=SHAPES[:1])
    assert [c for c, _ in done] == [("relu", "float32", "cross_entropy", "adam"),
                                    ("relu", "float32", "mse", "adam")]
    assert all(s > 0 for _, s in done) and len(lines) == 2 and "mse" in lines[1]


@pytest.mark.parametrize("option, value", [("--activation", "relu,nope"),
                                           ("--dtype", "float16"), ("--loss", ""),
                                           ("--optimizer", "lbfgs")])
def test_warmup_refuses_unknown_names(option, value, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["warmup", option, value])
    assert e.value.code == 2
    assert "expected names from" in capsys.readouterr().err


def test_warmup_takes_the_activation_names_train_takes():
    """Aliases included (swish is silu), as fastbp train's --activation."""
    args = cli.build_parser().parse_args(["warmup", "--activation", "swish,relu"])
    assert args.activation == "swish,relu"
