"""The running median by P^2 (Jain & Chlamtac 1985, "The P^2 algorithm for dynamic calculation
of quantiles and histograms without storing observations"), one stream, one output, one step
at a time, in plain Python floats and the paper's 1-based marker numbers: the oracle for
``service.engine.median``. Before the fifth observation the estimate is the exact median of
what was seen (None with nothing); from the fifth on it is the middle marker's height."""


class MedianReference:
    def __init__(self, p=0.5):
        self.p = p
        self.seen = []  # the first five observations
        self.q = self.n = self.n_want = self.dn = None

    def estimate(self):
        if self.q is not None:
            return self.q[3]
        if not self.seen:
            return None
        s = sorted(self.seen)
        m = len(s)
        return s[m // 2] if m % 2 else (s[m // 2 - 1] + s[m // 2]) / 2

    def stands(self):
        """Whether the estimate is P^2's (five observations or more)."""
        return self.q is not None

    def observe(self, x):
        if self.q is None:
            self.seen.append(x)
            if len(self.seen) == 5:  # A. initialisation
                p = self.p
                self.q = [None] + sorted(self.seen)
                self.n = [None, 1, 2, 3, 4, 5]
                self.n_want = [None, 1, 1 + 2 * p, 1 + 4 * p, 3 + 2 * p, 5]
                self.dn = [None, 0, p / 2, p, (1 + p) / 2, 1]
            return
        q, n = self.q, self.n
        # B1. find the cell k with q_k <= x < q_{k+1}, moving an extreme that x passes
        if x < q[1]:
            q[1] = x
            k = 1
        elif x < q[2]:
            k = 1
        elif x < q[3]:
            k = 2
        elif x < q[4]:
            k = 3
        elif x <= q[5]:
            k = 4
        else:
            q[5] = x
            k = 4
        # B2. the markers above the cell move up one position; the desired positions move on
        for i in range(k + 1, 6):
            n[i] += 1
        for i in range(1, 6):
            self.n_want[i] += self.dn[i]
        # B3. a middle marker off its desired position by one or more moves one position
        for i in (2, 3, 4):
            d = self.n_want[i] - n[i]
            if (d >= 1 and n[i + 1] - n[i] > 1) or (d <= -1 and n[i - 1] - n[i] < -1):
                d = 1 if d >= 0 else -1
                qp = q[i] + d / (n[i + 1] - n[i - 1]) * (
                    (n[i] - n[i - 1] + d) * (q[i + 1] - q[i]) / (n[i + 1] - n[i])
                    + (n[i + 1] - n[i] - d) * (q[i] - q[i - 1]) / (n[i] - n[i - 1]))
                if q[i - 1] < qp < q[i + 1]:
                    q[i] = qp
                else:  # the linear formula
                    q[i] = q[i] + d * (q[i + d] - q[i]) / (n[i + d] - n[i])
                n[i] += d
