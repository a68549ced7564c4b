#!/usr/bin/env bash
# Makes the sparse libsvm data of the logistic and FM examples from Fashion-MNIST: "is it a shirt?"
# (class 6 against the nine others), zero pixels left out. Usage: examples/make-shirts-data.sh [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")"
TESSERA="${1:-../build}/tessera"
D=/usr/share/datasets/fashion-mnist
mkdir -p data
"$TESSERA" convert "$D/train-images-idx3-ubyte.gz" "$D/train-labels-idx1-ubyte.gz" data/shirts-train.libsvm --positive_class=6
"$TESSERA" convert "$D/t10k-images-idx3-ubyte.gz" "$D/t10k-labels-idx1-ubyte.gz" data/shirts-test.libsvm --positive_class=6
