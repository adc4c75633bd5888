"""Trains the bundled example fraud model and writes it as ONNX.

    python scripts/train_fraud_model.py [--output schemas/examples/models/fraud.onnx]
        [--rows 200000] [--seed 20240701]

The training data is SYNTHETIC: card transactions drawn with numpy from a fixed seed
(no real card data exists anywhere in this project), labelled by a plausible risk rule
with noise. The model is a small gradient-boosted tree ensemble on five float features,
in this column order (the `model.features` of schemas/examples/card_txn.yaml):

    amount    TXN-AMOUNT in currency units (negative for refunds)
    foreign   1.0 when the merchant country is not US, else 0.0
    mcc       ISO 18245 merchant category code, as a number
    ecom      1.0 for e-commerce (CHANNEL 'E'), else 0.0
    cashback  CASHBACK-AMOUNT in currency units

The ONNX graph has ONE float32 input `features` [N, 5] and ONE float32 output
`fraud_score` [N], the probability of the positive (fraud) class: skl2onnx's
`probabilities` [N, 2] with its column 1 gathered out. No ZipMap, no label output, so
any ONNX runtime or model server returns exactly the score. The file is written with
an old IR version and opsets so onnxruntime >= 1.17 (and the servers that bundle it)
can load it. A `fraud.json` beside it carries the metadata and the file's sha256.

scikit-learn, skl2onnx and onnx are dev-only dependencies (the `dev` extra); the
gateway itself only needs onnxruntime to score.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ["amount", "foreign", "mcc", "ecom", "cashback"]
OUTPUT = "fraud_score"
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "schemas" / "examples" / "models" / "fraud.onnx"
# At most opset 17 / ai.onnx.ml 3 (skl2onnx picks the lowest that fits) and IR 8: what
# onnxruntime 1.14+ reads; newer runtimes read it too.
OPSET = 17
ML_OPSET = 3
IR_VERSION = 8

# MCC, weight, median amount, share e-commerce, risk (added to the label's log-odds)
_MCCS: list[tuple[int, float, float, float, float]] = [
    (5411, 16, 60.0, 0.05, -0.6),   # grocery
    (5541, 10, 45.0, 0.00, -0.4),   # fuel
    (5812, 8, 35.0, 0.05, -0.5),    # restaurants
    (5814, 12, 8.0, 0.10, -0.8),    # fast food
    (5912, 6, 24.0, 0.05, -0.5),    # pharmacy
    (5200, 5, 120.0, 0.10, -0.3),   # home supply
    (5942, 10, 38.0, 0.95, 0.0),    # books / marketplace
    (4121, 6, 19.0, 0.90, -0.2),    # taxis / rideshare
    (4899, 4, 15.0, 0.95, -0.6),    # streaming / cable
    (3008, 1, 600.0, 0.80, 0.3),    # airlines
    (3058, 2, 420.0, 0.80, 0.3),
    (3509, 2, 300.0, 0.20, 0.1),    # hotels
    (4722, 2, 280.0, 0.90, 0.4),    # travel agencies
    (5499, 3, 12.0, 0.00, -0.3),    # convenience stores
    (5999, 4, 25.0, 0.70, 0.6),     # miscellaneous retail
    (5944, 1, 900.0, 0.30, 1.4),    # jewellery
    (5732, 3, 350.0, 0.60, 1.0),    # electronics
    (4829, 1, 400.0, 0.50, 1.8),    # money transfer
    (6051, 1, 250.0, 0.60, 2.0),    # quasi-cash, crypto
    (7995, 1, 150.0, 0.90, 1.6),    # gambling
    (5967, 1, 60.0, 0.95, 1.2),     # direct marketing, inbound telemarketing
]


def synthetic_transactions(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 (rows, 5), labels int64 (rows,)), the same for the same seed."""
    rng = np.random.default_rng(seed)
    mcc_table = np.array([m[0] for m in _MCCS], dtype=np.float64)
    weight = np.array([m[1] for m in _MCCS], dtype=np.float64)
    median = np.array([m[2] for m in _MCCS], dtype=np.float64)
    ecom_share = np.array([m[3] for m in _MCCS], dtype=np.float64)
    mcc_risk = np.array([m[4] for m in _MCCS], dtype=np.float64)

    kind = rng.choice(len(_MCCS), size=rows, p=weight / weight.sum())
    ecom = (rng.random(rows) < ecom_share[kind]).astype(np.float64)
    foreign = (rng.random(rows) < np.where(ecom > 0, 0.18, 0.08)).astype(np.float64)
    amount = np.round(median[kind] * rng.lognormal(0.0, 0.9, size=rows), 2)
    refund = rng.random(rows) < 0.03
    amount[refund] *= -1
    # Cashback only at grocery / convenience points of sale, in round sums.
    can_cashback = np.isin(mcc_table[kind], (5411, 5499)) & (ecom == 0)
    cashback = np.where(can_cashback & (rng.random(rows) < 0.15),
                        rng.choice([20.0, 40.0, 50.0, 100.0, 200.0], size=rows), 0.0)

    # The label rule: log-odds of fraud. Large amounts abroad, card-not-present, large
    # cashback and risky merchant categories raise it; refunds lower it. The Bernoulli
    # draw is the noise, plus 0.5% of labels flipped (chargebacks filed wrongly).
    log_amount = np.log1p(np.clip(amount, 0.0, None))
    logit = (
        -5.2
        + 0.45 * np.clip(log_amount - np.log1p(50.0), 0.0, None)
        + 1.3 * foreign
        + 0.9 * ecom
        + 1.1 * foreign * ecom
        + 1.2 * foreign * (amount > 1000)
        + 0.8 * (cashback >= 100)
        + mcc_risk[kind]
        - 2.0 * refund
    )
    fraud = rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))
    flip = rng.random(rows) < 0.005
    labels = (fraud ^ flip).astype(np.int64)
    features = np.column_stack([amount, foreign, mcc_table[kind], ecom, cashback]).astype(np.float32)
    return features, labels


def train(features: np.ndarray, labels: np.ndarray, seed: int) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    model = GradientBoostingClassifier(n_estimators=60, max_depth=3, learning_rate=0.1, subsample=0.8,
                                       random_state=seed)
    return model.fit(features, labels)


def to_onnx(model: Any) -> Any:
    """The fitted classifier as an ONNX ModelProto: features [N, 5] -> fraud_score [N]."""
    import onnx
    from onnx import TensorProto, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    onx = convert_sklearn(
        model,
        initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
        options={id(model): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    graph = onx.graph
    probabilities = next(o for o in graph.output if o.name == "probabilities")
    # Column 1 of the [N, 2] probabilities is P(fraud); a Gather with a scalar index
    # drops the axis, so the output is [N] and not [N, 1].
    graph.initializer.append(helper.make_tensor("positive_class", TensorProto.INT64, [], [1]))
    graph.node.append(helper.make_node("Gather", [probabilities.name, "positive_class"], [OUTPUT],
                                       axis=1, name="fraud_score_gather"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [None]))
    graph.name = "fraud"
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onx.ir_version = IR_VERSION
    onx.producer_name = "legacy-gateway/scripts/train_fraud_model.py"
    onx.doc_string = "Example fraud model trained on synthetic card transactions (not for production use)."
    del onx.metadata_props[:]
    for key, value in {"features": ",".join(FEATURES), "outputs": OUTPUT, "name": "fraud", "version": "1"}.items():
        onx.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
    # The label output of the classifier is no longer a graph output: prune its nodes.
    return _prune(onx)


def _prune(onx: Any) -> Any:
    """Removes nodes whose outputs nothing needs (the classifier's label branch)."""
    graph = onx.graph
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(out in needed for out in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    live_initializers = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(live_initializers)
    return onx


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by ranks (Mann-Whitney U), ties averaged."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    pos = labels == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--rows", type=int, default=200_000, help="synthetic training rows")
    parser.add_argument("--seed", type=int, default=20240701)
    args = parser.parse_args(argv)

    import onnx
    import onnxruntime as ort
    import skl2onnx
    import sklearn

    features, labels = synthetic_transactions(args.rows, args.seed)
    holdout = np.arange(args.rows) % 5 == 0
    model = train(features[~holdout], labels[~holdout], args.seed)
    onx = to_onnx(model)
    onnx.checker.check_model(onx, full_check=True)
    blob = onx.SerializeToString()

    # The ONNX graph must give the classifier's own probabilities.
    session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    onnx_scores = session.run([OUTPUT], {"features": features[holdout]})[0]
    sk_scores = model.predict_proba(features[holdout])[:, 1]
    max_diff = float(np.max(np.abs(onnx_scores - sk_scores)))
    if onnx_scores.shape != (int(holdout.sum()),) or max_diff > 1e-4:
        print(f"train_fraud_model: ONNX output differs from scikit-learn (shape {onnx_scores.shape}, "
              f"max |diff| {max_diff:.2e})", file=sys.stderr)
        return 1

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(blob)
    sha256 = hashlib.sha256(blob).hexdigest()
    metadata = {
        "name": "fraud",
        "version": "1",
        "format": "onnx",
        "file": args.output.name,
        "sha256": sha256,
        "bytes": len(blob),
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, len(FEATURES)], "columns": FEATURES}],
        "outputs": [{"name": OUTPUT, "datatype": "FP32", "shape": [-1], "min": 0.0, "max": 1.0,
                     "description": "probability that the transaction is fraudulent"}],
        "opset": {(o.domain or "ai.onnx"): o.version for o in onx.opset_import},
        "ir_version": IR_VERSION,
        "training": {
            "data": ("synthetic card transactions drawn with numpy (scripts/train_fraud_model.py, "
                     "synthetic_transactions): 21 merchant categories with their own amount scale and "
                     "e-commerce share, 3% refunds, cashback at grocery/convenience POS; label = Bernoulli"
                     "(sigmoid(rule)) where the rule raises risk for large amounts, foreign merchants, "
                     "e-commerce (more so abroad), large cashback and risky MCCs (money transfer, quasi-cash, "
                     "gambling, jewellery, electronics, direct marketing), lowers it for refunds; 0.5% of "
                     "labels flipped. No real card data."),
            "rows": args.rows,
            "holdout_rows": int(holdout.sum()),
            "seed": args.seed,
            "fraud_rate": round(float(labels.mean()), 5),
            "estimator": (f"sklearn.ensemble.GradientBoostingClassifier(n_estimators=60, max_depth=3, "
                          f"learning_rate=0.1, subsample=0.8, random_state={args.seed})"),
            "holdout_auc": round(auc(labels[holdout], onnx_scores), 4),
            "versions": {"scikit-learn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
                         "onnx": onnx.__version__},
            "command": "python scripts/train_fraud_model.py",
        },
        "warning": "Example model for demos and tests only; it knows nothing about real fraud.",
    }
    meta_path = args.output.with_suffix(".json")
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n")
    print(f"wrote {args.output} ({len(blob):,} bytes), holdout AUC {metadata['training']['holdout_auc']}, "
          f"fraud rate {metadata['training']['fraud_rate']:.3%}")
    print(f"wrote {meta_path}")
    print(f"sha256 {sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
