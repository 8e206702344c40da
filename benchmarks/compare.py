"""Side-by-side comparison: fastbp vs NumPy/BLAS, PyTorch CPU and scikit-learn.

    python benchmarks/compare.py [--quick]      (the same as: fastbp bench)
"""
import sys

from fastbp.bench import main

if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv[1:]))
