"""A Hoeffding tree classifier in plain Python, one step at a time, nodes as objects: the
oracle for ``service.engine.hoeffding`` (written from its docstring and Domingos & Hulten 2000;
no arrays, no node budget beyond a count)."""
import math


class _Gaussian:
    """Welford's count, mean and M2 of one feature for one class, with its min and max."""

    def __init__(self):
        self.n, self.mean, self.m2, self.lo, self.hi = 0, 0.0, 0.0, math.inf, -math.inf

    def add(self, v):
        self.n += 1
        d = v - self.mean
        self.mean += d / self.n
        self.m2 += d * (v - self.mean)
        self.lo, self.hi = min(self.lo, v), max(self.hi, v)

    def var(self):
        return self.m2 / max(self.n - 1, 1)

    def below(self, t):
        """The count expected at or below t."""
        if t < self.lo:
            return 0.0
        if t >= self.hi:
            return float(self.n)
        sd = math.sqrt(self.var())
        z = (t - self.mean) / (sd if sd > 0 else 1.0)
        return self.n * 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


class _Leaf:
    def __init__(self, counts, n_features):
        self.counts = list(counts)
        self.gauss = [[_Gaussian() for _ in range(n_features)] for _ in counts]
        self.last_attempt = sum(counts)
        self.mc_correct = self.nb_correct = 0


class _Split:
    def __init__(self, feature, threshold, left, right):
        self.feature, self.threshold, self.left, self.right = feature, threshold, left, right


def _entropy(counts):
    total = sum(counts)
    return -sum(c / total * math.log2(c / total) for c in counts if c > 0) if total > 0 else 0.0


class HoeffdingTreeReference:
    def __init__(self, num_features, num_classes, max_nodes, grace, delta, tau, n_splits,
                 min_branch, max_share, alpha, var_eps):
        self.I, self.C, self.max_nodes = num_features, num_classes, max_nodes
        self.grace, self.delta, self.tau, self.n_splits = grace, delta, tau, n_splits
        self.min_branch, self.max_share = min_branch, max_share
        self.alpha, self.var_eps = alpha, var_eps
        self.root, self.nodes = _Leaf([0.0] * num_classes, num_features), 1

    def _find(self, x):
        parent, node = None, self.root
        while isinstance(node, _Split):
            parent, node = node, node.left if x[node.feature] <= node.threshold else node.right
        return parent, node

    def _naive_bayes(self, leaf, x):
        """Log scores per class, or None when no class has an estimator."""
        total = sum(leaf.counts)
        scores = []
        for c in range(self.C):
            g = leaf.gauss[c]
            if g[0].n == 0 or leaf.counts[c] == 0:
                scores.append(-math.inf)
                continue
            s = math.log(leaf.counts[c] / total)
            for i in range(self.I):
                var = max(g[i].var(), self.var_eps * (1.0 + g[i].mean ** 2))
                s += -0.5 * ((x[i] - g[i].mean) ** 2 / var + math.log(2 * math.pi * var))
            scores.append(s)
        return None if all(s == -math.inf for s in scores) else scores

    def predict(self, x):
        """Class probabilities, or None while the leaf reached has seen nothing."""
        _, leaf = self._find(x)
        total = sum(leaf.counts)
        if total == 0:
            return None
        nb = self._naive_bayes(leaf, x)
        if nb is not None and leaf.nb_correct >= leaf.mc_correct:
            top = max(nb)
            e = [math.exp(s - top) for s in nb]
            p = [v / sum(e) for v in e]
        else:
            p = [c / total for c in leaf.counts]
        return [(total * v + self.alpha) / (total + self.alpha * self.C) for v in p]

    def learn(self, x, c):
        parent, leaf = self._find(x)
        if sum(leaf.counts) > 0:
            leaf.mc_correct += max(range(self.C), key=lambda k: (leaf.counts[k], -k)) == c
            nb = self._naive_bayes(leaf, x)
            if nb is not None:
                leaf.nb_correct += max(range(self.C), key=lambda k: (nb[k], -k)) == c
        leaf.counts[c] += 1
        for i in range(self.I):
            leaf.gauss[c][i].add(x[i])
        total = sum(leaf.counts)
        if total - leaf.last_attempt >= self.grace:
            leaf.last_attempt = total
            split = self._try_split(leaf)
            if split is not None:
                if parent is None:
                    self.root = split
                elif parent.left is leaf:
                    parent.left = split
                else:
                    parent.right = split
                self.nodes += 2

    def _try_split(self, leaf):
        counts = leaf.counts
        total = sum(counts)
        classes = sum(1 for v in counts if v > 0)
        if classes < 2 or max(counts) >= self.max_share * total or self.nodes + 2 > self.max_nodes:
            return None
        pre = _entropy(counts)
        best_per_feature = []
        for i in range(self.I):
            gs = [leaf.gauss[c][i] for c in range(self.C)]
            lo = min(g.lo for g in gs if g.n)
            hi = max(g.hi for g in gs if g.n)
            if not lo < hi:
                continue
            best = None
            for j in range(self.n_splits):
                t = lo + (hi - lo) / (self.n_splits + 1) * (j + 1)
                left = [g.below(t) if g.n else 0.0 for g in gs]
                right = [g.n - v if g.n else 0.0 for g, v in zip(gs, left)]
                a, b = sum(left), sum(right)
                if a > self.min_branch * (a + b) and b > self.min_branch * (a + b):
                    merit = pre - (a * _entropy(left) + b * _entropy(right)) / (a + b)
                    if best is None or merit > best[0]:
                        best = (merit, i, t, left, right)
            if best is not None:
                best_per_feature.append(best)
        if not best_per_feature:
            return None
        best_per_feature.sort(key=lambda b: -b[0])
        merit, feature, threshold, left, right = best_per_feature[0]
        second = max(best_per_feature[1][0] if len(best_per_feature) > 1 else 0.0, 0.0)
        r = math.log2(max(classes, 2))
        bound = math.sqrt(r * r * math.log(1 / self.delta) / (2 * total))
        if merit <= 0 or not (merit - second > bound or bound < self.tau):
            return None
        return _Split(feature, threshold, _Leaf(left, self.I), _Leaf(right, self.I))

    def splits(self):
        """(feature, threshold) of the inner nodes, depth first, left before right."""
        out, todo = [], [self.root]
        while todo:
            node = todo.pop()
            if isinstance(node, _Split):
                out.append((node.feature, node.threshold))
                todo += [node.right, node.left]
        return out
