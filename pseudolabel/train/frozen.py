"""``train: frozen``: a pretrained encoder embeds every image once; a light scikit-learn head learns on the labels.

The encoder is the pretrained network up to its last linear layer, in eval mode. Its (N, D) embeddings
are kept on disk (``embeddings/`` in the pool cache), keyed by the weights' file, the input size and
the images' bytes, so a second run, and the label check and the EDA of the same run, embed nothing
again. The head is scikit-learn's ``LogisticRegression`` on standardised embeddings (``head: logreg``,
C = ``head_c``) or a distance-weighted cosine k-NN (``head: knn``). Probabilities are (N, K) like every
seed model's, so the vote, the gate, the label check and the report need nothing else.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np
import torch.nn as nn

SMALL = 4096  # arrays up to this many images are looked up row by row (seed sets); larger ones as a whole


def content_key(images: np.ndarray, salt: str, chunk: int = 8192) -> str:
    """Hex key of an (N, C, H, W) uint8 array's bytes and shape, with ``salt`` (the encoder's identity)."""
    h = hashlib.blake2b(f"{salt}|{images.shape}".encode(), digest_size=20)
    for i in range(0, len(images), chunk):
        h.update(np.ascontiguousarray(images[i : i + chunk]).tobytes())
    return h.hexdigest()


def row_digests(images: np.ndarray) -> list[bytes]:
    """One 16-byte digest per image (row) of an (N, C, H, W) uint8 array."""
    return [hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest() for row in images]


class Encoder:
    """A frozen network as a function (N, C, H, W) uint8 -> (N, D) float32 embeddings, remembered in
    memory row by row and on disk per array. ``calls`` counts the images the network actually ran on."""

    def __init__(self, module: nn.Module, identity: str, cache: Path | None = None, progress: bool = False,
                 name: str = "encoder"):
        self.module, self.identity, self.cache, self.progress, self.name = module, identity, cache, progress, name
        self.calls = 0
        self._rows: dict[bytes, tuple[int, int]] = {}  # row digest -> (block, row)
        self._blocks: list[np.ndarray] = []

    def _run(self, images: np.ndarray) -> np.ndarray:
        from pseudolabel.train.probe import embed

        self.calls += len(images)
        return embed(self.module, images, progress=self.progress and len(images) > 256,
                     desc=f"embedding with {self.name}").numpy()  # fmt: skip

    def _remember(self, images: np.ndarray, emb: np.ndarray) -> None:
        self._blocks.append(emb)
        b = len(self._blocks) - 1
        for i, d in enumerate(row_digests(images)):
            self._rows.setdefault(d, (b, i))

    def _from_disk(self, images: np.ndarray) -> np.ndarray:
        key = content_key(images, self.identity)
        path = self.cache / f"{key}.npy" if self.cache is not None else None
        if path is not None and path.is_file():
            try:
                emb = np.load(path)
                if len(emb) == len(images):
                    return emb
            except (OSError, ValueError):
                pass
        emb = self._run(images)
        if path is not None:
            from pseudolabel.core.home import clean_stale

            path.parent.mkdir(parents=True, exist_ok=True)
            clean_stale(path.parent)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as f:
                    np.save(f, emb)
                os.replace(tmp, path)
            except OSError:  # a full disk: the cache is only a cache
                tmp.unlink(missing_ok=True)
        return emb

    def __call__(self, images: np.ndarray) -> np.ndarray:
        digests = row_digests(images)
        missing = [i for i, d in enumerate(digests) if d not in self._rows]
        if missing and len(images) > SMALL:  # a pool: embedded whole, or read back from the disk cache
            emb = self._from_disk(images)
            self._remember(images, emb)
            return emb
        if missing:
            self._remember(np.asarray(images[np.array(missing)]), self._run(np.asarray(images[np.array(missing)])))
        return np.stack([self._blocks[b][i] for b, i in (self._rows[d] for d in digests)]) if len(images) else \
            np.zeros((0, 0), np.float32)


def make_head(kind: str, c: float = 1.0, k: int = 10, n_train: int | None = None):
    """The scikit-learn head: ``logreg`` (StandardScaler then LogisticRegression(C=c)) or ``knn`` (L2-normalised
    embeddings, k distance-weighted neighbours: cosine)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    if kind == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    if kind == "knn":
        return make_pipeline(Normalizer(), KNeighborsClassifier(n_neighbors=max(1, min(k, n_train or k)),
                                                                weights="distance"))
    raise ValueError(f"head must be logreg or knn, got {kind!r}")


def head_probs(head, h: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, D) embeddings -> (N, K) probabilities: a class the head never saw gets 0."""
    out = np.zeros((len(h), num_classes))
    if len(h):
        out[:, head.classes_] = head.predict_proba(h)
    return out


def out_of_fold(h: np.ndarray, y: np.ndarray, make, num_classes: int, folds: int, seed: int) -> np.ndarray:
    """(N, K) probabilities for (N, D) embeddings ``h`` with labels ``y``, each row from a head (``make()``)
    that did not train on it: stratified folds, at most as many as the rarest class has labels."""
    from pseudolabel.train.common import stratified_folds

    k = max(2, min(folds, int(np.bincount(y).min()) if len(y) else 2))
    fold = stratified_folds(y, k, seed)
    probs = np.zeros((len(y), num_classes))
    for f in range(k):
        test = fold == f
        if test.any() and (~test).any():
            probs[test] = head_probs(make().fit(h[~test], y[~test]), h[test], num_classes)
    return probs


class FrozenSeed:
    """A seed model with ``train: frozen``: its encoder never changes; only the head learns."""

    def __init__(self, name: str, module: nn.Module, tc, seed: int, progress: bool = True, cache: Path | None = None):
        from pseudolabel.config.values import input_px
        from pseudolabel.models.backbones import weights_for
        from pseudolabel.models.layers import last_linear

        self.name, self.module, self.tc, self.seed = name, module, tc, seed
        self.num_classes = last_linear(module).out_features
        w = weights_for(name, tc.pretrained, variant=tc.variant, arch=tc.arch)  # resolved already: remembered
        identity = "|".join([name, w.name, w.sha256, str(input_px(tc.input_size, tc.pretrained)),
                             hashlib.sha1(repr(module).encode()).hexdigest()])  # fmt: skip
        self.encoder = Encoder(module, identity, cache, progress, name)
        self.head = None
        self.val_probs: np.ndarray | None = None
        self.history: list[dict] = []
        self.fit_seconds = 0.0

    def _make(self, n_train: int | None = None):
        return make_head(self.tc.head, self.tc.head_c, self.tc.knn_k, n_train)

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
            x_unlabeled: np.ndarray | None = None) -> None:
        """x_*: (N, C, H, W) uint8; y_*: (N,) class indices. The pool (``x_unlabeled``) is embedded first,
        once, so that the labeled images among it are not embedded again."""
        t = time.perf_counter()
        if x_unlabeled is not None and len(x_unlabeled):
            self.encoder(x_unlabeled)
        self.head = self._make(len(y_train)).fit(self.encoder(x_train), np.asarray(y_train))
        row = {"epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"), "val_acc": float("nan")}
        if len(y_val):
            p = head_probs(self.head, self.encoder(x_val), self.num_classes)
            self.val_probs = p  # (n_val, K) before the head saw them: what the report's val accuracy reads
            row.update(val_acc=float((p.argmax(1) == y_val).mean()),
                       val_loss=float(-np.log(np.clip(p[np.arange(len(y_val)), y_val], 1e-12, 1)).mean()))
            # measured: now the head learns from every seed label (a frozen model is judged out of fold over
            # all of them anyway; 250 labels instead of 200 on CIFAR-10)
            x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([np.asarray(y_train), np.asarray(y_val)])
            self.head = self._make(len(y_all)).fit(self.encoder(x_all), y_all)
        self.history, self.fit_seconds = [row], time.perf_counter() - t

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, K) probabilities."""
        return head_probs(self.head, self.encoder(images), self.num_classes)

    def embed(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 -> (N, D) embeddings (cached)."""
        return self.encoder(images)

    def oof_probs(self, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
        """(N, K) out-of-fold probabilities of this model's head kind on (x, y): the gate's evidence."""
        y = np.asarray(y)
        return out_of_fold(self.encoder(x), y, lambda: self._make(len(y)), self.num_classes, folds, seed)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.module.parameters())


def fit_frozen_final(module: nn.Module, data, num_classes: int, c: float, seed: int, progress: bool = True):
    """``retrain.train: frozen``: embed the merged set with the frozen pretrained ``module``, fit a weighted
    logistic regression (standardised embeddings, C = ``c``), measure it on the validation labels, fit it again
    with them (a frozen encoder has nothing else to learn from them) and fold it into the module's last linear
    layer, so the exported network gives exactly the regression's probabilities. Returns a FitResult."""
    import torch

    from pseudolabel.models.layers import last_linear
    from pseudolabel.train.fixmatch import FitResult
    from pseudolabel.train.probe import embed

    t = time.perf_counter()
    for p in module.parameters():
        p.requires_grad_(False)
    h = embed(module, data.x_lb, progress=progress, desc="embedding the labeled set").numpy().astype(np.float64)
    head = make_head("logreg", c).fit(h, data.y_lb, logisticregression__sample_weight=data.w_lb)
    hv = embed(module, data.x_val).numpy().astype(np.float64)
    p = head_probs(head, hv, num_classes)  # measured on the validation labels first, then they train too
    if len(data.y_val):
        head = make_head("logreg", c).fit(np.concatenate([h, hv]), np.concatenate([data.y_lb, data.y_val]),
                                          logisticregression__sample_weight=np.concatenate(
                                              [data.w_lb, np.ones(len(data.y_val))]))  # fmt: skip
    scaler, lr = head[0], head[-1]
    coef, bias = lr.coef_ / scaler.scale_, lr.intercept_ - (lr.coef_ / scaler.scale_) @ scaler.mean_
    weight, b = np.zeros((num_classes, h.shape[1])), np.full(num_classes, -30.0)  # an unseen class: ~0
    if len(lr.classes_) == 2:  # sklearn's binary regression is one logit z: softmax([0, z]) = sigmoid(z)
        weight[lr.classes_[1]], b[lr.classes_[1]], b[lr.classes_[0]] = coef[0], bias[0], 0.0
    else:
        weight[lr.classes_], b[lr.classes_] = coef, bias
    layer = last_linear(module)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight, dtype=layer.weight.dtype))
        layer.bias.copy_(torch.as_tensor(b, dtype=layer.bias.dtype))
    res = FitResult(val_probs=p)
    res.history = [{"epoch": 0, "train_loss": float("nan"), "val_acc": float((p.argmax(1) == data.y_val).mean()),
                    "val_loss": float(-np.log(np.clip(p[np.arange(len(p)), data.y_val], 1e-12, 1)).mean())}]
    res.best_epoch, res.seconds = 0, time.perf_counter() - t
    res.best_val_loss = res.history[0]["val_loss"]
    return res
